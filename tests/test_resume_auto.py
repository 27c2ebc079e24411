"""``--timesteps auto`` resumed after a kill at *every* unit plans the same rounds as the uninterrupted run.

Each round of the adaptive search is planned from the rounds before it only; a killed run may already
have written units of later rounds, which must not change the plan when it resumes.
"""
import numpy as np
import pytest

from diffusion_windows.analysis.counts import merge_units
from diffusion_windows.analysis.records import window_records
from diffusion_windows.engine import Engine, MemoryStore, Settings
from diffusion_windows.engine.synthetic import SyntheticBackend
from diffusion_windows.features import DEFAULT_FEATURES


class Killed(Exception):
    pass


class CutStore(MemoryStore):
    """A store that is killed after ``limit`` appends (between two units)."""

    def __init__(self, limit, records=None):
        super().__init__()
        self.limit = limit
        self.records.update(records or {})

    def append(self, round_, result):
        if len(self.records) >= self.limit:
            raise Killed
        super().append(round_, result)


def backend():
    """Digit labels with known curves (edges that differ by label): a unit costs nothing to run."""
    return SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 450 - 30 * (label % 3)) / 60)),
                            labels=[str(d) for d in range(10)], features=DEFAULT_FEATURES, grid=range(0, 1000, 50))


def measured(engine):
    recs = window_records(merge_units(engine.store.read_all()), engine.backend.features, 10, tolerance=0.1,
                          n_boot=50)
    return engine.rounds, engine.nfe(), recs, engine.blocks, engine.stopped


@pytest.mark.parametrize("samples, budget", [(20, None), (10, 6000)])
def test_auto_run_killed_after_every_unit_resumes_to_the_uninterrupted_run(samples, budget):
    """Also under --max-evaluations, where rounds add re-samples (restart slots) and a block of base samples."""
    settings = Settings(samples=samples, restarts=4, timesteps="auto", seed=4, batch_size=16, edge_precision=50,
                        max_evaluations=budget)
    whole = Engine(backend(), settings, MemoryStore(), quiet=True).run()
    want = measured(whole)
    assert any(any(u.first) for u in whole.store.read_all())  # some rounds added re-samples to earlier points
    if budget is not None:
        assert whole.nfe() <= budget and whole.blocks
    n_units = len(whole.store.read_all())
    assert len(whole.rounds) >= 3 and n_units > 2 * settings.samples
    differ = []
    for k in range(1, n_units):
        killed = Engine(backend(), settings, CutStore(k), quiet=True)
        with pytest.raises(Killed):
            killed.run()
        resumed = Engine(backend(), settings, CutStore(10 ** 9, killed.store.records), quiet=True).run()
        if measured(resumed) != want or len(resumed.store.read_all()) != n_units:
            differ.append(k)
    assert differ == [], f"{len(differ)} of {n_units - 1} kill points resumed to other rounds: {differ}"
