"""Where ``--timesteps auto`` spends its next model evaluations: timesteps, and re-samples per edge.

The policy (``sequential-test``) is a sequential test of each grid point against its edge's threshold,
stopped per edge at a union bound (level-set estimation by confidence classification, Gotovos et al.,
"Active learning for level set estimation", IJCAI 2013; stochastic curtailment of a group-sequential
test, Lan, Simon & Halperin 1982). The full grid's edge is decided by which side of the threshold
``h`` each grid point lies on (the end: the first point at or below ``floor + delta``; the start: the
run at or above ``1 - delta``). Every re-sample auto runs is one of the full grid's own (restart ``k``
of base ``b`` at ``t`` has its seed from ``(b, t, k)`` only), so each point's reading with more
re-samples converges to the full grid's reading there; the search asks for re-samples until each
edge is, with probability at least ``1 - MISS``, within ``precision`` of the edge the full grid would
read, at the least cost.

`plan_values(grid, values, ...)` reads each feature value's counts measured so far (per base
sample and timestep, `ValueCounts`) and returns what to measure next (`Ask`s) and where each
edge stands (`EdgeState`). Per value and edge (the start at ``1 - delta``; an end at
``floor + delta`` of every record that reads the curve):

1. locate: new grid timesteps from `adaptive.locate` (reach, regula falsi bracket, and verify a
   dip the full grid would see first, within ``z`` standard errors), each started with
   ``initial`` re-samples per base sample (default 1: the test's first look). An end more than
   ``(1 - confidence) / 2`` of whose bootstrap draws cross at no measured timestep asks for the grid
   timestep above; each draw is read against its own redrawn floor (``end_floors``), as the reported
   interval reads it (`analysis.windows.estimate_window`). An end past which no measured point is put
   below its threshold by ``1 - (1 - confidence) / 2`` of the draws, its pooled Wilson bound below too
   (`analysis.edges.sure_end`: the reported interval would reach the grid's top) asks, at the likeliest
   such point past it, for the re-samples expected to make it sure (`_firm_up`, `_restarts_needed`),
   or, when every point there holds ``restarts``, for the grid timestep above; not where the floor's
   own error (which re-samples do not reduce) keeps every point above the draws' lowest thresholds;
2. its interval: a bootstrap over base samples that also redraws each base sample's re-samples
   (`analysis.windows.edge_draws`, ``restarts_too``); within ``precision`` -> ``"precision"``;
3. the test: at each measured point ``j`` whose flip to the other side of ``h`` would move the edge
   by more than ``precision`` (at least one grid step, `_moves`), the chance ``q_j`` that the full
   grid's reading lies on the other side, from the binomial spread its missing re-samples add (`predictive_sd`; the
   base samples are the same). The points left unresolved are the dearest per unit of ``q`` (cost:
   the backend's own ``cost(time)`` of the re-samples they need) while their ``q`` sum to at most
   ``MISS`` (`_tested`); each other point gets the re-samples per base sample that bring its
   ``q`` under ``1 - confidence`` at the retention seen so far (`_restarts_needed`, ``z``: the
   one-sided normal quantile of ``confidence``);
   b. an end's unmeasured grid timesteps inside its interval, nearest the edge, one on each side
   (`_fills`): a bootstrap draw that passes the edge jumps to the next measured timestep;
   c. with ``aim="interval"``, once a. and b. ask nothing and the interval is wider than
   ``precision``: every measured point inside the interval whose bootstrap draws cross the threshold
   more often than one tail of the interval, ``(1 - confidence) / 2`` (such a point can set a bound
   alone), and, past an end, every point read below it whose pooled Wilson bound still lies above,
   gets ``restarts`` re-samples (`_narrowing`): the interval then rests on the re-samples the full grid
   would hold there. With the default ``aim="edge"`` an edge stops without them, and its interval may
   be wider than the full grid's (README, "Two aims");
4. nothing left to test -> ``"grid"`` (``more_samples``: nothing left that re-samples would settle;
   with ``aim="interval"`` only more base samples of the value could narrow its interval);
5. an edge the curve never crosses (the end above the grid's top) -> ``"no-edge"``, once no measured
   point is left that the full grid might read on the other side of the end's threshold (the test of 3:
   a flip there would make an end; the grid's top is often measured with one re-sample).

Parameters and their units: ``aim`` (`AIMS`), ``precision`` in timesteps of the grid refined (``precision_steps``
in `policy`: what the user asked for in grid steps), ``confidence`` the intervals' level, ``MISS``
a probability (chosen on replays of the digits model, checked on the Gaussian-mixture flow twin
and the story language: README), and evaluations priced by the backend's own ``cost(time)``: no
constant is in a model's timesteps or evaluations. Under ``--max-evaluations`` asks are taken
in order of expected edge shift per evaluation. The bootstraps draw from the run seed and the
value's identity (`engine.seeds.unit_seed`).

Example::

    values = [ValueCounts(("digit", "3"), (0, 240, 480), kept, total, 0.9, (0.2,))]
    asks, edges = plan_values(range(0, 1000, 20), values, precision=20, restarts=8, initial=1, cost=cost)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from ..analysis.bootstrap import floor_draws
from ..analysis.edges import below_share, edge_indices, end_summary, sure_end
from ..analysis.windows import edge_bootstrap, edge_draws, mean_retention, wilson_interval
from .adaptive import Curve, curve_se, locate
from .seeds import unit_seed

__all__ = ["ValueCounts", "Ask", "EdgeState", "plan_values", "one_sided_z", "predictive_sd", "flip_chance", "policy",
           "POLICY", "MISS", "STOPS", "AIMS"]

POLICY = "sequential-test"  # the method's name in windows.json
MISS = 0.2  # the chance an edge may end farther than the precision from the full grid's (module docstring)
# why an edge stopped: its interval within --edge-precision; every point's side known (or at --restarts);
# the budget spent; no crossing
STOPS = ("precision", "grid", "budget", "no-edge")
# what the search settles: each edge (within the precision of the full grid's, with probability 1 - MISS); or
# also each edge's interval, as narrow as the full grid's re-samples would make it (step 3c)
AIMS = ("edge", "interval")


@dataclass(frozen=True)
class ValueCounts:
    """One feature value's counts measured so far, and the thresholds its edges are searched at."""

    key: tuple                  # (feature, value)
    timesteps: tuple            # [G] measured on every base sample of the value
    kept: np.ndarray            # [n_base, G] re-samples that kept the value
    total: np.ndarray           # [n_base, G] re-samples
    start_threshold: float | None   # 1 - delta; None: the start is not searched
    end_thresholds: tuple = ()      # floor + delta of every record reading this curve
    end_floors: tuple = ()          # per end threshold: (floor, base samples it is a share of), or () for none:
                                    # each bootstrap draw of that end then redraws the floor, as the reported interval does


