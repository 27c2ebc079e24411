"""Where ``--timesteps auto`` spends its next model evaluations: timesteps, and re-samples per edge.

`plan_values(grid, values, ...)` reads each feature value's counts measured so far (per base
sample and timestep, `ValueCounts`) and returns what to measure next (`Ask`s) and where each
edge stands (`EdgeState`). The engine (`engine.engine.Engine`) turns asks into restart slots
``(time, k0, k1)`` per base sample, takes them in order of benefit per evaluation while they fit
in ``--max-evaluations``, and makes more base samples where re-samples can do no more.

Per value and edge (the start at ``1 - delta``; an end at ``floor + delta`` of every record that
reads the curve), in this order:

1. locate: the edge's new timesteps from `adaptive.locate` (reach, regula falsi bracket, and
   verify a dip the full grid would see first: one unmeasured timestep per round, the likeliest
   crossing, within ``z = 1.5`` standard errors); a reach timestep starts with ``initial``
   re-samples per base sample, a bisect or verify timestep (inside or below a bracket) with one
   (``probe_restarts``): it only has to show on which side of the threshold the curve lies
   there, and step 3 adds more where that is in doubt; an end whose bootstrap
   draws do not all cross at its highest measured timestep asks for the grid timestep above;
2. its interval: a bootstrap over base samples that also redraws each base sample's re-samples
   (`analysis.windows.edge_draws`, ``restarts_too``: a point measured with two re-samples cannot
   look certain); within ``precision`` timesteps -> stopped by ``"precision"``;
3. re-samples: each measured timestep ``j`` whose side of the threshold could flip moves the
   edge by ``move_j`` timesteps if it does (a point below an end makes it the end; the point past
   the edge, with the unsure points after it, moves it up to the first sure one). The chance of
   a flip is that of the full grid's value (``restarts`` re-samples on the same base samples)
   lying across the threshold: a normal tail with the binomial spread that the missing
   re-samples add (`_predictive_sd`; the spread between base samples is shared, since they are
   the same base samples). Two more re-samples per base sample at ``j`` are asked for when
   ``chance x move`` (timesteps) per model evaluation they cost is at least ``price``: an
   evaluation buys the same expected edge shift anywhere, so re-samples go where the threshold
   is close and cheap ones go first (a restart from the ``k``-th grid timestep costs ``k``
   evaluations: the start edge's re-samples are cheap, the end's dear). A point also earns what it
   is expected to narrow the edge's reported interval (the bootstrap over base samples that
   `analysis.windows.estimate_window` reports), if that is more (`_narrowing`): re-samples at a
   point with few of them add binomial spread to the per-base fractions, which widens the
   reported interval even where the edge would not move. A timestep of narrowing counts
   ``NARROWING x sqrt(n / NARROWING_BASES)`` timesteps of edge shift on a value with ``n`` base
   samples: an interval shrinks like ``1 / sqrt(n)``, so on a value with more base samples the
   same share of it is fewer timesteps (without the factor, the default sweep's values of 30
   base samples, whose every ask costs 30 base samples' re-samples, kept their points near the
   dear end edges at one re-sample, and intervals a grid step wider than the full grid's);
   b. an end's unmeasured grid timesteps inside its reported interval, at ``probe_restarts``
   re-samples, for what measuring them is expected to narrow it, at the same worth and price
   (`_filling`): a gap in the measured timesteps above an end lets every bootstrap draw that
   passes the edge jump to the far side of the gap, which the full grid's interval does not do
   (a start's interval is not filled: a new point inside the run above ``1 - delta`` is one more
   chance for a draw's run to break, and filled starts came out wider on the replays);
4. nothing left worth its price (or every point at ``restarts``, no gap to fill) -> stopped by ``"grid"``, with
   ``more_samples`` when no point holds fewer than ``restarts``: only more base samples of the
   value could narrow it;
5. an edge the curve never crosses (the end above the grid's top) -> ``"no-edge"``.

Every re-sample is one of the uniform grid's own (restart ``k`` of base ``b`` at ``t`` has its
seed from ``(b, t, k)`` only), so a run's curves are subsets of the full grid's, read with
fewer re-samples where the threshold is far. `PRICE`, `NARROWING`, `NARROWING_BASES` and the
defaults of ``z`` and ``chain`` were chosen on recorded uniform runs of the default model (60 base
samples x 8 re-samples, seeds 0-3, and the default sweep's 300 x 4 on the 50-step grid,
``benchmarks/replay_auto.py``): the evaluations they save against the edges they move and the
intervals they widen; seeds 4 and 5 were kept out of the choice to check it.

Example::

    values = [ValueCounts(("digit", "3"), (0, 240, 480), kept, total, 0.9, (0.2,))]
    asks, edges = plan_values(range(0, 1000, 20), values, precision=20, restarts=8, initial=2, cost=cost)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ..analysis.windows import (base_fractions, bootstrap_weights, edge_bootstrap, edge_draws, edge_interval,
                                mean_retention, weighted_curves)
from .adaptive import Curve, curve_se, locate

__all__ = ["ValueCounts", "Ask", "EdgeState", "plan_values", "price_per_evaluation", "PRICE", "NARROWING",
           "NARROWING_BASES", "STOPS"]

# why an edge stopped: its interval within --edge-precision; nothing left worth its price at this grid
# and --restarts with these base samples; --max-evaluations spent first; the curve never crosses
STOPS = ("precision", "grid", "budget", "no-edge")

# grid steps of expected edge shift that one generation's worth of evaluations (a restart from the
# top of the grid) must buy; per model evaluation: `price_per_evaluation`
PRICE = 0.09

# a timestep by which an edge's reported interval is expected to narrow counts as NARROWING timesteps
# of edge shift on a value with NARROWING_BASES base samples, sqrt(n / NARROWING_BASES) times that
# with n (step 3 of the module docstring)
NARROWING = 0.4
NARROWING_BASES = 12

# binomial draws of a new point's re-samples with which `_filling` predicts what measuring it narrows
FILL_DRAWS = 4


@dataclass(frozen=True)
class ValueCounts:
    """One feature value's counts so far (times ascending, in the backend's unit)."""

    key: tuple                  # (feature, value)
    timesteps: tuple            # [G] measured on every base sample of the value
    kept: np.ndarray            # [n_base, G] re-samples that kept the value
    total: np.ndarray           # [n_base, G] re-samples
    start_threshold: float | None   # 1 - delta; None: the start is not searched
    end_thresholds: tuple = ()      # floor + delta of every record reading this curve


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
    more_samples: bool = False  # stopped by "grid" with every point at --restarts: more base samples would narrow it


def price_per_evaluation(grid, cost, price: float = PRICE) -> float:
    """`PRICE` (grid steps per generation) in timesteps per model evaluation on ``grid``."""
    g = np.sort(np.asarray(grid, dtype=float))
    spacing = float(np.median(np.diff(g))) if len(g) > 1 else 1.0
    return price * spacing / max(float(cost(g[-1])), 1.0)


def plan_values(grid, values, *, precision: float, restarts: int, initial: int, cost, price: float = 0.0,
                z: float = 1.5, growth: int = 2, max_verify: int | None = 1, chain: float = 0.03,
                n_boot: int = 200, confidence: float = 0.95, n_coarse: int = 9, probe_restarts: int = 1,
                narrowing: float | None = None):
    """The asks of the next round and each edge's state -> ``(asks, {edge: EdgeState})`` (module docstring).

    ``grid``: the sampling grid; ``precision``: timesteps; ``restarts``: re-samples per base
    sample and timestep at most; ``initial``: re-samples a new timestep starts with; ``cost``:
    evaluations of one restart from a time; ``price``: expected edge shift (timesteps) one
    evaluation must buy (0: any re-sample that could move an edge); ``z``: the verify step's
    margin (standard errors); ``probe_restarts``: re-samples a bisect or verify timestep starts
    with (at most ``initial``); ``growth``: re-samples added per ask; ``chain``: the flip chance
    above which a point past the edge could fall with it; ``n_boot``: bootstrap draws; ``narrowing``:
    what a timestep of expected interval narrowing counts for on a value with `NARROWING_BASES`
    base samples (None: `NARROWING`; 0: the edge shift only). A pure
    function of its arguments (the bootstrap draws from a fixed seed).
    """
    g = np.sort(np.asarray(grid, dtype=float))
    narrowing = NARROWING if narrowing is None else narrowing
    asks, edges = [], {}
    for v in values:
        t = np.asarray(v.timesteps, dtype=float)
        kept, total = np.asarray(v.kept), np.asarray(v.total)
        curve = Curve(tuple(t), tuple(mean_retention(kept, total)), tuple(curve_se(kept, total)),
                      v.start_threshold, tuple(v.end_thresholds))
        located = locate(g, curve, precision, z=z, n_coarse=n_coarse, max_verify=max_verify)
        p = np.asarray(curve.retention)
        sd = _predictive_sd(kept, total, restarts)
        k_min = total.min(axis=0)  # re-samples every base sample holds, per timestep
        k_next = np.minimum(restarts, k_min + growth)
        dear = np.array([np.maximum(k_next[j] - total[:, j], 0).sum() * cost(t[j]) for j in range(len(t))])
        start_thr = np.inf if v.start_threshold is None else v.start_threshold
        boot = edge_bootstrap(kept, total, n_boot, np.random.default_rng(0), restarts_too=True)  # every edge's
        reported = _reported_draws(kept, total, n_boot) if narrowing > 0 else None
        worth = narrowing * np.sqrt(len(kept) / NARROWING_BASES)  # a timestep of narrowing, in edge shift
        for (side, thr), new in located.items():
            edge = (v.key, side, float(thr))
            thresholds = (start_thr, thr if side == "end" else -np.inf)
            draws = edge_draws(t, kept, total, *thresholds, n_boot=n_boot, rng=None, confidence=confidence,
                               boot=boot)
            point, interval, none = draws[side]
            here = None if point < 0 else float(t[point])
            open_up = side == "end" and point == len(t) - 1 and none > (1 - confidence) / 2
            if open_up and not new and t[-1] < g[-1]:  # 1. an end that may lie above: the next grid timestep
                new = {float(g[g > t[-1]][0]): "reach"}
            if side == "start" and point == len(t) - 1 and t[-1] < g[-1] and not new and any(located.values()):
                # the run above 1 - delta reaches the last point: the ends' reach will bracket it
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, np.inf, None)
                continue
            if new:
                asks.extend(Ask(v.key, x, initial if new[x] == "reach" else min(initial, probe_restarts),
                                "locate", (edge,), np.inf) for x in sorted(new))
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, np.inf, None)
                continue
            if point < 0:  # 5. never crosses (or a start below its threshold at once)
                edges[edge] = EdgeState(v.key, side, float(thr), None, interval, np.inf, "no-edge")
                continue
            width = np.inf if (open_up or interval is None) else interval[1] - interval[0]
            if width <= precision:  # 2.
                edges[edge] = EdgeState(v.key, side, float(thr), here, interval, width, "precision")
                continue
            with np.errstate(divide="ignore", invalid="ignore"):  # 3. re-samples worth their price
                flip = ndtr(-np.abs(p - thr) / np.maximum(sd, 1e-12))
            moves = np.minimum(_moves(t, p, thr, side, point, flip > chain), g[-1] - g[0])
            gain = flip * moves
            now = None if reported is None else edge_interval(t, reported[3], *thresholds, side, confidence)
            if now is not None:  # or the reported interval it narrows, whichever buys more (narrowing > 0)
                narrows = _narrowing(t, reported, total, thresholds, side, k_next, restarts, confidence, now=now)
                gain = np.maximum(gain, worth * narrows)
                moves = np.where(narrows > 0, np.maximum(moves, 1.0), moves)
            short = [j for j in range(len(t)) if k_min[j] < restarts and moves[j] > 0 and gain[j] > 0
                     and gain[j] >= price * dear[j]]
            for j in short:
                asks.append(Ask(v.key, float(t[j]), int(k_next[j]), "resample", (edge,), float(gain[j])))
            fills = []
            if now is not None and side == "end":  # 3b. an unmeasured grid timestep inside the reported interval
                k_fill = min(initial, probe_restarts)
                for x, narrows_x in _filling(t, g, reported, thresholds, side, confidence, k_fill, now=now):
                    if narrows_x > 0 and worth * narrows_x >= price * len(kept) * k_fill * cost(x):
                        fills.append(Ask(v.key, x, k_fill, "fill", (edge,), float(worth * narrows_x)))
            asks.extend(fills)
            full = not any(k_min[j] < restarts and moves[j] > 0 for j in range(len(t)))
            edges[edge] = EdgeState(v.key, side, float(thr), here, interval, width,
                                    None if short or fills else "grid", more_samples=full and not fills)  # 4.
    return _merge(asks), edges


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


def _predictive_sd(kept, total, restarts) -> np.ndarray:
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


def _reported_draws(kept, total, n_boot):
    """The bootstrap over base samples that records report (`analysis.windows.estimate_window`), of one
    curve: ``(weights [n_boot, n_base], per-base fractions, valid, curves [n_boot, G])``; None for one base
    sample."""
    n_base = np.shape(total)[0]
    if n_base < 2:
        return None
    weights = bootstrap_weights(n_base, n_boot, np.random.default_rng(0))
    frac, valid = base_fractions(kept, total)
    return weights, frac, valid, weighted_curves(weights, frac, valid)


def _narrowing(t, draws, total, thresholds, side, k_next, restarts, confidence, now=None) -> np.ndarray:
    """Per point: by how many timesteps the edge's reported interval (``draws``: `_reported_draws`) is
    expected to narrow if every base sample held ``k_next`` re-samples there. The point's per-base
    fractions keep their mean, and their spread loses the binomial part the added re-samples remove
    (the spread between base samples stays); the same draws are read again. 0 where a point holds
    ``restarts`` or a base sample has none there."""
    total = np.asarray(total, dtype=float)
    out = np.zeros(total.shape[1])
    if draws is None:
        return out
    weights, frac, valid, curves = draws
    now = edge_interval(t, curves, *thresholds, side, confidence) if now is None else now
    if now is None or now[1] <= now[0]:
        return out
    js = np.array([j for j in range(total.shape[1])
                   if total[:, j].min() < restarts and valid[:, j].all() and frac[:, j].var() > 0], dtype=int)
    if not len(js):
        return out
    f = frac[:, js]
    mean = f.mean(axis=0)
    noise_now = np.mean(mean * (1 - mean) / total[:, js], axis=0)
    noise_next = np.mean(mean * (1 - mean) / np.maximum(total[:, js], k_next[js]), axis=0)
    between = np.maximum(f.var(axis=0) - noise_now, 0.0)
    shrunk = mean + (f - mean) * np.sqrt((between + noise_next) / (between + noise_now))
    trials = np.repeat(curves[None], len(js), axis=0)  # [candidates, n_boot, G]: one point's column replaced
    trials[np.arange(len(js)), :, js] = weighted_curves(weights, shrunk, valid[:, js]).T
    for j, after in zip(js, edge_interval(t, trials, *thresholds, side, confidence)):
        out[j] = 0.0 if after is None else max((now[1] - now[0]) - (after[1] - after[0]), 0.0)
    return out


def _filling(t, g, draws, thresholds, side, confidence, k, now=None) -> list:
    """Per unmeasured grid timestep inside the edge's reported interval (``draws``: `_reported_draws`):
    by how many timesteps the interval is expected to narrow once it is measured with ``k`` re-samples
    per base sample -> ``[(time, narrows)]``. Its per-base retention is read off the line between
    its measured neighbours, and ``FILL_DRAWS`` binomial draws of ``k`` re-samples from it are put
    into the same bootstrap draws: a draw whose edge jumped the gap to the far neighbour may now
    stop inside it, and a noisy new point may move a draw's edge the other way (the mean over the
    binomial draws; never below 0). ``now``: the interval as it stands (None: read from ``draws``)."""
    if draws is None:
        return []
    weights, frac, valid, curves = draws
    now = edge_interval(t, curves, *thresholds, side, confidence) if now is None else now
    if now is None or now[1] <= now[0]:
        return []
    out = []
    for x in g[(g > now[0]) & (g < now[1]) & ~np.isin(g, t)]:
        i = int(np.searchsorted(t, x))  # t[i - 1] < x < t[i]
        w = (x - t[i - 1]) / (t[i] - t[i - 1])
        ok = valid[:, i - 1] & valid[:, i]
        f = np.where(ok, np.clip((1 - w) * frac[:, i - 1] + w * frac[:, i], 0, 1), 0.0)
        rng = np.random.default_rng(int(x))  # plan_values stays a pure function of its arguments
        sampled = rng.binomial(k, np.broadcast_to(f, (FILL_DRAWS, len(f)))) / k  # [draws, n_base]
        columns = weighted_curves(weights, sampled.T, np.repeat(ok[:, None], FILL_DRAWS, axis=1)).T[:, :, None]
        trials = np.concatenate([np.broadcast_to(curves[:, :i], (FILL_DRAWS,) + curves[:, :i].shape), columns,
                                 np.broadcast_to(curves[:, i:], (FILL_DRAWS,) + curves[:, i:].shape)], axis=2)
        after = edge_interval(np.insert(t, i, x), trials, *thresholds, side, confidence)
        gained = [0.0 if a is None else (now[1] - now[0]) - (a[1] - a[0]) for a in after]
        out.append((float(x), max(float(np.mean(gained)), 0.0)))
    return out


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
