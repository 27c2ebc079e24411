"""Seeds and batch groups: what makes a run's numbers independent of how its work is split.

- `unit_seed(seed, *ids) -> int`: the seed of one piece of work from the run seed and its
  identity only (never batch, process or time of day). Re-sample ``k`` of base ``b`` at time
  ``t`` draws its forward noise from ``unit_seed(seed, "forward", b, t, k)`` and its reverse
  noise from ``unit_seed(seed, "reverse", b, t, k)``; base ``b`` from ``unit_seed(seed, "base", b)``.
- `batch_groups(plan, restarts, batch_size)`: consecutive base samples whose restarts fill
  about one batch, a fixed function of the plan and the options: a resumed run, a run split
  over processes and an uninterrupted run compute every unit in the same batch (a plan entry
  is a time or a restart slot ``(time, k0, k1)``, `engine.backend.restart_slots`).
- `time_key(t)`: a time as an int when it is whole, else a float (JSON, seeds and scheduler
  arguments see the same value: 500 and 500.0 are one unit).
"""
from __future__ import annotations

import hashlib

import numpy as np

from .backend import restart_slots

__all__ = ["unit_seed", "batch_groups", "time_key"]


def time_key(t):
    """A time as an int when it is whole, else a float."""
    t = float(t)
    return int(t) if t == int(t) else t


def unit_seed(seed: int, *ids) -> int:
    """A 63-bit seed from the run seed and a unit's identity (stable across runs and machines).

    Example::

        unit_seed(0, "reverse", 3, 500, 1)   # restart 1 of base 3 at time 500
    """
    ids = tuple(time_key(i) if isinstance(i, (int, float, np.integer, np.floating)) else i for i in ids)
    text = repr((int(seed),) + ids)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def batch_groups(plan: dict, restarts: int, batch_size: int) -> list[list[int]]:
    """Consecutive base samples whose restarts fill about one batch: the fixed batch groups of a round.

    Example::

        batch_groups({0: [0, 500], 1: [0, 500], 2: [500]}, restarts=4, batch_size=16)   # [[0, 1], [2]]
    """
    per_base = max((sum(k1 - k0 for _, k0, k1 in restart_slots(ts, restarts)) for ts in plan.values()), default=1)
    size = max(1, batch_size // max(per_base, 1))
    order = sorted(plan)
    return [order[i:i + size] for i in range(0, len(order), size)]