@dataclass(frozen=True)
class Ask:
    """Every base sample of value ``key`` should hold at least ``restarts`` re-samples at ``time``."""

    key: tuple
    time: float
    restarts: int
    kind: str                   # "locate" (a new timestep), "resample" (more re-samples), "fill" (a new timestep
                                # inside an end's interval), "samples" (catch-up)
    edges: tuple                # the edges asking: (key, side, threshold)
    benefit: float              # expected edge shift it buys, timesteps (inf: locating)


@dataclass(frozen=True)
class EdgeState:
    """Where one edge stands after the rounds so far."""

    key: tuple
    side: str                   # "start" or "end"
    threshold: float
    timestep: float | None      # the edge on the curve so far
    interval: tuple | None      # its bootstrap interval (timesteps)
    width: float                # interval width (inf: open, or still locating)
    stopped_by: str | None      # one of STOPS; None: still asking
    more_samples: bool = False  # stopped by "grid" wider than the precision: more base samples would narrow it


def one_sided_z(confidence: float) -> float:
    """The test's margin in standard errors: the one-sided normal quantile of ``confidence`` (whether the
    full grid's reading lies across the threshold has one direction to err in)."""
    return float(ndtri(confidence))


def policy(grid, *, precision: float, restarts: int, initial: int, confidence: float = 0.95, aim: str = "edge") -> dict:
    """The policy's name and parameters, as ``windows.json`` records them (``auto``)."""
    g = np.sort(np.asarray(grid, dtype=float))
    spacing = float(np.median(np.diff(g))) if len(g) > 1 else 1.0
    return {"name": POLICY, "aim": aim, "confidence": confidence, "z": round(one_sided_z(confidence), 4),
            "precision": precision, "precision_steps": round(precision / spacing, 4),
            "miss": MISS, "initial_restarts": initial, "max_restarts": restarts}


