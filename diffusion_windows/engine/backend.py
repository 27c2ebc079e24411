"""The backend protocol: what the engine needs from a kind of model, and the record a unit returns.

The engine knows the forward-reverse experiment in the abstract: base samples, a grid of
restart times, ``K`` restarts from each, a label per restart. A *backend* knows how to make
and restart samples of one kind of model (`diffusion_windows.diffusion.backend` for diffusers
pipelines, `diffusion_windows.text.backend` for causal language models). Times are in the
backend's own unit (``time_unit``: training timesteps, ``1000 sigma`` for flow matching, the
fraction of a response removed for text), ascending, with larger meaning more of the sample
forgotten.

A unit of work is one base sample x the times of one round; `Backend.run` runs a batch group
of units (consecutive base samples, `engine.seeds.batch_groups`) and returns one `UnitResult`
per base. A plan entry is a time (restarts ``0..restarts-1`` from it) or a slot
``(time, k0, k1)``: restarts ``k0..k1-1`` only, so that ``--timesteps auto`` can add re-samples
to a (base, time) in a later round without running the first ones again (`restart_slots`).
Seeds come from the run seed, the base, the time and the restart index only
(`engine.seeds.unit_seed`), so results never depend on batching, rounds, processes or
interruptions: restart ``k`` is the same re-sample whichever round runs it.

What only some kinds of model can do is a named capability, a Protocol of its own:
`ProbesMemory` (``--batch-size auto``), `HasTheory` (the theory beside the measurement),
`Reports` (extra keys of ``windows.json``). A caller checks one with `capable` or `require`
(one line naming the model and what it cannot do); ``tests/test_backend_protocol.py`` runs the
same conformance check on every backend.

Example (a backend that replays recorded labels, as ``benchmarks/replay_auto.py`` does)::

    class Replay:
        name, time_unit, labels, grid = "replay", "timestep", ("0", "1"), (0.0, 500.0)
        features, more_samples = (labels_feature(("0", "1")),), True
        def describe(self): return {"name": "replay", "stochastic": True}
        def schedule_arrays(self): return {}
        def cost(self, time): return 1 + int(time > 0)
        def snap(self, times): return sorted(set(float(t) for t in times))
        def prepare(self, bases, *, total, seed, batch_size, start=0): pass
        def run(self, plan, *, restarts, seed, batch_size, keep=()):
            out = []
            for b in sorted(plan):
                slots = restart_slots(plan[b], restarts)   # [(time, k0, k1)]: restarts k0..k1-1
                out.append(UnitResult(b, 0, tuple(t for t, _, _ in slots),
                                      tuple((0,) * (k1 - k0) for _, k0, k1 in slots),
                                      sum((k1 - k0) * self.cost(t) for t, k0, k1 in slots),
                                      first=tuple(k0 for _, k0, _ in slots)))
            return out
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "ProbesMemory", "HasTheory", "Reports", "CAPABILITIES", "MissingCapability", "capable",
           "require", "UnitResult", "restart_slots"]


@dataclass(frozen=True)
class UnitResult:
    """What restarting one base sample at the times of one round gave.

    ``labels[i][k]`` is the classifier label index of restart ``first[i] + k`` from ``times[i]``
    (``first`` empty: every row starts at restart 0); ``nfe`` the model evaluations the
    restarts took (counted where they ran). ``arrays`` are
    kept beside the results (diffusion: the strip's decoded images, the base sample for
    the theory); ``extra`` are JSON fields added to the unit's line (text: the response).
    """

    base: int
    base_label: int
    times: tuple
    labels: tuple
    nfe: int
    arrays: dict = field(default_factory=dict, compare=False)
    extra: dict = field(default_factory=dict)
    first: tuple = ()

    def to_json(self, unit: str, round_: int) -> dict:
        """The unit's line in ``results.jsonl`` (times under ``"timesteps"``, the established key;
        ``"first"``, the first restart index per time, only when one is not 0)."""
        d = {"unit": unit, "round": int(round_), "base": int(self.base), "base_label": int(self.base_label),
             "timesteps": [_number(t) for t in self.times],
             "labels": [[int(x) for x in row] for row in self.labels], "nfe": int(self.nfe)}
        if any(self.first):
            d["first"] = [int(k) for k in self.first]
        return {**d, **self.extra}


def _number(t):
    """A time as an int when it is whole (JSON and seeds alike), else a float."""
    t = float(t)
    return int(t) if t == int(t) else t


def restart_slots(entries, restarts: int) -> list:
    """Plan entries -> ``[(time, k0, k1)]``: a bare time means restarts ``0..restarts-1``.

    Example::

        restart_slots([0, (500, 2, 8)], 2)   # [(0.0, 0, 2), (500.0, 2, 8)]
    """
    out = []
    for e in entries:
        if isinstance(e, (tuple, list)):
            t, k0, k1 = e
            out.append((float(t), int(k0), int(k1)))
        else:
            out.append((float(e), 0, int(restarts)))
    return out


@runtime_checkable
class Backend(Protocol):
    """A kind of model, as the engine, the sweep and the reports see it: every member they read.

    What only some kinds of model can do is a capability of its own (`ProbesMemory`,
    `HasTheory`, `Reports`), checked by `capable` or `require`, never by looking for attributes."""

    name: str                 # the model, for messages ("default", "default-text", a folder)
    time_unit: str            # the unit of every time: "timestep", "1000 sigma", "fraction removed"
    labels: tuple             # the classifier's labels; a restart's label is an index into them
    features: tuple           # diffusion_windows.features.Feature over those labels
    grid: tuple               # the times a restart can start from, ascending
    more_samples: bool        # --timesteps auto may make base samples beyond --samples (`prepare`'s blocks)

    def cost(self, time: float) -> int:
        """Model evaluations of one restart from ``time`` (the adaptive search's cost model)."""

    def snap(self, times) -> list:
        """Requested times -> the sorted, distinct grid times they restart from."""

    def prepare(self, bases, *, total: int, seed: int, batch_size: int, start: int = 0) -> None:
        """Make the base samples ``bases`` (of the block ``[start, total)``) if not made yet, in
        fixed chunks ``[start + c * batch_size, ...)`` of the block: a base sample is always made
        in the same batch, from the run seed ``seed``. ``--timesteps auto`` makes base samples
        beyond ``--samples`` in blocks of their own."""

    def run(self, plan: dict, *, restarts: int, seed: int, batch_size: int, keep=()) -> list:
        """One batch group: ``plan`` maps base -> entries (a time, or a slot ``(time, k0, k1)``,
        `restart_slots`; an empty list only labels the base sample); returns one `UnitResult`
        per base, in base order. Bases in ``keep`` also return their display arrays (the strip's rows)."""

    def describe(self) -> dict:
        """The sampler, for ``windows.json``: at least ``name`` and ``stochastic``."""

    def schedule_arrays(self) -> dict:
        """Arrays for plot axes (diffusion: timestep, alpha_bar, ou_time over the schedule); ``{}`` for none."""


@runtime_checkable
class ProbesMemory(Protocol):
    """``--batch-size auto`` (`engine.memory`): the heaviest single steps of a restart at a batch size."""

    def probe(self, batch_size: int) -> None:
        """Run them at ``batch_size``; an out-of-memory error propagates (`memory.find_batch_size` halves)."""


@runtime_checkable
class HasTheory(Protocol):
    """The theory's prediction beside the measurement (`analysis.compare`)."""

    theory_ahead: bool        # the theory reads no record (its data are known before the run) and is worth
                              # computing beside the restarts (`sweep.TheoryAhead`)

    def axis(self):
        """The map between the backend's times and the theory's (``to_theory``, ``from_theory``)."""

    def theory(self, store, merged, *, delta: float, times, device=None) -> tuple:
        """``(Predictions, None)`` on ``times``, or ``(None, reason)`` when the data are unknown; ``store``
        (kept arrays) and ``merged`` (`analysis.counts.merge_units`) are the run's (None, {} ahead)."""


@runtime_checkable
class Reports(Protocol):
    """What a kind of model adds to ``windows.json`` (language models: per-response jumps, ``tokens.html``)."""

    def report(self, merged: dict, settings, out) -> dict:
        """Extra keys of ``windows.json`` from the run's merged units (``out``: its folder, or None)."""


CAPABILITIES = {ProbesMemory: "probe memory", HasTheory: "compute the theory", Reports: "report per sample"}


class MissingCapability(TypeError):
    """A backend lacks a capability a caller needs; one line."""


def capable(backend, capability) -> bool:
    """Whether ``backend`` has ``capability`` (one of `CAPABILITIES`): every member of it present."""
    if capability not in CAPABILITIES:
        raise ValueError(f"{capability!r} is not a capability; known: {[c.__name__ for c in CAPABILITIES]}")
    return isinstance(backend, capability)


def require(backend, capability, needs: str, *, error=MissingCapability, instead: str = ""):
    """``backend`` when it has ``capability``, else ``error`` with one line: what ``needs`` it, why not,
    and what to do ``instead``.

    Example::

        require(backend, ProbesMemory, "--batch-size: 'auto'", error=OptionError, instead="pass an integer")
        # --batch-size: 'auto' needs a model that can probe memory; synthetic cannot: pass an integer
    """
    if capable(backend, capability):
        return backend
    raise error(f"{needs} needs a model that can {CAPABILITIES[capability]}; {backend.name} cannot"
                + (f": {instead}" if instead else ""))


def as_array(x) -> np.ndarray:
    """A tensor or array as a contiguous float32 numpy array (for safetensors)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
