"""A backend with known retention curves: the smallest `Backend`, for tests and for studying the
adaptive search without a model.

`SyntheticBackend(retention, labels, features, grid)`: base sample ``b`` has label
``base_labels(b)`` (default: ``b % len(labels)``); restart ``k`` from time ``t`` keeps it with
probability ``retention(label, t - base_shift(b))`` (``base_shift``: default 0; a per-base shift
makes base samples differ, the spread a bootstrap over base samples sees), else draws a label
from the base rates, so the measured curve of a value with base rate ``w`` is
``p(t) + (1 - p(t)) w`` with known edges and a known binomial noise. Each restart draws from its
own seed (``unit_seed(seed, "synthetic", b, t, k)``), so results never depend on batching,
rounds, processes or interruptions. A restart from the ``k``-th grid time costs ``k`` evaluations.
It has no capability beyond the `Backend` protocol (no memory probe, no theory, no report): a
sweep's report says "no theory" for it.

Example::

    backend = SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 500) / 60)), labels=("a", "b"),
                               features=(labels_feature(("a", "b")),), grid=range(0, 1000, 20))
    Engine(backend, Settings(samples=20, restarts=4, timesteps="auto"), MemoryStore()).run()
"""
from __future__ import annotations

import numpy as np

from .backend import UnitResult, restart_slots
from .seeds import unit_seed

__all__ = ["SyntheticBackend"]


class SyntheticBackend:
    """Labels drawn from known retention curves (module docstring)."""

    name = "synthetic"
    time_unit = "timestep"
    more_samples = True  # any base sample index has a label: --timesteps auto may add blocks

    def __init__(self, retention, labels, features, grid, base_labels=None, base_shift=None):
        self.retention = retention
        self.labels, self.features = tuple(labels), tuple(features)
        self.grid = tuple(sorted(float(t) for t in grid))
        self.base_labels = base_labels or (lambda b: b % len(self.labels))
        self.base_shift = base_shift or (lambda b: 0.0)
        self.rates = np.full(len(self.labels), 1 / len(self.labels))
        self.made = []  # (start, total, bases) of every prepare call: what a model would have generated

    def cost(self, time: float) -> int:
        return int(np.searchsorted(self.grid, float(time) + 1e-9))

    def snap(self, times) -> list:
        g = np.asarray(self.grid)
        return sorted({float(g[g <= float(t) + 1e-9].max()) for t in times})

    def prepare(self, bases, *, total, seed, batch_size, start=0):
        if any(not start <= b < total for b in bases):
            raise ValueError(f"bases {sorted(bases)} outside the block [{start}, {total})")
        self.made.append((start, total, tuple(sorted(bases))))

    def run(self, plan, *, restarts, seed, batch_size, keep=()):
        out = []
        for b in sorted(plan):
            label = int(self.base_labels(b))
            slots = restart_slots(plan[b], restarts)
            rows = []
            for t, k0, k1 in slots:
                keep_p = float(self.retention(label, t - float(self.base_shift(b))))
                row = []
                for k in range(k0, k1):
                    u = np.random.default_rng(unit_seed(seed, "synthetic", b, t, k)).random(2)
                    other = min(int(np.searchsorted(np.cumsum(self.rates), u[1])), len(self.labels) - 1)
                    row.append(label if u[0] < keep_p else other)
                rows.append(tuple(row))
            out.append(UnitResult(b, label, tuple(t for t, _, _ in slots), tuple(rows),
                                  sum((k1 - k0) * self.cost(t) for t, k0, k1 in slots),
                                  first=tuple(k0 for _, k0, _ in slots)))
        return out

    def describe(self) -> dict:
        return {"name": "synthetic", "stochastic": True}

    def schedule_arrays(self) -> dict:
        return {}