def plan_values(grid, values, *, precision: float, restarts: int, initial: int, cost, confidence: float = 0.95,
                n_boot: int = 200, n_coarse: int = 9, seed: int = 0, max_verify: int | None = 1,
                miss: float | None = None, aim: str = "edge"):
    """The asks of the next round and each edge's state -> ``(asks, {edge: EdgeState})`` (module docstring).

    ``grid``: the sampling grid; ``precision``: timesteps; ``restarts``: re-samples per base sample and
    timestep at most; ``initial``: re-samples a new timestep starts with; ``cost``: evaluations of one
    restart from a time; ``confidence``: the test's and the intervals' level; ``seed``: the run seed (the
    bootstraps draw from it and the value's key); ``aim``: one of `AIMS`. A pure function of its arguments.
    """
    if aim not in AIMS:
        raise ValueError(f"aim {aim!r} is not one of {', '.join(AIMS)}")
    g = np.sort(np.asarray(grid, dtype=float))
    z = one_sided_z(confidence)
    alpha = MISS if miss is None else miss  # the chance an edge may move past the precision
    step = float(np.median(np.diff(g))) if len(g) > 1 else 1.0
    tol = max(precision, step)  # an edge read on the grid moves by whole steps: below one step means one
    asks, edges = [], {}
    for v in values:
        t = np.asarray(v.timesteps, dtype=float)
        kept, total = np.asarray(v.kept), np.asarray(v.total)
        se = curve_se(kept, total)
        curve = Curve(tuple(t), tuple(mean_retention(kept, total)), tuple(se), v.start_threshold,
                      tuple(v.end_thresholds))
        located = locate(g, curve, precision, z=z, n_coarse=n_coarse, max_verify=max_verify)
        p = np.asarray(curve.retention)
        sd = predictive_sd(kept, total, restarts)
        k_min = total.min(axis=0)  # re-samples every base sample holds, per timestep
        start_thr = np.inf if v.start_threshold is None else v.start_threshold
        rng = np.random.default_rng(unit_seed(seed, "allocation", *map(str, v.key), len(t), int(total.sum())))
        boot = edge_bootstrap(kept, total, n_boot, rng, restarts_too=True)  # shared by every edge of the curve
        upper = wilson_interval(kept.sum(axis=0), total.sum(axis=0), confidence)[1]  # a sure end's bound too
        floors = dict(zip(v.end_thresholds, v.end_floors))
        for (side, thr), new in located.items():
            edge = (v.key, side, float(thr))
            unsure = False
            if side == "start":
                point, interval, none = edge_draws(t, kept, total, start_thr, -np.inf, n_boot=n_boot, rng=None,
                                                   confidence=confidence, boot=boot)["start"]
            else:  # read the draws as the reported interval does: floor redrawn, up to a sure point
                point = int(edge_indices(p[None], start_thr, thr)[1][0])
                draws = _end_thresholds(float(thr), floors.get(thr), len(boot),
                                        unit_seed(seed, "floor", *map(str, v.key), float(thr)))
                sure = sure_end(boot, draws, point, 1 - (1 - confidence) / 2, upper, float(thr)) if point >= 0 else -1
                interval, none = end_summary(edge_indices(boot, start_thr, draws)[1], boot, draws, point, t,
                                             confidence, upper=upper, cut=float(thr), sure=sure)
                # no point past the end surely below: worth measuring only where re-samples could make one
                # sure, below the draws' lowest thresholds (the floor's own error is not reduced by them)
                reachable = float(np.quantile(draws, (1 - confidence) / 2))
                floor = floors[thr][0] if floors.get(thr) else -np.inf
                unsure = point >= 0 and reachable > floor and sure < 0
            here = None if point < 0 else float(t[point])
            open_up = side == "end" and (none > (1 - confidence) / 2 or unsure)  # the end may lie above
            if unsure and not new:  # 1. no point past the end is surely below: its likeliest, or the next one
                firm = _firm_up(p, total, point, restarts, reachable)
                if firm is not None:
                    need = _restarts_needed(p[firm], reachable - p[firm], ndtri(1 - (1 - confidence) / 2),
                                            total[:, firm], restarts)
                    asks.append(Ask(v.key, float(t[firm]), need, "resample", (edge,), float(g[-1] - t[point])))
                    edges[edge] = EdgeState(v.key, side, float(thr), here, interval, np.inf, None)
                    continue
            if open_up and not new and t[-1] < g[-1]:  # 1. an end that may lie above: the next grid timestep
                new = {float(g[g > t[-1]][0]): "reach"}
            if side == "start" and point == len(t) - 1 and t[-1] < g[-1] and not new and any(located.values()):
                # the run above 1 - delta reaches the last point: the ends' reach will bracket it
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, np.inf, None)
                continue
            if new:
                asks.extend(Ask(v.key, x, initial, "locate", (edge,), np.inf) for x in sorted(new))
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, np.inf, None)
                continue
            flip = flip_chance(p, thr, sd)  # 3. the chance each point's side flips
            if point < 0:  # 5. never crosses (or a start below its threshold at once)
                short = []
                if side == "end":  # a point the full grid might read at or below the threshold would make an
                    # end (the grid's top, measured with few re-samples): test those as in 3. first
                    need, dear = _needs(np.flatnonzero((p > thr) & (k_min < restarts) & (flip > 0)), p, thr, total,
                                        restarts, z, cost, t)
                    short = _tested(need, flip, dear, alpha)
                    asks.extend(Ask(v.key, float(t[j]), need[j], "resample", (edge,), float(flip[j] * (g[-1] - g[0])))
                                for j in short)
                edges[edge] = EdgeState(v.key, side, float(thr), None, interval, np.inf, None if short else "no-edge")
                continue
            width = np.inf if (open_up or interval is None) else interval[1] - interval[0]
            if width <= precision:  # 2.
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, width, "precision")
                continue
            moves = np.minimum(_moves(t, p, thr, side, point, flip > alpha), g[-1] - g[0])
            need, dear = _needs(np.flatnonzero((moves > tol) & (k_min < restarts) & (flip > 0)), p, thr, total,
                                restarts, z, cost, t)
            short = _tested(need, flip, dear, alpha)
            for j in short:
                asks.append(Ask(v.key, float(t[j]), need[j], "resample", (edge,), float(flip[j] * moves[j])))
            fills = _fills(g, t, float(t[point]), interval) if (side == "end" or aim == "interval") and \
                interval is not None else []
            asks.extend(Ask(v.key, x, initial, "fill", (edge,), float(abs(x - t[point]))) for x in fills)
            if aim == "interval" and not short and not fills and np.isfinite(width):  # 3c. narrow the interval
                end = side == "end"
                cross = _crossing(p, boot, draws if end else float(thr), float(thr))
                short = _narrowing(t, p, cross, interval, k_min < restarts, (1 - confidence) / 2, point,
                                   (upper > thr) & (p <= thr) if end else None)
                asks.extend(Ask(v.key, float(t[j]), restarts, "resample", (edge,),
                                float(cross[j] * abs(t[j] - t[point]))) for j in short)
            edges[edge] = EdgeState(v.key, side, float(thr), here, interval, width,
                                    None if short or fills else "grid", more_samples=not short and not fills)  # 4.
    return _merge(asks), edges


