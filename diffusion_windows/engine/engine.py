"""The engine: rounds of units over any `Backend`, kept in a store, split across processes.

A run is a list of rounds. Round 0 restarts every base sample at the requested times (or the
first round of the adaptive search, ``timesteps="auto"``, with ``initial_restarts`` re-samples
each); each later round is planned by the adaptive search (`engine.allocation`) from the records
of the rounds before it only, so a resumed run plans exactly what the uninterrupted run planned.
A round's units (one per base sample: restart slots ``(time, k0, k1)``, or nothing but the base
sample's label for a base sample made beyond ``samples``) are cut into fixed batch groups
(`engine.seeds.batch_groups`); processes share whole groups, and a group with any unit missing
is run whole again (finished units are not written twice), so every unit is always computed in
the same batch.

`Engine(backend, settings, store, dist=None, quiet=False).run()`; ``engine.rounds`` lists the
times of each round, `Engine.round_summary` their evaluations, `Engine.edge_report` why each
record's edges stopped and what they cost. `Settings` is the engine's part of the options.

Example::

    engine = Engine(backend, Settings(samples=8, restarts=4, timesteps=[0, 500]), MemoryStore())
    engine.run()
    records = engine.store.read_all()
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

from .backend import restart_slots
from .errors import RunError
from .processes import Dist
from .seeds import batch_groups

__all__ = ["Engine", "Settings", "RunError", "STRIP_ROWS", "Block"]

STRIP_ROWS = 8  # base samples whose restarts are kept as images (strip.png's rows)
MAX_ROUNDS = 500  # a guard: every round of the search adds restarts or base samples, so it ends long before


@dataclass(frozen=True)
class Settings:
    """What the engine reads of a run's options (times in the backend's unit)."""

    samples: int
    restarts: int                # with "auto": the most re-samples per base sample and time
    timesteps: object            # "auto" or a sequence of times
    seed: int = 0
    batch_size: int = 512
    tolerance: float = 0.1
    edge_precision: float = 40
    initial_restarts: int | None = None   # "auto": re-samples a new (base, time) starts with (None: 1)
    auto_aim: str = "edge"                # "auto": what the search settles, `allocation.AIMS`
    max_evaluations: int | None = None    # "auto": model evaluations at most (None: stop on precision only)

    @classmethod
    def from_options(cls, o: dict) -> "Settings":
        return cls(**{k: o[k] for k in cls.__dataclass_fields__ if k in o})

    @property
    def initial(self) -> int:
        """Re-samples a new (base, time) of ``--timesteps auto`` starts with: ``initial_restarts``, else 1,
        the sequential test's first look (`engine.allocation`: it doubles them where a side is in doubt)."""
        if self.initial_restarts is not None:
            return int(self.initial_restarts)
        return 1


@dataclass(frozen=True)
class Block:
    """Base samples ``[start, stop)`` made beyond ``samples`` in round ``round``, for the values ``kept_for``."""

    start: int
    stop: int
    kept_for: tuple              # ((feature, value), ...)
    round: int
    nfe: int                     # their generation's model evaluations (cost model)


