"""A backend with known retention curves: the smallest `Backend`, for tests and for studying the
adaptive search without a model.

`SyntheticBackend(retention, labels, features, grid)`: base sample ``b`` has label
``base_labels(b)`` (default: ``b % len(labels)``); restart ``k`` from time ``t`` keeps it with
probability ``retention(label, t)``, else draws a label from the base rates, so the measured
curve of a value with base rate ``w`` is ``p(t) + (1 - p(t)) w`` with known edges and a known
binomial noise. Each restart draws from its own seed (``unit_seed(seed, "synthetic", b, t, k)``),
so results never depend on batching, processes or interruptions. A restart from the ``k``-th
grid time costs ``k`` evaluations.

Example::

    backend = SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 500) / 60)), labels=("a", "b"),
                               features=(labels_feature(("a", "b")),), grid=range(0, 1000, 20))
    Engine(backend, Settings(samples=20, restarts=4, timesteps="auto"), MemoryStore()).run()
"""
from __future__ import annotations

import numpy as np

from .backend import UnitResult
from .seeds import unit_seed

__all__ = ["SyntheticBackend"]


class SyntheticBackend:
    """Labels drawn from known retention curves (module docstring)."""

    time_unit = "timestep"

    def __init__(self, retention, labels, features, grid, base_labels=None):
        self.retention = retention
        self.labels, self.features = tuple(labels), tuple(features)
        self.grid = tuple(sorted(float(t) for t in grid))
        self.base_labels = base_labels or (lambda b: b % len(self.labels))
        self.rates = np.full(len(self.labels), 1 / len(self.labels))

    def cost(self, time: float) -> int:
        return int(np.searchsorted(self.grid, float(time) + 1e-9))

    def snap(self, times) -> list:
        g = np.asarray(self.grid)
        return sorted({float(g[g <= float(t) + 1e-9].max()) for t in times})

    def prepare(self, bases, *, total, seed, batch_size):
        pass

    def run(self, plan, *, restarts, seed, batch_size, keep=()):
        out = []
        for b in sorted(plan):
            label = int(self.base_labels(b))
            rows = []
            for t in plan[b]:
                keep_p = float(self.retention(label, float(t)))
                row = []
                for k in range(restarts):
                    u = np.random.default_rng(unit_seed(seed, "synthetic", b, t, k)).random(2)
                    other = min(int(np.searchsorted(np.cumsum(self.rates), u[1])), len(self.labels) - 1)
                    row.append(label if u[0] < keep_p else other)
                rows.append(tuple(row))
            out.append(UnitResult(b, label, tuple(float(t) for t in plan[b]), tuple(rows),
                                  restarts * sum(self.cost(t) for t in plan[b])))
        return out

    def describe(self) -> dict:
        return {"name": "synthetic", "stochastic": True}

    def schedule_arrays(self) -> dict:
        return {}

    def theory(self, store, merged, *, delta, times, device=None):
        return None, "synthetic backend: no data"