def _end_thresholds(thr, floor, n_boot, seed) -> np.ndarray:
    """[n_boot] thresholds an end's draws are read against: ``floor* + delta`` with ``floor* `` redrawn
    (`analysis.bootstrap.floor_draws`; ``floor``: ``(floor, floor_bases)``), as the reported interval
    reads them, or ``thr`` itself for a floor known exactly (None)."""
    if not floor:
        return np.full(n_boot, thr)
    return thr + floor_draws(floor[0], floor[1], n_boot, np.random.default_rng(seed)) - floor[0]


def _firm_up(p, total, point, restarts, below):
    """The point at or past an end's ``point`` most likely to be put surely below its threshold by more
    re-samples (the lowest retention among those under ``below`` holding fewer than ``restarts``), or None."""
    open_ = [j for j in range(point, len(p)) if total[:, j].min() < restarts and p[j] < below]
    return min(open_, key=lambda j: (p[j], j)) if open_ else None


def _needs(points, p, thr, total, restarts, z, cost, t):
    """``(need, dear)`` for `_tested`: per point index, the re-samples per base sample `_restarts_needed`
    expects to settle its side of ``thr``, and what they cost (the backend's ``cost``)."""
    need = {int(j): _restarts_needed(p[j], abs(p[j] - thr), z, total[:, j], restarts) for j in points}
    return need, {j: float(np.maximum(k - total[:, j], 0).sum() * cost(t[j])) for j, k in need.items()}


