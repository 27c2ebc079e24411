"""``--timesteps auto`` resumed after a kill at *every* unit plans the same rounds as the uninterrupted run.

Each round of the adaptive search is planned from the rounds before it only; a killed run may already
have written units of later rounds, which must not change the plan when it resumes.
"""
import numpy as np
import pytest
import torch

from diffusion_windows.measure import Model, unit_seed
from diffusion_windows.options import parse_timesteps
from diffusion_windows.report import merge_units, window_records
from diffusion_windows.store import MemoryStore
from diffusion_windows.sweep import Engine


class Killed(Exception):
    pass


class CutStore(MemoryStore):
    """A store that is killed after ``limit`` appends (between two units)."""

    def __init__(self, limit, records=None):
        super().__init__()
        self.limit = limit
        self.records.update(records or {})

    def append(self, round_, base, rec):
        if len(self.records) >= self.limit:
            raise Killed
        super().append(round_, base, rec)


@pytest.fixture(scope="module")
def model():
    """A tiny random pipeline: the synthetic units below never look at its samples."""
    from conftest import make_tiny_ddpm_pipe

    from diffusion_windows.classifiers import from_callable
    from diffusion_windows.features import DEFAULT_FEATURES

    clf = from_callable(lambda im: torch.full((len(im), 10), 0.1), [str(d) for d in range(10)])
    return Model(pipe=make_tiny_ddpm_pipe(), classifier=clf, features=DEFAULT_FEATURES, num_inference_steps=20)


def synthetic_units(model, bases, plan, *, restarts, seed, **_):
    """Labels of a known retention curve (logistic in the timestep), drawn from each restart's own seed:
    a unit costs nothing, so the run can be cut after every one of its units."""
    out = []
    for b in sorted(plan):
        label, labels = b % 10, []
        for t in plan[b]:
            keep = 1 / (1 + np.exp((float(t) - 450 - 30 * (b % 3)) / 60))
            row = []
            for k in range(restarts):
                u = np.random.default_rng(unit_seed(seed, "synthetic", b, t, k)).random(2)
                row.append(label if u[0] < keep else int(u[1] * 10))
            labels.append(row)
        out.append({"base": b, "base_label": label, "timesteps": list(plan[b]), "labels": labels,
                    "nfe": restarts * len(plan[b])})
    return out


def measured(engine, model):
    recs = window_records(merge_units(engine.store.read_all()), model.features, 10, tolerance=0.1, n_boot=50)
    return engine.rounds, sum(r["nfe"] for r in engine.store.read_all()), recs


@pytest.mark.slow
def test_auto_run_killed_after_every_unit_resumes_to_the_uninterrupted_run(model):
    o = dict(samples=20, restarts=4, timesteps=parse_timesteps("auto", 1000), protocol="noise", seed=4,
             batch_size=16, tolerance=0.1, edge_precision=50, images=None)
    whole = Engine(model, o, MemoryStore(), quiet=True, units=synthetic_units)
    whole.run()
    want = measured(whole, model)
    n_units = len(whole.store.read_all())
    assert len(whole.rounds) >= 3 and n_units > 2 * o["samples"]
    differ = []
    for k in range(1, n_units):
        killed = Engine(model, o, CutStore(k), quiet=True, units=synthetic_units)
        with pytest.raises(Killed):
            killed.run()
        resumed = Engine(model, o, CutStore(10 ** 9, killed.store.records), quiet=True, units=synthetic_units)
        resumed.run()
        if measured(resumed, model) != want or len(resumed.store.read_all()) != n_units:
            differ.append(k)
    assert differ == [], f"{len(differ)} of {n_units - 1} kill points resumed to other rounds: {differ}"
