"""Retention curves, window edges and jump detection from forward–reverse counts.

Input is, per feature value, a count matrix over base samples and grid timesteps:
``kept[i, g]`` re-samples of base sample ``i`` restarted at training ``timestep``
``timesteps[g]`` kept the base sample's feature value, out of ``total[i, g]``.
Re-samples of one base sample are correlated, so every interval here comes from a
bootstrap over base samples (DESIGN.md, "The measurement"); a Wilson interval is used
only within a single base sample.

Edges follow THEORY.md, "Empirical window edges", with tolerance ``delta``:

- start (late-generation edge, small timestep, pairs with ``T_after``): the largest
  grid timestep ``t`` such that ``P(t') >= 1 - delta`` for every grid ``t' <= t``;
- end (early-generation edge, large timestep, pairs with ``T_before``): the smallest
  grid timestep ``t`` with ``P(t) <= floor + delta``, exactly as THEORY.md states it.

For a monotone curve the start is exactly THEORY.md's "largest t with P >= 1 - delta".
For a noisy, non-monotone curve the start is the last point of the run above threshold
that begins at the smallest timestep, so a stray bump far from the window cannot move
it. The end is the first crossing read toward more noise: the retention's tail
approaches the floor slowly and hovers near ``floor + delta``, so a rule that let
excursions in the tail move the end ("the final run below threshold") makes its
interval span the whole tail, while early dips below the threshold are rare where
retention is still high. An edge is ``None`` when the curve never crosses.
Grid points with no data (all totals 0) are skipped. The
start's run lies above ``1 - delta`` and the end at or below ``floor + delta``; whenever
``floor + delta < 1 - delta`` the end therefore lies after the run, so ``start < end``;
otherwise the window is undefined and both edges are ``None``. The bootstrap applies
the same rule to every resampled curve.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import ndtri

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
]


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


def base_fractions(kept, total):
    """``(kept / total, total > 0)`` [n_base, G]: each base sample's kept fraction (0 where it has no
    re-samples) and where it has any."""
    kept = np.asarray(kept, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    valid = total > 0
    return np.where(valid, kept / np.where(valid, total, 1), 0.0), valid


def mean_retention(kept, total) -> np.ndarray:
    """``P`` per grid point: the mean over base samples of ``kept / total`` [n_base, G]
    (base samples without counts there skipped; NaN where no base sample has any)."""
    frac, valid = base_fractions(kept, total)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, frac.sum(axis=0) / counts, np.nan)


def _edge_indices(curves: np.ndarray, start_thr: float, end_thr: float):
    """Grid indices of the start and end edges of each row of ``curves`` [B, G]; -1 = None."""
    nan = np.isnan(curves)
    with np.errstate(invalid="ignore"):
        above = (curves >= start_thr) | nan
        below = (curves <= end_thr) | nan
    # start: last non-missing point of the run above threshold from the smallest timestep
    run = np.logical_and.accumulate(above, axis=1) & ~nan
    G = curves.shape[1]
    idx = np.arange(G)
    start = np.where(run.any(axis=1), np.where(run, idx, -1).max(axis=1), -1)
    # end: first non-missing point at or below threshold (reading toward more noise); it
    # lies after the start's run, whose points are all above floor + delta < 1 - delta
    first = below & ~nan
    end = np.where(first.any(axis=1), np.where(first, idx, G).min(axis=1), -1)
    return start, end


def _edge_summary(edges_idx: np.ndarray, timesteps: np.ndarray, confidence: float):
    """Percentile interval (grid-valued: outward rounding) and None fraction of edges."""
    ok = edges_idx >= 0
    none_fraction = float(1.0 - ok.mean())
    if not ok.any():
        return None, none_fraction
    t = timesteps[edges_idx[ok]]
    a = (1.0 - confidence) / 2.0
    lo = float(np.quantile(t, a, method="lower"))
    hi = float(np.quantile(t, 1.0 - a, method="higher"))
    return (lo, hi), none_fraction


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
    seed: int = 0,              # seeds numpy's Generator; results reproducible bit for bit
) -> WindowEstimate:
    """Retention curve, its band and window edges (THEORY.md, "Empirical window edges").

    ``timesteps`` [G]: ascending training timesteps (floats allowed). ``kept``, ``total``
    [n_base, G]: counts per base sample and grid point; ``total == 0`` marks missing.
    ``P(t)`` is the mean over base samples of the per-base fractions, ignoring missing
    ones. Band and edge intervals: percentile bootstrap over base samples (the band is
    widened to cover the pooled Wilson interval, which matters where the bootstrap
    collapses because every re-sample agrees); with a single
    base sample the band is Wilson and the edges resample its re-samples (binomial).
    Edge rules for noisy curves: see the module docstring.

    Example::

        est = estimate_window([0, 250, 500, 750], kept, total, base_rate=0.1)   # kept, total: [n_base, 4]
        est.start_timestep, est.end_timestep, est.end_ci
    """
    floor = base_rate if floor is None else floor
    timesteps, kept, total = _check_inputs(
        timesteps, kept, total, base_rate, tolerance, floor, confidence, n_boot
    )
    n_base = kept.shape[0]
    retention = mean_retention(kept, total)

    rng = np.random.default_rng(seed)
    boot = bootstrap_retention(kept, total, n_boot, rng)
    if n_base > 1:
        a = (1.0 - confidence) / 2.0
        all_nan = np.isnan(boot).all(axis=0)
        safe = np.where(all_nan[None, :], 0.0, boot)
        ci_low = np.where(all_nan, np.nan, np.nanquantile(safe, a, axis=0))
        ci_high = np.where(all_nan, np.nan, np.nanquantile(safe, 1.0 - a, axis=0))
        # Where every re-sample agrees (retention 0 or 1) the bootstrap collapses to a point;
        # the Wilson interval of the pooled counts is the least an honest band must cover.
        w_lo, w_hi = wilson_interval(kept.sum(axis=0), total.sum(axis=0), confidence)
        ci_low = np.where(np.isnan(w_lo), ci_low, np.fmin(ci_low, w_lo))
        ci_high = np.where(np.isnan(w_hi), ci_high, np.fmax(ci_high, w_hi))
    else:
        ci_low, ci_high = wilson_interval(kept[0], total[0], confidence)

    start_thr, end_thr = 1.0 - tolerance, floor + tolerance
    if end_thr < start_thr:
        s_idx, e_idx = _edge_indices(retention[None, :], start_thr, end_thr)
        bs, be = _edge_indices(boot, start_thr, end_thr)
    else:  # thresholds overlap: no window is defined (see module docstring)
        s_idx = e_idx = np.array([-1])
        bs = be = np.full(n_boot, -1)
    start_ci, start_none = _edge_summary(bs, timesteps, confidence)
    end_ci, end_none = _edge_summary(be, timesteps, confidence)

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


def bootstrap_retention(kept, total, n_boot: int, rng) -> np.ndarray:
    """``n_boot`` bootstrap curves [n_boot, G] of `mean_retention` (NaN where a draw has no counts).

    Over base samples (each draw resamples the rows of ``kept``/``total`` [n_base, G]); with a
    single base sample, over its re-samples (binomial). ``rng``: a numpy Generator; the draws
    are a fixed function of it (bit for bit).
    """
    kept = np.asarray(kept, dtype=np.int64)
    total = np.asarray(total, dtype=np.int64)
    n_base, G = kept.shape
    frac, valid = base_fractions(kept, total)
    if n_base > 1:
        return weighted_curves(bootstrap_weights(n_base, n_boot, rng), frac, valid)
    p = np.where(valid[0], frac[0], 0.0)
    boot = rng.binomial(total[0][None, :], p[None, :], size=(n_boot, G)) / np.where(valid[0], total[0], 1)
    return np.where(valid[0][None, :], boot, np.nan)


def bootstrap_weights(n_base: int, n_boot: int, rng) -> np.ndarray:
    """[n_boot, n_base]: how often each base sample appears in each draw of `bootstrap_retention`."""
    idx = rng.integers(0, n_base, size=(n_boot, n_base))
    flat = (np.arange(n_boot)[:, None] * n_base + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n_base).reshape(n_boot, n_base).astype(float)


def weighted_curves(weights, frac, valid) -> np.ndarray:
    """Curves [n_boot, G]: per draw, the mean of the per-base fractions ``frac`` [n_base, G] with
    ``weights`` [n_boot, n_base], over the base samples ``valid`` there (NaN: none)."""
    # einsum without BLAS: a fixed summation order, hence bit-for-bit reproducible
    num = np.einsum("bi,ig->bg", weights, frac, optimize=False)
    den = np.einsum("bi,ig->bg", weights, np.asarray(valid, dtype=np.float64), optimize=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def edge_interval(timesteps, curves, start_threshold, end_threshold, side: str, confidence: float = 0.95):
    """The percentile interval (timesteps) of the ``side`` edge over bootstrap ``curves`` [n_boot, G]
    by the module's edge rules (None: no draw has the edge), as `estimate_window` reports it;
    curves [C, n_boot, G]: a list of C intervals."""
    curves = np.asarray(curves)
    t = np.asarray(timesteps, dtype=np.float64)
    start, end = _edge_indices(curves.reshape(-1, curves.shape[-1]), start_threshold, end_threshold)
    idx = (start if side == "start" else end).reshape(curves.shape[:-1])
    if curves.ndim == 2:
        return _edge_summary(idx, t, confidence)[0]
    return [_edge_summary(row, t, confidence)[0] for row in idx]


def edge_draws(timesteps, kept, total, start_threshold, end_threshold, *, n_boot: int, rng,
               confidence: float = 0.95, restarts_too: bool = False, boot=None):
    """One curve's edges, their bootstrap intervals and None fractions, by the module's edge rules.

    ``start_threshold`` (``1 - delta``) and ``end_threshold`` (``floor + delta``, or ``-inf``: no
    end); returns ``{"start": (index, (lo, hi) | None, none_fraction), "end": (...)}`` with the
    point estimate's index into ``timesteps`` (-1: no edge) and the interval in timesteps.
    ``restarts_too``: each draw also redraws every chosen base sample's re-samples (binomial,
    from its kept fraction with one pseudo re-sample at the pooled retention), so that a curve measured with few
    re-samples, or on very few base samples, cannot claim a narrow interval from the little it
    saw. What the adaptive search reads of the curve measured so far (`engine.allocation`).
    ``boot``: draws made before by `edge_bootstrap` (then ``n_boot``, ``rng`` and ``restarts_too``
    are not used), so that every threshold read from one curve shares them.
    """
    t = np.asarray(timesteps, dtype=np.float64)
    p = mean_retention(kept, total)
    if boot is None:
        boot = edge_bootstrap(kept, total, n_boot, rng, restarts_too=restarts_too)
    s, e = _edge_indices(p[None, :], start_threshold, end_threshold)
    bs, be = _edge_indices(boot, start_threshold, end_threshold)
    out = {}
    for side, point, draws in (("start", s, bs), ("end", e, be)):
        ci, none = _edge_summary(draws, t, confidence)
        out[side] = (int(point[0]), ci, none)
    return out


def edge_bootstrap(kept, total, n_boot: int, rng, *, restarts_too: bool = False) -> np.ndarray:
    """The bootstrap curves [n_boot, G] that `edge_draws` reads edges from (see there)."""
    if restarts_too:
        return _two_level_bootstrap(kept, total, n_boot, rng)
    return bootstrap_retention(kept, total, n_boot, rng)


def _two_level_bootstrap(kept, total, n_boot: int, rng) -> np.ndarray:
    """Curves [n_boot, G]: base samples drawn with replacement, then each one's re-samples redrawn."""
    kept = np.asarray(kept, dtype=np.int64)
    total = np.asarray(total, dtype=np.int64)
    n_base = kept.shape[0]
    idx = rng.integers(0, n_base, size=(n_boot, n_base))
    k = total[idx]                                       # [n_boot, n_base, G]
    pooled = (kept.sum(axis=0) + 0.5) / (total.sum(axis=0) + 1.0)
    f = (kept + pooled) / (total + 1.0)                  # one pseudo re-sample at the pooled retention
    x = rng.binomial(k, f[idx]) / np.maximum(k, 1)
    valid = k > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid.any(axis=1), np.where(valid, x, 0.0).sum(axis=1) / valid.sum(axis=1), np.nan)


