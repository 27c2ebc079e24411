"""``--timesteps auto`` resumed after a kill plans the same rounds as the uninterrupted run.

Each round of the adaptive search is planned from the rounds before it only; a killed run may already
have written units of later rounds, which must not change the plan when it resumes (planning from every
record in the store, later rounds included, resumed 28 of 59 kill points of a small run to other rounds).
The kill points are every round boundary (the last unit of a round, and the first unit of the next: the
kill that leaves a later round's unit in the store) and a seeded sample of the units between them;
a kill after each of the 100-odd units cost minutes and found nothing the boundaries do not. A run
killed after k units holds the first k units the uninterrupted run wrote (checked by real kills at the
sampled points), so the boundaries resume from that prefix without running the kill.
"""
import random

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


def kill_points(records, sample: int = 6, seed: int = 0) -> tuple[set, set]:
    """Numbers of units written before a kill: (both sides of every round boundary of the uninterrupted
    run's records, in the order written; ``sample`` others drawn with ``seed``)."""
    rounds = [r.round for r in records]
    edges = {k for k in range(1, len(rounds)) if rounds[k] != rounds[k - 1]}
    points = {k for e in edges for k in (e, e + 1) if k < len(rounds)}
    rest = sorted(set(range(1, len(rounds))) - points)
    return points, set(random.Random(seed).sample(rest, min(sample, len(rest))))


def measured(engine):
    recs = window_records(merge_units(engine.store.read_all()), engine.backend.features, 10, tolerance=0.1,
                          n_boot=50)
    return engine.rounds, engine.nfe(), recs, engine.blocks, engine.stopped


@pytest.mark.parametrize("samples, budget", [(20, None), (10, 6000)])
def test_auto_run_killed_at_round_boundaries_resumes_to_the_uninterrupted_run(samples, budget):
    """Also under --max-evaluations, where rounds add re-samples (restart slots) and a block of base samples."""
    settings = Settings(samples=samples, restarts=4, timesteps="auto", seed=4, batch_size=16, edge_precision=50,
                        max_evaluations=budget)
    whole = Engine(backend(), settings, WrittenStore(), quiet=True).run()
    want = measured(whole)
    assert any(any(u.first) for u in whole.store.read_all())  # some rounds added re-samples to earlier points
    if budget is not None:
        assert whole.nfe() <= budget and whole.blocks
    n_units = len(whole.store.read_all())
    assert len(whole.rounds) >= 3 and n_units > 2 * settings.samples
    boundaries, sampled = kill_points(whole.store.written)
    assert len(boundaries) >= len(whole.rounds) - 1 and sampled
    points = sorted(boundaries | sampled)
    differ = []
    for k in points:
        kept = {r.unit: r for r in whole.store.written[:k]}
        if k in sampled:
            killed = Engine(backend(), settings, CutStore(k), quiet=True)
            with pytest.raises(Killed):
                killed.run()
            assert killed.store.records == kept  # a kill keeps what the uninterrupted run wrote first
        resumed = Engine(backend(), settings, CutStore(10 ** 9, kept), quiet=True).run()
        if measured(resumed) != want or len(resumed.store.read_all()) != n_units:
            differ.append(k)
    assert differ == [], f"{len(differ)} of {len(points)} kill points resumed to other rounds: {differ}"


class WrittenStore(MemoryStore):
    """A memory store that also keeps its records in the order they were written."""

    def __init__(self):
        super().__init__()
        self.written = []

    def append(self, round_, result):
        super().append(round_, result)
        self.written.append(self.records[self.unit_id(round_, result.base)])