def predictive_sd(kept, total, restarts) -> np.ndarray:
    """Per point: the standard deviation of the mean the full grid (``restarts`` re-samples per base
    sample) would measure, given the re-samples held: its binomial part only (the base samples
    are the same), from the pooled retention with half a re-sample each way (never 0)."""
    kept = np.asarray(kept, dtype=float)
    total = np.asarray(total, dtype=float)
    has = total > 0
    n = np.maximum(has.sum(axis=0), 1)
    p = (kept.sum(axis=0) + 0.5) / (total.sum(axis=0) + 1.0)
    left = np.where(has, 1 / np.maximum(total, 1) - 1 / restarts, 0.0).clip(min=0).sum(axis=0)
    return np.sqrt(p * (1 - p) * left) / n


def flip_chance(p, threshold, sd) -> np.ndarray:
    """Per point: the chance that the full grid's reading lies on the other side of ``threshold`` from the
    reading ``p`` so far (normal, with `predictive_sd`'s spread ``sd``; 0 where no re-sample is missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, ndtr(-np.abs(p - threshold) / np.maximum(sd, 1e-300)), 0.0)


def _tested(need, flip, dear, alpha) -> list:
    """The points to test further: all but those left unresolved, which are chosen dearest per unit of
    flip chance first while their flip chances sum to at most ``alpha`` (a union bound: the edge then
    moves by more than the precision with probability at most ``alpha``, at the least cost)."""
    left, out = 0.0, []
    for j in sorted(need, key=lambda j: (np.log(flip[j]) - np.log1p(dear[j]), j)):
        if left + flip[j] <= alpha:
            left += flip[j]
        else:
            out.append(j)
    return sorted(out)


def _restarts_needed(p, margin, z, total, restarts) -> int:
    """The fewest re-samples per base sample at a point (more than it holds, at most ``restarts``) that
    would bring the full grid's predictive spread (`predictive_sd`) under ``margin / z``: the
    sample size the test expects to need at the retention seen so far (sample-size re-estimation)."""
    n = len(total)
    var = p * (1 - p) + 1e-12
    room = (margin / z) ** 2 * n ** 2 / var  # the budget of sum_b (1/k - 1/restarts)
    k = int(np.ceil(1 / (1 / restarts + room / n))) if room < np.inf else restarts
    return int(np.clip(k, total.min() + 1, restarts))


def _fills(g, t, edge: float, interval) -> list:
    """The unmeasured grid timesteps inside an end's interval nearest its edge, one on each side: a
    bootstrap draw that passes the edge jumps to the next measured timestep, so a gap there widens the
    interval beyond the full grid's; measured, each is tested like any other point."""
    gap = g[(g > interval[0]) & (g < interval[1]) & ~np.isin(g, t)]
    below, above = gap[gap < edge], gap[gap > edge]
    return [float(x) for x in (below[-1:].tolist() + above[:1].tolist())]