def window_edges(timesteps, retention, floor: float, tolerance: float = 0.1):
    """``(start, end)`` training timesteps of one curve by the module's edge rules.

    No interval: for curves without counts (an ideal denoiser's, a mean of curves).
    ``None`` for an edge the curve never reaches, or both when the thresholds overlap.
    """
    t = np.asarray(timesteps, dtype=np.float64)
    p = np.asarray(retention, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"timesteps {t.shape} and retention {p.shape} must be equal 1-D shapes")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"timesteps must be strictly ascending, got {t.tolist()}")
    if floor + tolerance >= 1.0 - tolerance:
        return None, None
    s, e = _edge_indices(p[None, :], 1.0 - tolerance, floor + tolerance)
    return (None if s[0] < 0 else float(t[s[0]])), (None if e[0] < 0 else float(t[e[0]]))


def jump_window(timesteps, retention, *, rise: float = 0.5, drop: float = -0.3):
    """The paper's LM jump criterion (THEORY.md, end of "Empirical window edges").

    Read the grid toward less noise (decreasing training timestep): a window is a rise
    of retention by more than ``rise`` between consecutive grid points, provided no
    change anywhere is below ``drop``. Returns ``(upper, lower)`` timesteps of the
    largest rise, or ``None``. Grid points with NaN retention are skipped.
    """
    t = np.asarray(timesteps, dtype=np.float64)
    p = np.asarray(retention, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"timesteps {t.shape} and retention {p.shape} must be equal 1-D shapes")
    ok = ~np.isnan(p)
    t, p = t[ok], p[ok]
    if t.size < 2:
        return None
    order = np.argsort(t)[::-1]  # decreasing timestep: the direction of generation
    t, p = t[order], p[order]
    change = np.diff(p)  # change[i]: from t[i] to the less noisy t[i + 1]
    if change.min() < drop or change.max() <= rise:
        return None
    i = int(np.argmax(change))
    return float(t[i]), float(t[i + 1])


def edge_interval_widths(estimate: WindowEstimate):
    """Widths, in timesteps, of the ranges where each edge's crossing may lie.

    The true crossing of the start lies between the start and the next grid timestep
    above it, of the end between the previous grid timestep and the end, so each
    bootstrap interval is widened by the grid's resolution on that side. Returns
    ``(start_width, end_width)``; ``None`` for an edge without interval. Used by the
    adaptive search to decide where to refine the grid.
    """
    t = np.asarray(estimate.timesteps, dtype=np.float64)

    def width(ci, side):
        if ci is None:
            return None
        lo, hi = ci
        if side > 0:
            above = t[t > hi]
            hi = float(above[0]) if above.size else hi
        else:
            below = t[t < lo]
            lo = float(below[-1]) if below.size else lo
        return float(hi - lo)

    return width(estimate.start_ci, +1), width(estimate.end_ci, -1)
