"""Retention curves with bootstrap bands and window edges with intervals: `estimate_window`.

Input is, per feature value, a count matrix over base samples and grid timesteps:
``kept[i, g]`` re-samples of base sample ``i`` restarted at training ``timestep``
``timesteps[g]`` kept the base sample's feature value, out of ``total[i, g]``. The edge rules
are `analysis.edges`' (THEORY.md, "Empirical window edges"), the draws `analysis.bootstrap`'s;
this module re-exports both, so ``from diffusion_windows.analysis.windows import X`` works for
every name of its ``__all__``. A Wilson interval is used only within a single base sample.

What an edge interval means. The quantity estimated is the edge of the retention curve of
the model's own population on this grid: with ``R(t)`` the probability that a restart at ``t``
of a base sample drawn from the model keeps its value (averaged over the model's base samples
of that value) and ``w`` the value's share of the model's samples (nested: its share of its
parent's), the start is the last grid timestep of ``R >= 1 - delta`` from ``t = 0`` and the end
the first grid timestep with ``R <= w + delta``. The 95% interval resamples the run's base
samples: the value's base samples with their re-samples (the clustered design: a base sample's
re-samples are not independent), and, for the end, the floor ``w`` as well (the value's share
of the drawn base samples, ``floor_bases``), so that the floor's error, which moves the end's
threshold, is inside the interval. It covers that population edge about 95% of the time
(``benchmarks/bench_calibration.py`` measures it on the exact models); it does not cover
  - the theory's ``T_after``/``T_before`` or an ideal denoiser's edge: a trained model, or a
    sampler with few steps, has a population curve of its own (a large run measures it);
  - an edge between grid timesteps: edges and intervals are grid timesteps; the true crossing
    of the continuous curve lies within one grid step before the end (after the start);
  - the classifier's errors: labels are taken as given.
With ``grid`` (``--timesteps auto``), where ``timesteps`` is a subset of ``grid``, an edge is
still reported at a measured timestep, and its interval also spans the unmeasured grid
timesteps its crossing may lie in (`analysis.edges`), so that it covers the full grid's edge.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import ndtri

from .bootstrap import (bootstrap_retention, bootstrap_seed, bootstrap_weights, edge_bootstrap, edge_draws,
                        floor_draws, weighted_curves)
from .edges import (_edge_indices, _edge_summary, base_fractions, edge_indices, edge_interval, edge_interval_widths,
                    edge_summary, end_summary, jump_window, mean_retention, window_edges)

__all__ = [
    "WindowEstimate",
    "wilson_interval",
    "estimate_window",
    "mean_retention",
    "base_fractions",
    "jump_window",
    "window_edges",
    "edge_interval_widths",
    "bootstrap_retention",
    "edge_draws",
    "edge_bootstrap",
    "edge_interval",
    "bootstrap_weights",
    "weighted_curves",
    "bootstrap_seed",
    "floor_draws",
    "edge_indices",
    "edge_summary",
]
_ = (_edge_indices, _edge_summary)  # still importable from here (engine.adaptive imports one)


@dataclasses.dataclass(frozen=True)
class WindowEstimate:
    """A retention curve with a bootstrap band and its window edges.

    Times are training timesteps. ``ci_low``/``ci_high`` bound the retention per grid
    point; ``start_ci``/``end_ci`` are percentile intervals of the edges over a
    bootstrap over base samples, computed from the draws where the edge exists;
    ``*_none_fraction`` is the fraction of draws where it does not. ``jump`` is the
    paper's LM jump criterion, ``(upper, lower)`` timesteps, or ``None``.
    """

    timesteps: tuple[float, ...]
    retention: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    n_base: int
    n_resamples: int  # re-samples in all, over base samples and grid points
    base_rate: float
    floor: float
    tolerance: float
    confidence: float
    start_timestep: float | None
    start_ci: tuple[float, float] | None
    end_timestep: float | None
    end_ci: tuple[float, float] | None
    start_none_fraction: float
    end_none_fraction: float
    jump: tuple[float, float] | None

    def to_dict(self) -> dict:
        """JSON-ready dict: tuples become lists, NaN becomes ``None``."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowEstimate":
        """Inverse of :meth:`to_dict` (``None`` in curves reads back as NaN)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: d[k] for k in names}
        for k in ("timesteps", "retention", "ci_low", "ci_high"):
            kw[k] = tuple(math.nan if v is None else float(v) for v in kw[k])
        for k in ("start_ci", "end_ci", "jump"):
            kw[k] = None if kw[k] is None else tuple(float(v) for v in kw[k])
        return cls(**kw)


def _jsonable(v):
    if isinstance(v, (tuple, list, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


def wilson_interval(k, n, confidence: float = 0.95):
    """Wilson score interval for ``k`` successes out of ``n`` (vectorised).

    Returns ``(low, high)`` arrays (floats for scalar input); NaN where ``n == 0``.
    Use it only within one base sample: pooled over base samples it ignores clustering.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = ndtri(0.5 + confidence / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    low = np.where(n > 0, low, np.nan)
    high = np.where(n > 0, high, np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def _check_inputs(timesteps, kept, total, base_rate, tolerance, floor, confidence, n_boot):
    timesteps = np.asarray(timesteps, dtype=np.float64)
    if timesteps.ndim != 1 or timesteps.size == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D array, got shape {timesteps.shape}")
    if np.any(np.diff(timesteps) <= 0):
        raise ValueError(f"timesteps must be strictly ascending, got {timesteps.tolist()}")
    kept = np.asarray(kept)
    total = np.asarray(total)
    if kept.ndim == 1:
        kept, total = kept[None], total[None]
    if kept.shape != total.shape or kept.ndim != 2 or kept.shape[1] != timesteps.size:
        raise ValueError(
            f"kept {kept.shape} and total {total.shape} must both be [n_base, {timesteps.size}]"
        )
    if kept.shape[0] == 0:
        raise ValueError("kept has no base samples (n_base = 0)")
    if np.any(kept < 0) or np.any(kept > total):
        raise ValueError("counts must satisfy 0 <= kept <= total")
    if not 0.0 <= base_rate <= 1.0:
        raise ValueError(f"base_rate must be in [0, 1], got {base_rate!r}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    return timesteps, kept.astype(np.int64), total.astype(np.int64)


def estimate_window(
    timesteps,
    kept,
    total,
    base_rate: float,
    *,
    tolerance: float = 0.1,     # delta of THEORY.md: retention tolerance at both edges
    floor: float | None = None,  # retention's floor; base_rate, or w(S_after)/w(S_before) nested
    confidence: float = 0.95,   # level of every interval
    n_boot: int = 1000,         # bootstrap draws over base samples
    seed=0,                     # an int or a sequence of ints (`bootstrap_seed`): numpy's Generator
    floor_bases: int | None = None,  # base samples the floor is a share of: redrawn in each end draw
    grid=None,                  # the full grid `timesteps` is a subset of (--timesteps auto)
) -> WindowEstimate:
    """Retention curve, its band and window edges (THEORY.md, "Empirical window edges").

    ``timesteps`` [G]: ascending training timesteps (floats allowed). ``kept``, ``total``
    [n_base, G]: counts per base sample and grid point; ``total == 0`` marks missing.
    ``P(t)`` is the mean over base samples of the per-base fractions, ignoring missing
    ones. Band and edge intervals: percentile bootstrap over base samples (the band is
    widened to cover the pooled Wilson interval, which matters where the bootstrap
    collapses because every re-sample agrees); with a single
    base sample the band is Wilson and the edges resample its re-samples (binomial).
    With ``floor_bases`` (the floor is the value's share of that many base samples: the
    feature's, or nested, the parent's) each end draw reads its edge against its own redrawn
    floor (`analysis.bootstrap.floor_draws`); without it the floor is held fixed, as for a floor
    known exactly. With ``grid``, intervals span the unmeasured grid timesteps an edge's
    crossing may lie in. What the interval covers: the module docstring.
    Edge rules for noisy curves: `analysis.edges`.

    Example::

        est = estimate_window([0, 250, 500, 750], kept, total, base_rate=0.1)   # kept, total: [n_base, 4]
        est.start_timestep, est.end_timestep, est.end_ci
    """
    floor = base_rate if floor is None else floor
    timesteps, kept, total = _check_inputs(
        timesteps, kept, total, base_rate, tolerance, floor, confidence, n_boot
    )
    if floor_bases is not None and int(floor_bases) < 1:
        raise ValueError(f"floor_bases must be >= 1 or None, got {floor_bases!r}")
    if grid is not None:
        grid = np.asarray(grid, dtype=np.float64)
        if not np.isin(timesteps, grid).all():
            raise ValueError(f"timesteps {timesteps.tolist()} are not all on the grid {grid.tolist()}")
    n_base = kept.shape[0]
    retention = mean_retention(kept, total)

    rng = np.random.default_rng(seed)
    boot = bootstrap_retention(kept, total, n_boot, rng)
    # the pooled re-samples' Wilson interval: the least an honest band must cover where the bootstrap
    # collapses (every re-sample agrees), and what a sure end's point must lie under too (analysis.edges)
    w_lo, w_hi = wilson_interval(kept.sum(axis=0), total.sum(axis=0), confidence)
    if n_base > 1:
        a = (1.0 - confidence) / 2.0
        all_nan = np.isnan(boot).all(axis=0)
        safe = np.where(all_nan[None, :], 0.0, boot)
        ci_low = np.where(all_nan, np.nan, np.nanquantile(safe, a, axis=0))
        ci_high = np.where(all_nan, np.nan, np.nanquantile(safe, 1.0 - a, axis=0))
        ci_low = np.where(np.isnan(w_lo), ci_low, np.fmin(ci_low, w_lo))
        ci_high = np.where(np.isnan(w_hi), ci_high, np.fmax(ci_high, w_hi))
    else:  # one base sample: its own re-samples' interval
        ci_low, ci_high = w_lo, w_hi

    start_thr, end_thr = 1.0 - tolerance, floor + tolerance
    if end_thr < start_thr:
        s_idx, e_idx = edge_indices(retention[None, :], start_thr, end_thr)
        bs, be = edge_indices(boot, start_thr, end_thr)
        draw_thr = np.full(n_boot, end_thr)
        if floor_bases is not None:  # each end draw against its own floor (analysis.bootstrap)
            draw_thr = floor_draws(floor, floor_bases, n_boot, rng) + tolerance
            be = np.where(draw_thr < start_thr, edge_indices(boot, start_thr, draw_thr)[1], -1)
    else:  # thresholds overlap: no window is defined (analysis.edges)
        s_idx = e_idx = np.array([-1])
        bs = be = np.full(n_boot, -1)
        draw_thr = np.full(n_boot, -np.inf)
    measured = ~np.isnan(retention)
    start_ci, start_none = edge_summary(bs, timesteps, confidence, side="start", grid=grid, measured=measured)
    end_ci, end_none = end_summary(be, boot, draw_thr, int(e_idx[0]), timesteps, confidence, grid=grid,
                                   measured=measured, upper=w_hi, cut=end_thr)

    def _t(i):
        return None if i < 0 else float(timesteps[i])

    return WindowEstimate(
        timesteps=tuple(float(t) for t in timesteps),
        retention=tuple(float(v) for v in retention),
        ci_low=tuple(float(v) for v in ci_low),
        ci_high=tuple(float(v) for v in ci_high),
        n_base=int(n_base),
        n_resamples=int(total.sum()),
        base_rate=float(base_rate),
        floor=float(floor),
        tolerance=float(tolerance),
        confidence=float(confidence),
        start_timestep=_t(int(s_idx[0])),
        start_ci=start_ci,
        end_timestep=_t(int(e_idx[0])),
        end_ci=end_ci,
        start_none_fraction=start_none,
        end_none_fraction=end_none,
        jump=jump_window(timesteps, retention),
    )