def _crossing(p, boot, draws, thr) -> np.ndarray:
    """Per point: the share of bootstrap draws (``boot`` [n_boot, G], read against ``draws``: one threshold,
    or each its own [n_boot]) on the other side of the threshold from the point's reading ``p`` against
    ``thr`` (`analysis.edges.below_share`, as the sure-end rule reads them)."""
    below = below_share(boot, draws)
    return np.where(np.asarray(p) > thr, below, 1.0 - below)


def _narrowing(t, p, cross, interval, short_of, level, point, unsure=None) -> list:
    """Step 3c (``aim="interval"``): indices of the measured points inside ``interval`` holding fewer than
    every re-sample (``short_of``) whose draws cross the threshold more often than ``level`` (one tail of
    the interval: such a point can set its bound alone), and, past an end, the points read below it whose
    pooled bound still lies above (``unsure``: the sure-end rule's second part, `analysis.edges.sure_end`).
    With every re-sample there, the draws cross where the full grid's would."""
    inside = (np.asarray(t) >= interval[0]) & (np.asarray(t) <= interval[1]) & np.asarray(short_of)
    wanted = cross > level
    if unsure is not None:
        wanted |= (np.arange(len(t)) > point) & np.asarray(unsure)
    return [int(j) for j in np.flatnonzero(inside & wanted)]


def _moves(t, p, thr, side, point, unsure) -> np.ndarray:
    """How far (timesteps) the edge at ``point`` could move if the point at each index fell on the
    other side of ``thr`` (0: it would not move; inf: the edge would vanish). Past the edge, the
    points whose side is ``unsure`` could fall with it: the move runs to the first sure one."""
    n = len(t)
    move = np.zeros(n)
    if side == "end":  # the first point at or below thr, read upward
        move[:point] = t[point] - t[:point]
        later = [j for j in range(point + 1, n) if p[j] <= thr and not unsure[j]]
        move[point] = t[later[0]] - t[point] if later else np.inf
    else:  # the last point of the run at or above thr from the smallest time
        move[0] = np.inf
        move[1:point + 1] = t[point] - t[:point]
        if point + 1 < n:
            after = [j for j in range(point + 2, n) if p[j] < thr and not unsure[j]]
            move[point + 1] = (t[after[0] - 1] if after else np.inf) - t[point]
    return move


def _merge(asks):
    """One ask per (value, time): the most re-samples, every edge that asked, the summed benefit."""
    by = {}
    for a in asks:
        b = by.get((a.key, a.time))
        if b is None:
            by[(a.key, a.time)] = a
            continue
        kind = "locate" if "locate" in (a.kind, b.kind) else a.kind
        by[(a.key, a.time)] = Ask(a.key, a.time, max(a.restarts, b.restarts), kind,
                                  tuple(dict.fromkeys(b.edges + a.edges)), a.benefit + b.benefit)
    return [by[k] for k in sorted(by, key=lambda k: (str(k[0]), k[1]))]
