"""The engine: rounds of units over any `Backend`, kept in a store, split across processes.

A run is a list of rounds. Round 0 restarts every base sample at the requested times (or the
first round of the adaptive search, ``timesteps="auto"``); each later round is planned by the
adaptive search (`engine.adaptive`) from the records of the rounds before it only, so a
resumed run plans exactly what the uninterrupted run planned. A round's units (one per base
sample) are cut into fixed batch groups (`engine.seeds.batch_groups`); processes share whole
groups, and a group with any unit missing is run whole again (finished units are not written
twice), so every unit is always computed in the same batch.

`Engine(backend, settings, store, dist=None, quiet=False).run()`; ``engine.rounds`` lists the
times of each round. `Settings` is the engine's part of the options.

Example::

    engine = Engine(backend, Settings(samples=8, restarts=4, timesteps=[0, 500]), MemoryStore())
    engine.run()
    records = engine.store.read_all()
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from .processes import Dist
from .seeds import batch_groups

__all__ = ["Engine", "Settings", "RunError", "STRIP_ROWS"]

STRIP_ROWS = 8  # base samples whose restarts are kept as images (strip.png's rows)


class RunError(RuntimeError):
    """A unit failed (e.g. the model returned NaN); results finished so far are kept."""


@dataclass(frozen=True)
class Settings:
    """What the engine reads of a run's options (times in the backend's unit)."""

    samples: int
    restarts: int
    timesteps: object            # "auto" or a sequence of times
    seed: int = 0
    batch_size: int = 512
    tolerance: float = 0.1
    edge_precision: float = 40

    @classmethod
    def from_options(cls, o: dict) -> "Settings":
        return cls(**{k: o[k] for k in cls.__dataclass_fields__})


class Engine:
    """Plans rounds of units, runs this process's share on ``backend``, keeps results in ``store``."""

    def __init__(self, backend, settings: Settings, store, dist: Dist | None = None, quiet: bool = False):
        self.backend, self.settings, self.store = backend, settings, store
        self.dist, self.quiet = dist or Dist(), quiet
        self.grid = sorted(float(t) for t in backend.grid)
        self.rounds = []

    @property
    def auto(self) -> bool:
        return isinstance(self.settings.timesteps, str) and self.settings.timesteps == "auto"

    def snap(self, times) -> list:
        """Requested times -> the grid times they restart from (a warning when several share one)."""
        snapped = self.backend.snap(times)
        if len(snapped) < len(set(times)) and self.dist.is_main and not self.quiet:
            warnings.warn(f"{len(set(times)) - len(snapped)} requested times share a grid time of the "
                          "sampling grid; measured once", stacklevel=2)
        return snapped

    def run(self):
        """Round 0 on every base sample; with ``auto``, the adaptive search's rounds until edges are located."""
        from .adaptive import first_round

        first = first_round(self.grid) if self.auto else self.snap(self.settings.timesteps)
        plan = {b: list(first) for b in range(self.settings.samples)}
        round_ = 0
        while plan:
            self.rounds.append(sorted({t for ts in plan.values() for t in ts}))
            self._run_round(round_, plan)
            if not self.auto:
                break
            plan = self._refine(round_)
            round_ += 1
        return self

    def _run_round(self, round_: int, plan: dict):
        """Run this process's batch groups of one round; ``plan`` maps base -> times."""
        from tqdm.auto import tqdm

        s = self.settings
        mine = self.dist.share(batch_groups(plan, s.restarts, s.batch_size))
        done = self.store.done_units()
        todo = [g for g in mine if any(self.store.unit_id(round_, b) not in done for b in g)]
        n_mine = sum(len(g) for g in mine)
        bar = tqdm(total=n_mine, initial=n_mine - sum(len(g) for g in todo), desc=f"round {round_}",
                   unit="unit", disable=self.quiet or not todo, dynamic_ncols=True)
        try:
            self.backend.prepare([b for g in todo for b in g], total=s.samples, seed=s.seed, batch_size=s.batch_size)
            for group in todo:
                results = self.backend.run({b: plan[b] for b in group}, restarts=s.restarts, seed=s.seed,
                                           batch_size=s.batch_size, keep=[b for b in group if b < STRIP_ROWS])
                for result in results:
                    if self.store.unit_id(round_, result.base) not in done:
                        self.store.append(round_, result)
                bar.update(len(group))
        except FloatingPointError as e:
            where = f" in {self.store.out}" if getattr(self.store, "out", None) else ""
            raise RunError(f"{e}; finished units are kept{where}") from None
        finally:
            bar.close()
        self.dist.wait()

    def _refine(self, round_: int) -> dict:
        """The adaptive search's plan for round ``round_ + 1``, from all processes' results of rounds
        ``0..round_`` only (the same in every process, and the same after a kill: a resumed run
        may already hold units of later rounds, which the uninterrupted run had not seen when it
        planned this round).

        Each feature value's curve asks for times (`adaptive.next_timesteps`) that are measured
        on the base samples of that value only: a new time costs restarts only where it settles
        an edge. A curve carries the end threshold of every record that reads it (the value
        against everything, and inside each coarser value).
        """
        from ..analysis.counts import merge_units, record_counts
        from ..analysis.windows import mean_retention
        from .adaptive import Curve, curve_se, next_timesteps

        merged = merge_units(r for r in self.store.read_all() if r.round <= round_)
        delta = float(self.settings.tolerance)
        counts = [c for c in record_counts(merged, self.backend.features, len(self.backend.labels))
                  if c.bases and len(c.timesteps)]
        ends = {}
        for c in counts:  # a record whose floor + delta >= 1 - delta has no window to locate
            ends.setdefault((c.feature, c.value), []).extend([c.floor + delta] if c.floor + delta < 1 - delta else [])
        curves, members = {}, {}
        for c in counts:
            if c.parent is None:  # the value's own curve; nested records read the same counts
                curves[(c.feature, c.value)] = Curve(
                    tuple(c.timesteps), tuple(mean_retention(c.kept, c.total)), tuple(curve_se(c.kept, c.total)),
                    start_threshold=1 - delta, end_thresholds=tuple(ends[(c.feature, c.value)]))
                members[(c.feature, c.value)] = c.bases
        new = next_timesteps(self.grid, curves, float(self.settings.edge_precision))
        plan = {}
        for key, ts in new.items():
            for b in members[key]:
                have = merged[b].labels
                plan.setdefault(b, set()).update(t for t in ts if float(t) not in have)
        return {b: sorted(ts) for b, ts in sorted(plan.items()) if ts}

    def nfe(self) -> int:
        """Model evaluations of every unit in the store."""
        return int(sum(r.nfe for r in self.store.read_all()))
