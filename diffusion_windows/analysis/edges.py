"""Curves and window edges: the mean retention of a value's base samples and the edge rules.

``kept[i, g]`` re-samples of base sample ``i`` restarted at training ``timestep``
``timesteps[g]`` kept the base sample's feature value, out of ``total[i, g]``; the retention
``P`` is the mean over base samples of their kept fractions (`mean_retention`).

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
otherwise the window is undefined and both edges are ``None``. Bootstrap draws
(`analysis.bootstrap`) are read by the same rule, each end against its own threshold when
the floor is redrawn too.

An edge interval is a percentile interval of the draws' edges, rounded outward onto the
grid. On a partly measured grid (``--timesteps auto``: ``timesteps`` a subset of ``grid``) a
draw's crossing at a measured timestep may lie, on the full grid, anywhere in the unmeasured
stretch before it (end) or after it (start): each draw then counts from the first grid
timestep past the previous measured one (end), or up to the last grid timestep before the
next measured one (start), and the interval spans those. An end draw that crosses at no measured
timestep (its floor redrawn low, or its curve high) is not dropped: its end lies past the last
measured timestep, so it counts from the first grid timestep past that one up to the grid's top
(at the top on a fully measured grid); dropping such draws would cut the interval's upper end
exactly where the data are thinnest. The start's None draws (no run above ``1 - delta`` from the
smallest timestep: no window in that draw) are left out, as before.

An end interval also reaches, at least, the first measured timestep at or after the point estimate's
end that ``1 - (1 - confidence) / 2`` of the draws put at or below their own threshold (`sure_end`;
none: past the last measured timestep, as above). The end is the *first* crossing: where the curve
hovers near ``floor + delta`` over several timesteps, one of them dips below it by chance more often
than any single one does, and the percentile interval of the draws, which repeat the same dip, stops
there, before the population curve crosses (on the mixture's exact curves, auto's one-re-sample points
left 12% of the group ends' intervals short that way, against a tail of 2.5%). A timestep the draws put
below the threshold at that level bounds the end from above whatever dipped before it, provided the
Wilson interval of its pooled re-samples (at the same confidence) also lies at or below
``floor + delta``: where a few base samples with one re-sample each all lost the value, every draw
agrees and the bootstrap alone would call the point sure (the story language's genres: about 7 base
samples, with 1 re-sample at most of their timesteps under ``--timesteps auto``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["base_fractions", "mean_retention", "window_edges", "jump_window", "edge_interval",
           "edge_interval_widths", "edge_indices", "edge_summary", "end_summary", "sure_end", "below_share"]


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


def edge_indices(curves: np.ndarray, start_thr, end_thr):
    """Grid indices of the start and end edges of each row of ``curves`` [B, G]; -1 = None.

    ``end_thr``: one threshold, or one per row [B] (each draw's own floor + delta)."""
    nan = np.isnan(curves)
    end_thr = np.asarray(end_thr, dtype=np.float64)
    if end_thr.ndim == 1:
        end_thr = end_thr[:, None]
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


_edge_indices = edge_indices  # the name other modules imported


def edge_summary(edges_idx: np.ndarray, timesteps: np.ndarray, confidence: float, *, side: str | None = None,
                 grid=None, measured=None):
    """Percentile interval (grid-valued: outward rounding) and None fraction of edges.

    ``grid``: the full grid ``timesteps`` is a subset of, ``side``: "start" or "end", ``measured``
    [G] bool (default: all): the timesteps with data; then each draw's edge spans the unmeasured
    grid timesteps on its side (module docstring)."""
    ok = edges_idx >= 0
    none_fraction = float(1.0 - ok.mean())
    if not ok.any():
        return None, none_fraction
    timesteps = np.asarray(timesteps, dtype=np.float64)
    lo_t = hi_t = timesteps[edges_idx[ok]]
    if grid is not None:
        lo_t, hi_t = _gap_spans(edges_idx[ok], timesteps, side, np.asarray(grid, dtype=np.float64), measured)
    if side == "end" and not ok.all():  # draws crossing at no measured timestep: past the last one
        lo_n, hi_n = _past_measured(timesteps, grid, measured)
        lo_t = np.concatenate([lo_t, np.full(int((~ok).sum()), lo_n)])
        hi_t = np.concatenate([hi_t, np.full(int((~ok).sum()), hi_n)])
    a = (1.0 - confidence) / 2.0
    lo = float(np.quantile(lo_t, a, method="lower"))
    hi = float(np.quantile(hi_t, 1.0 - a, method="higher"))
    return (lo, hi), none_fraction


_edge_summary = edge_summary


def below_share(boot, thresholds) -> np.ndarray:
    """Per point [G]: the share of the draws ``boot`` [n_boot, G] at or below their end threshold
    (``thresholds``: one, or one per draw [n_boot]); a NaN point counts as never below."""
    boot = np.asarray(boot, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.mean(boot <= (thr[:, None] if thr.ndim == 1 else thr), axis=0)


def sure_end(boot, thresholds, first: int, level: float, upper=None, cut=None) -> int:
    """Index of the first point at or after ``first`` that at least ``level`` of the draws ``boot``
    [n_boot, G] put at or below their end threshold (``thresholds``: one, or one per draw); -1: none.
    With ``upper`` [G] (each point's upper confidence bound: the Wilson interval's of its pooled
    re-samples, `analysis.windows.wilson_interval`), a sure point's bound must also lie at or below
    ``cut``. NaN points (no data) are never sure."""
    ok = below_share(boot, thresholds) >= level
    if upper is not None:
        with np.errstate(invalid="ignore"):
            ok &= np.asarray(upper, dtype=np.float64) <= cut
    sure = np.flatnonzero(ok[max(int(first), 0):])
    return int(sure[0]) + max(int(first), 0) if sure.size else -1


def end_summary(draws_idx, boot, thresholds, point: int, timesteps, confidence: float, *, grid=None, measured=None,
                upper=None, cut=None, sure=None):
    """An end's interval and None fraction (module docstring): the percentile interval of the draws'
    ends (`edge_summary`), reaching at least the first timestep at or after ``point`` (the point
    estimate's end index; -1: none) that the draws put below their thresholds at level
    ``1 - (1 - confidence) / 2`` and whose ``upper`` bound lies at or below ``cut`` (`sure_end`), or past
    the last measured timestep when none is. ``sure``: that timestep's index, when the caller has it."""
    ci, none = edge_summary(draws_idx, timesteps, confidence, side="end", grid=grid, measured=measured)
    if ci is None or point < 0:
        return ci, none
    j = sure_end(boot, thresholds, point, 1.0 - (1.0 - confidence) / 2.0, upper, cut) if sure is None else sure
    hi = float(np.asarray(timesteps, dtype=np.float64)[j]) if j >= 0 else _past_measured(
        np.asarray(timesteps, dtype=np.float64), grid, measured)[1]
    return (ci[0], max(ci[1], hi)), none


def _past_measured(timesteps, grid, measured):
    """Where an end that crosses at no measured timestep may lie: from the first grid timestep past the
    last measured one to the grid's top (on a fully measured grid both are its top: at or past it)."""
    have = np.ones(timesteps.size, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    last = timesteps[have][-1] if have.any() else timesteps[-1]
    if grid is None:
        return last, last
    grid = np.asarray(grid, dtype=np.float64)
    past = grid[grid > last]
    return (past[0], grid[-1]) if past.size else (last, last)


def _gap_spans(idx, timesteps, side, grid, measured):
    """Per edge index: the range of full-grid timesteps its crossing may lie in (module docstring)."""
    t = timesteps[idx]
    have = np.ones(timesteps.size, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    pos = np.flatnonzero(have)
    if side == "end":  # crossing in (previous measured timestep, t]: from the first grid point past it
        k = np.searchsorted(pos, idx) - 1
        prev = np.where(k >= 0, timesteps[pos[np.maximum(k, 0)]], -np.inf)
        lo = grid[np.searchsorted(grid, prev, side="right")]
        return np.minimum(lo, t), t
    if side == "start":  # last point above threshold in [t, next measured timestep)
        k = np.searchsorted(pos, idx, side="right")
        nxt = np.where(k < pos.size, timesteps[pos[np.minimum(k, pos.size - 1)]], np.inf)
        hi = grid[np.searchsorted(grid, nxt, side="left") - 1]
        return t, np.maximum(hi, t)
    raise ValueError(f"side must be 'start' or 'end' with a grid, got {side!r}")


def edge_interval(timesteps, curves, start_threshold, end_threshold, side: str, confidence: float = 0.95):
    """The percentile interval (timesteps) of the ``side`` edge over bootstrap ``curves`` [n_boot, G]
    by the module's edge rules (None: no draw has the edge), as `estimate_window` reports it;
    curves [C, n_boot, G]: a list of C intervals. ``end_threshold``: one, or one per draw [n_boot]."""
    curves = np.asarray(curves)
    t = np.asarray(timesteps, dtype=np.float64)
    end_threshold = np.asarray(end_threshold, dtype=np.float64)
    if end_threshold.ndim == 1 and curves.ndim == 3:
        end_threshold = np.tile(end_threshold, curves.shape[0])
    start, end = edge_indices(curves.reshape(-1, curves.shape[-1]), start_threshold, end_threshold)
    idx = (start if side == "start" else end).reshape(curves.shape[:-1])
    if curves.ndim == 2:
        return edge_summary(idx, t, confidence)[0]
    return [edge_summary(row, t, confidence)[0] for row in idx]


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
    s, e = edge_indices(p[None, :], 1.0 - tolerance, floor + tolerance)
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
