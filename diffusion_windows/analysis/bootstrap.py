"""Bootstrap draws of a retention curve, its floor and its edges (what every interval here is read from).

Re-samples of one base sample are correlated, so intervals come from a bootstrap over base
samples (DESIGN.md, "The measurement"): each draw resamples a value's base samples with
replacement (`bootstrap_weights`, `weighted_curves`); with a single base sample, its re-samples
(binomial). The floor an end is read against is estimated from the same run: the value's share
``k / n`` of the ``n`` base samples of its feature (nested: of its parent's). A bootstrap over
*all* those base samples draws ``k* ~ Binomial(n, k / n)`` of them from the value, and, given
``k*``, resamples the value's own base samples; the curve's mean does not depend on ``k*``
(only its spread, by a factor ``k / k*`` in variance, second order), so `floor_draws` redraws the
floor as ``k* / n`` beside each curve draw: every end is read against its own draw's threshold
``floor* + delta`` (`edge_indices` with one threshold per draw).

Seeds: `bootstrap_seed(seed, *identity)` derives one record's stream from the run seed and the
record's identity (feature, value, parent), so records and runs draw independently and every
interval is reproducible bit for bit.

`edge_draws` and `edge_bootstrap` are what the adaptive search reads of a curve measured so far
(`engine.allocation`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from .edges import base_fractions, edge_indices, edge_summary, mean_retention

__all__ = ["bootstrap_seed", "bootstrap_retention", "bootstrap_weights", "weighted_curves", "floor_draws",
           "edge_draws", "edge_bootstrap"]


def bootstrap_seed(seed: int, *identity) -> int:
    """A 63-bit seed from the run seed and a record's identity (its feature, value, parent), stable
    across runs, processes and machines.

    Example::

        np.random.default_rng(bootstrap_seed(0, "digit", "3", None))
    """
    text = repr((int(seed),) + tuple(None if i is None else str(i) for i in identity))
    return int.from_bytes(hashlib.sha256(("bootstrap" + text).encode()).digest()[:8], "little") >> 1


def floor_draws(floor: float, floor_bases: int | None, n_boot: int, rng) -> np.ndarray:
    """[n_boot] floors of a bootstrap over all ``floor_bases`` base samples the floor is a share of:
    ``Binomial(floor_bases, floor) / floor_bases`` (module docstring); ``floor`` itself when
    ``floor_bases`` is None (a floor known exactly)."""
    if floor_bases is None:
        return np.full(n_boot, float(floor))
    n = int(floor_bases)
    return rng.binomial(n, min(max(float(floor), 0.0), 1.0), size=n_boot) / n


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
    s, e = edge_indices(p[None, :], start_threshold, end_threshold)
    bs, be = edge_indices(boot, start_threshold, end_threshold)
    out = {}
    for side, point, draws in (("start", s, bs), ("end", e, be)):
        ci, none = edge_summary(draws, t, confidence)
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
