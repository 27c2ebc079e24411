"""Critical windows of the story language under re-masking (THEORY.md, "Masked diffusion").

The forward process masks each response token independently with probability ``t`` (the
*fraction masked*, ``t = 0`` the whole response, ``t = 1`` all masked). The mask pattern is
independent of the content and the cues are exchangeable, so with probability ``1 - t`` the
ending (the genre) is kept, and otherwise the kept cues are ``K ~ Binomial(M, 1 - t)`` i.i.d.
draws from ``q_G``; with `theory.story_sums`' truncation sums ``R_g(k)``, ``TV_k``:

- retention ``R^mask_g(t) = (1 - t) + t sum_k Binomial(k; M, 1 - t) R_g(k)``;
- ``TV(p_t^A, p_t^B) = (1 - t) TV_end + t sum_k Binomial(k; M, 1 - t) TV_k``, ``TV_end`` the TV of
  the genre laws (1 for disjoint A, B).

End-of-sequence tokens carry nothing about the genre and drop out. TV is continuous and
nonincreasing in ``t`` (more masking is a garbling of less), so Def. 4's ``T_after`` and
``T_before`` are roots, found by bisection to 1e-9. Times are fractions masked. numpy/scipy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .predict import _feature_items
from .story import StoryLanguage, story_features
from .story_sums import _mix, retention, tv
from .text import story_records, window_sets
from .thresholds import _eps_from_delta

__all__ = ["retention_masked", "tv_masked", "critical_window_masked", "MaskedWindow", "predict_masked_windows"]


def _fractions(t) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if np.any(~np.isfinite(t)) or np.any(t < 0) or np.any(t > 1):
        raise ValueError(f"fractions masked must lie in [0, 1], got {t!r}")
    return t


def _binomial_mix(language: StoryLanguage, per_k: np.ndarray, end: float, t: np.ndarray) -> np.ndarray:
    """(1 - t) end + t sum_k Binomial(k; M, 1 - t) per_k[k], for every t."""
    m = int(language.num_cues)
    pmf = stats.binom.pmf(np.arange(m + 1)[None, :], m, 1.0 - t[:, None])   # [T, M + 1]
    return (1.0 - t) * end + t * (pmf @ per_k)


def retention_masked(language: StoryLanguage, value, t) -> np.ndarray:
    """Exact retention ``R^mask_S(t)`` (module docstring) of the value ``S`` (genre labels) at fractions
    masked ``t`` (array): the posterior mass of ``S`` given the kept tokens of a response of ``p^S``."""
    t = _fractions(t)
    per_k = retention(language, value, np.arange(language.num_cues + 1))
    return _binomial_mix(language, per_k, 1.0, t)


def tv_masked(language: StoryLanguage, a, b, t) -> np.ndarray:
    """Exact ``TV(p_t^A, p_t^B)`` between the laws of the re-masked responses of genre sets A and B at
    fractions masked ``t`` (array)."""
    t = _fractions(t)
    per_k = tv(language, a, b, np.arange(language.num_cues + 1))
    end = 0.5 * float(np.abs(_mix(language, a) - _mix(language, b)).sum())
    return _binomial_mix(language, per_k, end, t)


def _tv_function(language, a, b):
    per_k = tv(language, a, b, np.arange(language.num_cues + 1))
    end = 0.5 * float(np.abs(_mix(language, a) - _mix(language, b)).sum())
    return lambda t: float(_binomial_mix(language, per_k, end, np.array([float(t)]))[0])


def _last_at_least(f, level) -> float:
    """sup{t in [0, 1] : f(t) >= level} for f nonincreasing; nan when f(0) < level."""
    if f(0.0) < level:
        return np.nan
    if f(1.0) >= level:
        return 1.0
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-9:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) >= level else (lo, mid)
    return lo


def _first_at_most(f, level) -> float:
    """inf{t in [0, 1] : f(t) <= level} for f nonincreasing; nan when f(1) > level."""
    if f(1.0) > level:
        return np.nan
    if f(0.0) <= level:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-9:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if f(mid) <= level else (mid, hi)
    return hi


def critical_window_masked(language: StoryLanguage, after, before=None, eps=0.05, *, eps_before=None) -> tuple:
    """Def. 4 (the paper) for the masking process, in fractions masked: ``(T_after, T_before,
    T_start(S_before))``.

    ``T_after = sup{t : TV(p_t^{S_after}, p_t^{rest}) >= 1 - eps^2}``; ``T_before = inf{t :
    TV(p_t^{S_after}, p_t^{S_before}) <= eps_b and TV(p_t^{S_before}, p_t^{rest of S_before}) >= 1 -
    eps_b^2}`` (the second void when ``before`` is None, every genre); ``T_start`` = sup of the second
    set (inf for every genre). nan: the defining set is empty.
    """
    eps_b, s_a, s_b, rest_a, rest_b = window_sets(language, after, before, eps, eps_before)
    t_after = _last_at_least(_tv_function(language, s_a, rest_a), 1 - eps ** 2)
    t_start = _last_at_least(_tv_function(language, s_b, rest_b), 1 - eps_b ** 2) if len(rest_b) else np.inf
    t1 = _first_at_most(_tv_function(language, s_a, s_b), eps_b)
    t_before = t1 if np.isfinite(t1) and t1 <= t_start else np.nan
    return float(t_after), float(t_before), float(t_start)


@dataclass(frozen=True)
class MaskedWindow:
    """Theory for one feature value (or a value inside a coarser one) of the story language under
    re-masking; times in fractions masked. As `theory.text.TextWindow`: S_after = the value's genres,
    S_before = every genre or the parent value, each side with its own eps from delta."""

    feature: str
    value: str
    labels: tuple
    parent_feature: str | None
    parent_value: str | None
    parent_labels: tuple | None
    t_after: float             # Def. 4 T_after at eps_after, fraction masked
    t_before: float            # Def. 4 T_before at eps_before
    t_start_before: float      # T_start(S_before) at eps_before (inf for every genre)
    window_exists: bool        # t_after < t_before, both finite
    eps_after: float
    eps_before: float
    delta_after: float
    delta_before: float
    w_after: float
    w_before: float
    base_rate: float           # w(S_after) / w(S_before)
    fractions: tuple           # where ideal_retention is given
    ideal_retention: tuple     # R^mask_{S_after} at fractions (exact)


def predict_masked_windows(language: StoryLanguage, features=None, *, delta=0.1, fractions=(0.0, 0.5, 1.0)) -> list:
    """Predicted windows under re-masking for every feature value, then every value nested in a value of
    another feature -> list of `MaskedWindow` (the order of `theory.text.predict_text_windows`)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    fr = tuple(float(f) for f in _fractions(fractions))
    out = []
    for r in story_records(language, features, delta):
        s_a = r.s_after
        t_a, t_b, t_s = critical_window_masked(language, s_a, r.parent_labels, r.eps_after,
                                               eps_before=r.eps_before)
        out.append(MaskedWindow(
            feature=r.feature, value=r.value, labels=tuple(int(i) for i in s_a), parent_feature=r.parent_feature,
            parent_value=r.parent_value, parent_labels=r.parent_labels, t_after=t_a, t_before=t_b,
            t_start_before=t_s, window_exists=bool(np.isfinite(t_a) and np.isfinite(t_b) and t_a < t_b),
            eps_after=r.eps_after, eps_before=r.eps_before, delta_after=float(delta), delta_before=float(delta),
            w_after=r.w_after, w_before=r.w_before, base_rate=r.base_rate,
            fractions=fr, ideal_retention=tuple(float(x) for x in retention_masked(language, s_a, fr))))
    return out
