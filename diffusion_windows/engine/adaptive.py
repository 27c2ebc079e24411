"""The adaptive timestep search of ``--timesteps auto``: which timesteps to measure next.

Pure functions of the retention curves measured so far; `diffusion_windows.sweep.Engine`
runs the rounds (each round: the new timesteps on the base samples of the values that
asked for them, then `next_timesteps` again, until it returns nothing).

- `first_round(grid) -> list`: round 0, the cheap lower half of a coarse grid (a restart
  from grid timestep ``t`` costs the grid steps at or below ``t``, so high timesteps are
  the expensive ones and are measured only where a curve needs them).
- `Curve`: one feature value's curve: measured timesteps, retention, standard errors,
  the start threshold ``1 - delta`` and its end thresholds ``floor + delta`` (one per
  record that reads the curve: the value against everything, and inside each coarser value).
- `next_timesteps(grid, curves, precision, *, z) -> {key: [timesteps]}`.
- `parse_auto_spec(spec)`, `auto_spec(times)`, `auto_times(spec)`: ``--timesteps auto`` refines the
  backend's own sampling grid; ``auto:START:STOP:STEP`` (or ``auto:t1,t2,...``) refines exactly the
  times ``--timesteps START:STOP:STEP`` would measure, so the two runs compare like for like (on flow
  models the sampling grid is the scheduler's shifted one). Resolved options hold it as
  ``"auto:t1,t2,..."`` (`auto_spec`), which the engine reads back with `auto_times`.

The search targets the edges that the full grid would give, under the edge rules of
`diffusion_windows.windows` (start: end of the run of ``P >= 1 - delta`` from ``t = 0``;
end: the first grid timestep with ``P <= floor + delta``). Per curve and round:

1. reach: for an end threshold no measured point has crossed yet, the grid timestep where
   the curve, extrapolated from its two highest points, crosses it (at least one grid step
   up, at most to the next coarse timestep); timesteps above every end crossing never
   change an edge, so they are not measured;
2. bisect: an edge whose bracket (the edge and its measured neighbour on the other side
   of the threshold) is wider than ``precision`` gets the grid timestep nearest the
   bracket's linear-interpolation crossing (regula falsi), kept to the bracket's middle
   half so that every bracket shrinks by at least a quarter per round;
3. verify: an unmeasured grid timestep below a bracket, where the curve interpolated
   between its measured neighbours lies less than ``z`` standard errors above that edge's
   threshold, is measured: on the full grid it could be the first crossing. Without this
   step a noisy curve's early dip, which the full grid sees, would be missed.

Cost: a restart from the ``k``-th grid timestep costs ``k`` model evaluations, so the
search spends its evaluations near the edges; after the first round, the only timestep it
measures above a curve's last end crossing is the reach step that crossed it.

Example::

    curve = Curve(timesteps=[0, 240, 480], retention=[1.0, 0.8, 0.1], se=[0.0, 0.05, 0.04],
                  start_threshold=0.9, end_thresholds=(0.2,))
    next_timesteps(range(0, 1000, 20), {"digit 3": curve}, precision=40)   # {"digit 3": [120.0, 420.0]}
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.windows import _edge_indices, mean_retention

__all__ = ["Curve", "coarse_grid", "first_round", "next_timesteps", "locate", "curve_se", "parse_auto_spec",
           "auto_spec", "auto_times", "is_auto"]


def parse_auto_spec(spec):
    """A ``--timesteps`` value -> ``"auto"`` (the backend's own grid), the grid part of ``"auto:GRID"``
    (``START:STOP:STEP`` or ``t1,t2,...``, to be read by the model kind's own parser), or None (not auto).

    Example::

        parse_auto_spec("auto:0:1000:50")   # "0:1000:50"
    """
    if not isinstance(spec, str):
        return None
    text = spec.strip()
    if text == "auto":
        return "auto"
    if text.startswith("auto:"):
        grid = text[len("auto:"):].strip()
        if not grid:
            raise ValueError(f"--timesteps: {spec!r}: 'auto:' needs a grid, e.g. auto:0:1000:50")
        return grid
    return None


def auto_spec(times) -> str:
    """Parsed grid times -> the resolved option ``"auto:t1,t2,..."`` (exact: whole numbers as ints)."""
    return "auto:" + ",".join(str(int(t)) if float(t) == int(t) else repr(float(t)) for t in times)


def is_auto(spec) -> bool:
    """Whether a resolved ``--timesteps`` value asks for the adaptive search."""
    return isinstance(spec, str) and (spec == "auto" or spec.startswith("auto:"))


def auto_times(spec):
    """A resolved ``"auto:t1,t2,..."`` -> its times (floats, ascending); ``"auto"`` -> None (the backend's grid)."""
    if not is_auto(spec) or spec == "auto":
        return None
    return sorted({float(x) for x in spec[len("auto:"):].split(",") if x.strip()})


@dataclass(frozen=True)
class Curve:
    """A feature value's retention measured so far (timesteps ascending, training-timestep units)."""

    timesteps: tuple           # measured timesteps
    retention: tuple           # P(t) at each
    se: tuple                  # its standard error over base samples
    start_threshold: float | None   # 1 - delta; None: the start is not searched
    end_thresholds: tuple = ()      # floor + delta of every record reading this curve


def coarse_grid(grid, n: int = 9) -> list:
    """About ``n`` evenly spaced grid timesteps including both ends."""
    g = np.sort(np.asarray(grid, dtype=float))
    idx = np.unique(np.round(np.linspace(0, len(g) - 1, n)).astype(int))
    return [float(g[i]) for i in idx]


def first_round(grid, n: int = 9) -> list:
    """Round 0: the coarse grid's timesteps up to its middle (the rest only where a curve needs them)."""
    coarse = coarse_grid(grid, n)
    return coarse[: len(coarse) // 2 + 1]


def curve_se(kept, total) -> np.ndarray:
    """Standard error of the mean of per-base fractions ``kept/total`` [n_base, G], per grid point.

    The larger of the spread over base samples and the pooled binomial error (which keeps
    a few identical base samples from claiming zero error away from 0 and 1).
    """
    kept = np.asarray(kept, dtype=float)
    total = np.asarray(total, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, kept / np.maximum(total, 1), np.nan)
        n = np.sum(total > 0, axis=0)
        p = mean_retention(kept, total)
        spread = np.nanvar(frac, axis=0, ddof=1) / n if frac.shape[0] > 1 else np.zeros(frac.shape[1])
        binom = p * (1 - p) / np.maximum(total.sum(axis=0), 1)
    return np.sqrt(np.nan_to_num(np.maximum(spread, binom), nan=0.0))


def next_timesteps(grid, curves: dict, precision: float, *, z: float = 1.0, n_coarse: int = 9) -> dict:
    """The next round: ``{key: [grid timesteps to measure]}`` for the curves that need any (module docstring).

    ``grid``: the sampling grid's timesteps; ``precision``: the widest edge bracket
    accepted, in timesteps; ``z``: how many standard errors above a threshold an
    unmeasured timestep must lie to be skipped. Empty when every edge is settled.
    """
    out = {}
    for key, c in curves.items():
        new = set().union(*(set(ts) for ts in locate(grid, c, precision, z=z, n_coarse=n_coarse).values()))
        if new:
            out[key] = sorted(new)
    return out


def locate(grid, c: Curve, precision: float, *, z: float = 1.0, n_coarse: int = 9, max_verify=None) -> dict:
    """Per edge of one curve, the grid timesteps that locate it next (steps 1-3 of the module docstring).

    Returns ``{(side, threshold): {timestep: step}}`` (``step``: "reach", "bisect" or "verify")
    for the start (``("start", 1 - delta)``) and every end threshold; empty: the edge needs no
    new timestep. ``max_verify``: at most this many verify timesteps per edge and round, the
    likeliest crossings first (None: all).
    """
    g = np.sort(np.asarray(grid, dtype=float))
    coarse = np.asarray(coarse_grid(g, n_coarse), dtype=float)
    t = np.asarray(c.timesteps, dtype=float)
    p = np.asarray(c.retention, dtype=float)
    se = np.asarray(c.se, dtype=float)
    out = {}
    brackets = []  # (edge, index above the threshold, index at or below it, threshold)
    start_thr = np.inf if c.start_threshold is None else c.start_threshold
    if c.start_threshold is not None:
        edge = ("start", c.start_threshold)
        out[edge] = {}
        s, _ = _edge_indices(p[None], start_thr, -np.inf)
        if 0 <= s[0] < len(t) - 1:
            brackets.append((edge, s[0], s[0] + 1, start_thr))
    for thr in sorted(set(c.end_thresholds)):
        edge = ("end", thr)
        out[edge] = {}
        _, e = _edge_indices(p[None], start_thr, thr)
        if e[0] > 0:
            brackets.append((edge, e[0] - 1, e[0], thr))
        elif e[0] < 0:  # 1. reach: extrapolate to the crossing, at most to the next coarse point
            t_new = _reach(g, coarse, t, p, thr)
            if t_new is not None:
                out[edge][t_new] = "reach"
    for edge, i, j, thr in brackets:  # 2. bisect (regula falsi, kept to the bracket's middle half)
        lo, hi = t[i], t[j]
        if hi - lo > precision:
            guess = lo + (hi - lo) * (p[i] - thr) / max(p[i] - p[j], 1e-12)
            guess = np.clip(guess, lo + (hi - lo) / 4, hi - (hi - lo) / 4)
            inside = g[(g > lo) & (g < hi)]
            if len(inside):
                out[edge][float(inside[np.argmin(np.abs(inside - guess))])] = "bisect"
    unmeasured = g[~np.isin(g, t)]
    if len(unmeasured) and len(t) >= 2:  # 3. verify: a crossing the full grid would see first
        v = np.interp(unmeasured, t, p)
        right = np.clip(np.searchsorted(t, unmeasured), 1, len(t) - 1)
        err = np.maximum(se[right - 1], se[right])
        for edge, i, _, thr in brackets:
            near = (unmeasured < t[i]) & (v - thr <= z * err)
            if max_verify is not None and near.sum() > max_verify:  # the likeliest crossings first
                order = np.argsort(np.where(near, (v - thr) / np.maximum(err, 1e-12), np.inf), kind="stable")
                near = np.zeros_like(near)
                near[order[:max_verify]] = True
            for x in unmeasured[near]:
                out[edge].setdefault(float(x), "verify")
    measured = set(t.tolist())
    return {edge: {x: kind for x, kind in ts.items() if x not in measured} for edge, ts in out.items()}


def _reach(g, coarse, t, p, thr):
    """The grid timestep where the curve, extrapolated from its top two points, reaches ``thr``.

    At least one grid step above the highest measured timestep and at most the next coarse
    timestep above it; ``None`` at the top of the grid.
    """
    top = t.max()
    up = g[g > top]
    if not len(up):
        return None
    cap = coarse[coarse > top]
    cap = cap[0] if len(cap) else up[-1]
    target = cap
    if len(t) >= 2:
        slope = (p[-1] - p[-2]) / (t[-1] - t[-2])
        if slope < 0:
            target = min(cap, top + (p[-1] - thr) / -slope)
    cands = up[up <= cap]
    return float(cands[np.argmin(np.abs(cands - target))])