class Engine:
    """Plans rounds of units, runs this process's share on ``backend``, keeps results in ``store``."""

    def __init__(self, backend, settings: Settings, store, dist: Dist | None = None, quiet: bool = False):
        self.backend, self.settings, self.store = backend, settings, store
        self.dist, self.quiet = dist or Dist(), quiet
        from .adaptive import auto_times

        asked = auto_times(settings.timesteps)  # "auto:t1,t2,...": the search refines exactly these times
        self.grid = sorted(float(t) for t in (backend.grid if asked is None else self.snap(asked)))
        self.rounds = []
        self.blocks = []        # base samples made beyond `samples` (auto, with a budget)
        self.edges = {}         # edge -> allocation.EdgeState after the last round
        self.edge_nfe = {}      # edge -> evaluations its asks cost (cost model)
        self.stopped = {}       # edge -> why it stopped
        self.record_edges = {}  # record key (feature, value, parent) -> (start edge, end edge)
        self.asked = []         # (round, allocation.Ask, evaluations) of every ask taken

    @property
    def auto(self) -> bool:
        from .adaptive import is_auto

        return is_auto(self.settings.timesteps)

    def snap(self, times) -> list:
        """Requested times -> the grid times they restart from (a warning when several share one)."""
        snapped = self.backend.snap(times)
        if len(snapped) < len(set(times)) and self.dist.is_main and not self.quiet:
            warnings.warn(f"{len(set(times)) - len(snapped)} requested times share a grid time of the "
                          "sampling grid; measured once", stacklevel=2)
        return snapped

    def run(self):
        """Round 0 on every base sample; with ``auto``, the adaptive search's rounds until every edge stops."""
        from .adaptive import first_round

        s = self.settings
        if self.auto:
            if not 1 <= s.initial <= s.restarts:
                raise ValueError(f"initial_restarts {s.initial} must lie in [1, restarts={s.restarts}]")
            plan = {b: [(t, 0, s.initial) for t in first_round(self.grid)] for b in range(s.samples)}
        else:
            plan = {b: list(self.snap(s.timesteps)) for b in range(s.samples)}
        round_ = 0
        while plan:
            self.rounds.append(sorted({t for entries in plan.values() for t, _, _ in restart_slots(entries, 1)}))
            self._run_round(round_, plan)
            if not self.auto:
                break
            if round_ >= MAX_ROUNDS:
                raise RuntimeError(f"the adaptive search did not stop after {MAX_ROUNDS} rounds")
            plan = self._refine(round_)
            round_ += 1
        return self

    # ------------------------------------------------------------------ running a round
    def _run_round(self, round_: int, plan: dict):
        """Run this process's batch groups of one round; ``plan`` maps base -> times or restart slots."""
        from tqdm.auto import tqdm

        s = self.settings
        mine = self.dist.share(batch_groups(plan, s.restarts, s.batch_size))
        done = self.store.done_units()
        todo = [g for g in mine if any(self.store.unit_id(round_, b) not in done for b in g)]
        n_mine = sum(len(g) for g in mine)
        bar = tqdm(total=n_mine, initial=n_mine - sum(len(g) for g in todo), desc=f"round {round_}",
                   unit="unit", disable=self.quiet or not todo, dynamic_ncols=True)
        try:
            self._prepare([b for g in todo for b in g])
            for group in todo:
                results = self.backend.run({b: plan[b] for b in group}, restarts=s.restarts, seed=s.seed,
                                           batch_size=s.batch_size, keep=[b for b in group if b < STRIP_ROWS])
                for result in results:
                    if self.store.unit_id(round_, result.base) not in done:
                        block = self._block_of(result.base)
                        if block is not None:  # a base sample beyond `samples`: the values it was made for
                            result = dataclasses.replace(
                                result, extra={**result.extra, "kept_for": [list(k) for k in block.kept_for]})
                        self.store.append(round_, result)
                self.store.sync()
                bar.update(len(group))
        except FloatingPointError as e:
            where = f" in {self.store.out}" if getattr(self.store, "out", None) else ""
            raise RunError(f"{e}; finished units are kept{where}") from None
        finally:
            bar.close()
        self.dist.wait()

    def _prepare(self, bases):
        """The backend's base samples: the first ``samples`` in their block, each later block in its own."""
        s = self.settings
        self.backend.prepare([b for b in bases if b < s.samples], total=s.samples, seed=s.seed,
                             batch_size=s.batch_size)
        for block in self.blocks:
            mine = [b for b in bases if block.start <= b < block.stop]
            if mine:
                self.backend.prepare(mine, total=block.stop, start=block.start, seed=s.seed, batch_size=s.batch_size)

    def _block_of(self, base: int):
        return next((k for k in self.blocks if k.start <= base < k.stop), None)

    # ------------------------------------------------------------------ planning (auto)
    def _refine(self, round_: int) -> dict:
        """The adaptive search's plan for round ``round_ + 1``, from all processes' results of rounds
        ``0..round_`` only (the same in every process, and the same after a kill: a resumed run
        may already hold units of later rounds, which the uninterrupted run had not seen when it
        planned this round).

        Each feature value's curve asks (`allocation.plan_values`) for new times and for more
        re-samples, measured on the base samples of that value only; a curve carries the end
        threshold of every record that reads it (the value against everything, and inside each
        coarser value). Asks are taken locating first, then re-samples by benefit per evaluation
        (expected edge shift per evaluation of the backend's ``cost``), while they fit in
        ``max_evaluations``. Under a budget, where re-samples can do no more, a block of new base
        samples is made for the values that need them, and their restarts catch up with the others'
        next round.
        """
        from ..analysis.counts import merge_units, record_counts
        from .allocation import plan_values

        s = self.settings
        merged = merge_units(r for r in self.store.read_all() if r.round <= round_)
        delta = float(s.tolerance)
        counts = record_counts(merged, self.backend.features, len(self.backend.labels))
        ends, floors, self.record_edges = {}, {}, {}
        for c in counts:  # a record whose floor + delta >= 1 - delta has no window to locate
            key = (c.feature, c.value)
            has = c.floor + delta < 1 - delta
            ends.setdefault(key, []).extend([c.floor + delta] if has else [])
            if has and c.floor_bases:  # the reported end interval redraws this floor: the search reads it so too
                floors.setdefault(key, {})[float(c.floor + delta)] = (float(c.floor), int(c.floor_bases))
            self.record_edges[(c.feature, c.value, c.parent)] = (
                ((key, "start", 1 - delta), (key, "end", float(c.floor + delta))) if has else (None, None))
        values, members, rates = [], {}, {}
        for c in counts:
            if c.parent is None and c.bases and len(c.timesteps):  # nested records read the same counts
                key = (c.feature, c.value)
                thresholds = tuple(sorted(set(ends[key])))
                values.append(_value_counts(key, c, 1 - delta if thresholds else None, thresholds,
                                            tuple(floors.get(key, {}).get(float(x), ()) for x in thresholds)))
                members[key] = list(c.bases)
                rates[key] = float(c.base_rate)
        pending = _pending(merged, self.backend.features, len(self.backend.labels))
        budget = math.inf if s.max_evaluations is None else s.max_evaluations - self._spent(round_)

        def bases(ask):  # a catch-up is for the new base samples only; every other ask for the whole value
            new = pending.get(ask.key, [])
            return new if ask.kind == "samples" else members.get(ask.key, []) + new

        asks, self.edges = plan_values(self.grid, values, precision=float(s.edge_precision), restarts=s.restarts,
                                       initial=s.initial, cost=self.backend.cost, seed=s.seed, aim=s.auto_aim)
        catch_up = [a for key in sorted(pending, key=str)
                    for a in _catch_up(key, members.get(key, []), merged, self.edges)]
        targets, budget = self._take(round_, catch_up + self._ranked(asks, bases, merged), bases, merged, budget)
        plan = {}
        for (b, t), k in sorted(targets.items()):
            plan.setdefault(b, []).append((t, len(merged[b].labels.get(t, ())), k))
        if not plan and s.max_evaluations is not None:
            block = self._new_block(round_, merged, members, budget, rates)
            if block is not None:
                plan = {b: [] for b in range(block.start, block.stop)}
        self._stops(s.max_evaluations is not None)
        return plan

    def _take(self, round_, asks, bases, merged, budget):
        """Asks in order while they fit in ``budget`` -> ``({(base, time): re-samples}, budget left)``."""
        targets = {}
        for ask in asks:
            cost = self._cost(ask, bases(ask), merged, targets)
            if cost == 0 or cost > budget:
                continue
            budget -= cost
            for b in bases(ask):
                have = max(len(merged[b].labels.get(ask.time, ())), targets.get((b, ask.time), 0))
                if have < ask.restarts:
                    targets[(b, ask.time)] = ask.restarts
            for e in ask.edges:
                self.edge_nfe[e] = self.edge_nfe.get(e, 0.0) + cost / len(ask.edges)
            self.asked.append((round_ + 1, ask, cost))
        return targets, budget

    def _ranked(self, asks, bases, merged):
        """Locating asks first (cheapest first), then re-samples by benefit per evaluation."""
        def cost(a):
            return self._cost(a, bases(a), merged, {})

        locate = sorted((a for a in asks if a.kind == "locate"), key=lambda a: (cost(a), str(a.key), a.time))
        more = sorted((a for a in asks if a.kind != "locate"),
                      key=lambda a: (-a.benefit / max(cost(a), 1), str(a.key), a.time))
        return locate + more

    def _cost(self, ask, bases, merged, targets) -> int:
        """Model evaluations (cost model) of raising ``bases`` to ``ask.restarts`` at ``ask.time``."""
        n = 0
        for b in bases:
            have = max(len(merged[b].labels.get(ask.time, ())), targets.get((b, ask.time), 0))
            n += max(0, ask.restarts - have)
        return n * int(self.backend.cost(ask.time))

    def _generation_cost(self) -> int:
        """A base sample's generation (cost model): a restart from the top of the backend's own grid (an
        asked grid, ``auto:START:STOP:STEP``, may stop below it; a generation still runs every step)."""
        return int(self.backend.cost(max(self.backend.grid)))

    def _spent(self, round_: int) -> int:
        units = sum(r.nfe for r in self.store.read_all() if r.round <= round_)
        return int(units + sum(k.nfe for k in self.blocks if k.round <= round_))

    def _new_block(self, round_: int, merged, members, budget, rates):
        """A block of new base samples for the values whose edges only more base samples can narrow:
        enough that the rarest of them expects a quarter more base samples (``rates``: each value's
        base rate; at most ``samples`` at once), fewer if its generation and expected catch-up do not
        fit in ``budget`` (None when not even one does)."""
        s = self.settings
        wanting = sorted({e.key for e in self.edges.values() if e.stopped_by == "grid" and e.more_samples}, key=str)
        if not wanting or not self.backend.more_samples:
            return None
        per_base = {}
        for key in wanting:
            b0 = members[key][0]
            per_base[key] = sum(len(row) * int(self.backend.cost(t)) for t, row in merged[b0].labels.items())
        each = self._generation_cost() + sum(rates[k] * per_base[k] for k in wanting)  # expected, per new base
        size = max(math.ceil(max(1, len(members[k]) // 4) / max(rates[k], 1 / s.samples)) for k in wanting)
        size = min(size, s.samples, int(budget // each))
        if size < 1:
            return None
        gen = size * self._generation_cost()
        start = max([s.samples] + [k.stop for k in self.blocks])
        block = Block(start, start + size, tuple(wanting), round_ + 1, gen)
        self.blocks.append(block)
        asking = [e for e in self.edges if self.edges[e].key in wanting and self.edges[e].more_samples]
        for e in asking:
            self.edge_nfe[e] = self.edge_nfe.get(e, 0.0) + gen / len(asking)
            self.edges[e] = dataclasses.replace(self.edges[e], stopped_by=None)
        return block

    def _stops(self, budgeted: bool):
        """Why each edge stopped, as of this round (final after the last round): its state; the budget
        for one still asking, or one that only more base samples could narrow, under a budget."""
        self.stopped = {}
        for e, st in self.edges.items():
            if st.stopped_by is None:
                self.stopped[e] = "budget" if budgeted else "grid"
            elif st.stopped_by == "grid" and st.more_samples and budgeted and self.backend.more_samples:
                self.stopped[e] = "budget"
            else:
                self.stopped[e] = st.stopped_by

    # ------------------------------------------------------------------ reports
    def policy_report(self) -> dict:
        """``windows.json``'s ``auto`` block: the policy's name and parameters, and the grid it refines
        (``"asked"``: the times of ``auto:START:STOP:STEP``; ``"sampling"``: the backend's own grid)."""
        from .adaptive import auto_times
        from .allocation import policy

        if not self.auto:
            return {}
        s = self.settings
        return {**policy(self.grid, precision=float(s.edge_precision), restarts=s.restarts, initial=s.initial,
                         aim=s.auto_aim),
                "grid": list(self.grid), "grid_source": "sampling" if auto_times(s.timesteps) is None else "asked",
                "max_evaluations": s.max_evaluations}

    def nfe(self) -> int:
        """Model evaluations: every unit's in the store, and the generation of base samples beyond ``samples``."""
        return int(sum(r.nfe for r in self.store.read_all()) + sum(k.nfe for k in self.blocks))

    def round_summary(self) -> list:
        """Per round: its times, units, re-samples run, base samples made beyond ``samples``, evaluations."""
        units = self.store.read_all()
        out = []
        for i, times in enumerate(self.rounds):
            mine = [u for u in units if u.round == i]
            made = [k for k in self.blocks if k.round == i]
            out.append({"timesteps": times, "units": len(mine), "restarts": sum(len(row) for u in mine for row in u.labels),
                        "new_samples": sum(k.stop - k.start for k in made),
                        "nfe": int(sum(u.nfe for u in mine) + sum(k.nfe for k in made))})
        return out

    def edge_report(self) -> dict:
        """Per record key ``(feature, value, parent)``: ``start_stopped_by``, ``end_stopped_by`` (one of
        `allocation.STOPS`) and ``start_nfe``, ``end_nfe`` (evaluations its edge's asks cost, shared
        equally where several edges asked for the same restarts; a nested record's start is its
        value's). Empty for a run on a fixed grid."""
        if not self.auto:
            return {}
        out = {}
        for rec, (start, end) in self.record_edges.items():
            row = {}
            for side, e in (("start", start), ("end", end)):
                row[f"{side}_stopped_by"] = "no-edge" if e is None else (self.stopped.get(e) or "no-edge")
                row[f"{side}_nfe"] = 0 if e is None else int(round(self.edge_nfe.get(e, 0.0)))
            out[rec] = row
        return out


def _value_counts(key, c, start_threshold, end_thresholds, end_floors=()):
    from .allocation import ValueCounts

    return ValueCounts(key, tuple(float(t) for t in c.timesteps), c.kept, c.total, start_threshold, end_thresholds,
                       end_floors)


def _pending(merged, features, n_labels) -> dict:
    """``{(feature, value): [bases]}``: base samples made for a value, of that value, without restarts yet."""
    from ..features import feature_values

    import numpy as np

    out = {}
    for b, e in sorted(merged.items()):
        if e.kept_for is None or len(e.labels):
            continue
        for f in features:
            vi = int(feature_values(f, np.asarray([e.label]))[0])
            if vi < 0:
                continue
            key = (f.name, list(f.values)[vi])
            if key in e.kept_for:
                out.setdefault(key, []).append(b)
    return out


def _catch_up(key, members, merged, edges):
    """Asks that give a value's new base samples the re-samples its other base samples hold, per time."""
    from .allocation import Ask

    if not members:
        return []
    times = sorted(set.intersection(*(set(merged[b].labels) for b in members)))
    asking = tuple(e for e, st in edges.items() if st.key == key and st.more_samples) or \
        tuple(e for e, st in edges.items() if st.key == key)
    return [Ask(key, t, max(len(merged[b].labels[t]) for b in members), "samples", asking, math.inf) for t in times]
