"""Critical windows (the paper, Def. 4) of truncation in the story language (THEORY.md,
"Autoregressive models"): thresholds in tokens removed and in fractions, per-feature predictions.

The language itself (words, laws, posterior, the truncation time) is `theory.story`, its exact
retention and TV `theory.story_sums`; both are re-exported here, the one place to import the
story-language theory from. Thresholds are given in tokens removed (integers, the natural unit)
and in fractions: on the fraction process `t -> kept_tokens(t, L)` a sup over `{r <= r*}` tokens
removed is `(r* + 0.5) / L` (not attained) and an inf over `{r >= r*}` is `(r* - 0.5) / L`.
numpy/scipy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .predict import _feature_items
from .story import (DEFAULT_FRACTIONS, StoryLanguage, class_counts, kept_tokens, next_word_probs, posterior,
                    posterior_from_counts, removed_tokens, story_features)
from .story_sums import response_entropy, retention, retention_mc, tv
from .thresholds import _eps_from_delta

__all__ = [
    "StoryLanguage",
    "TextWindow",
    "DEFAULT_FRACTIONS",
    "kept_tokens",
    "removed_tokens",
    "story_features",
    "class_counts",
    "posterior",
    "posterior_from_counts",
    "next_word_probs",
    "response_entropy",
    "retention",
    "retention_mc",
    "tv",
    "critical_window_tokens",
    "predict_text_windows",
]


# ---------------------------------------------------------------- Def. 4 in tokens removed

def _rest(language, s):
    return np.setdiff1d(np.arange(len(language.genre_names)), language.labels(s))


def window_sets(language, after, before, eps, eps_before):
    """Def. 4's checked inputs, shared by truncation and masking: ``(eps_b, S_after, S_before, rest of
    S_after, rest of S_before)`` as genre indices (``before`` None: every genre)."""
    eps_b = eps if eps_before is None else eps_before
    for e in (eps, eps_b):
        if not 0 < e < 1:
            raise ValueError(f"eps must lie in (0, 1), got {e!r}")
    everything = np.arange(len(language.genre_names))
    s_after = language.labels(after)
    s_before = everything if before is None else language.labels(before)
    if not np.isin(s_after, s_before).all():
        raise ValueError("after must be a subset of before")
    rest_a, rest_b = _rest(language, s_after), _rest(language, s_before)
    if len(rest_a) == 0:
        raise ValueError("after covers every genre: no feature to decide")
    return eps_b, s_after, s_before, rest_a, rest_b


@dataclass(frozen=True)
class StoryRecord:
    """One feature value of a story language with Def. 4's inputs, shared by truncation and masking:
    its genres ``s_after``, its parent's (``s_before``; every genre when it has no parent), the
    rest-to-kept weight ratios ``w_after``/``w_before`` and the thresholds from ``delta``."""
    feature: str
    value: str
    parent_feature: str | None
    parent_value: str | None
    parent_labels: tuple | None
    s_after: np.ndarray
    s_before: np.ndarray
    w_after: float
    w_before: float
    eps_after: float
    eps_before: float
    base_rate: float


def story_records(language, features, delta) -> list:
    """Every feature value, then every value nested in a value of another feature (its genres a
    strict subset) -> list of `StoryRecord`, in the order the predictions report them."""
    items = _feature_items(story_features(language) if features is None else features)
    pairs = [(f, v, labs, None, None, None) for f, values in items for v, labs in values.items()]
    pairs += [(f, v, labs, g, gv, glabs) for f, values in items for g, gvalues in items if g != f
              for v, labs in values.items() for gv, glabs in gvalues.items() if set(labs) < set(glabs)]
    w = language.weights
    out = []
    for fname, v, labs, pname, pv, plabs in pairs:
        s_a = language.labels(labs)
        s_b = np.arange(len(w)) if plabs is None else language.labels(plabs)
        rest_a, rest_b = _rest(language, s_a), np.setdiff1d(np.arange(len(w)), s_b)
        if len(rest_a) == 0:
            raise ValueError(f"feature value {fname}={v!r} covers every genre")
        w_a = w[rest_a].sum() / w[s_a].sum()
        w_b = w[rest_b].sum() / w[s_b].sum() if len(rest_b) else 0.0
        out.append(StoryRecord(
            feature=fname, value=v, parent_feature=pname, parent_value=pv,
            parent_labels=None if plabs is None else tuple(int(i) for i in s_b), s_after=s_a, s_before=s_b,
            w_after=float(w_a), w_before=float(w_b), eps_after=float(_eps_from_delta(delta, w_a)),
            eps_before=float(_eps_from_delta(delta, w_b)), base_rate=float(w[s_a].sum() / w[s_b].sum())))
    return out


def _smallest_kept(f, length, level):
    """Smallest kept k in 0..length with f(k) >= level for f nondecreasing in k (TV of
    prefixes: a longer prefix is a richer statistic); None if none. Bisection."""
    if f(length) < level:
        return None
    lo, hi = -1, length  # f(lo) < level (virtually), f(hi) >= level
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) >= level:
            hi = mid
        else:
            lo = mid
    return hi


def critical_window_tokens(language: StoryLanguage, after, before=None, eps=0.05, *, eps_before=None,
                           length=None) -> tuple:
    """Def. 4 (the paper) for the truncation process, in tokens removed r = length - kept:
    (T_after, T_before, T_start(S_before)) as floats.

    T_after = sup{r : TV(p_r^{S_after}, p_r^{rest}) >= 1 - eps^2};
    T_before = inf{r : TV(p_r^{S_after}, p_r^{S_before}) <= eps_b and
    TV(p_r^{S_before}, p_r^{rest of S_before}) >= 1 - eps_b^2} (the second void when
    S_before = everything, before=None); T_start = sup{r : TV(S_before, rest) >= 1 - eps_b^2}
    (inf when S_before = everything). nan: the defining set is empty. TV is nonincreasing in
    r, so each is found by bisection on exact TVs.
    """
    length = language.length if length is None else int(length)
    eps_b, s_after, s_before, rest_a, rest_b = window_sets(language, after, before, eps, eps_before)

    def tv_at(x, y):
        memo = {}

        def f(k):
            if k not in memo:
                memo[k] = float(tv(language, x, y, [k], length=length)[0])
            return memo[k]
        return f

    k_a = _smallest_kept(tv_at(s_after, rest_a), length, 1 - eps ** 2)
    t_after = np.nan if k_a is None else float(length - k_a)
    # TV(S_after, S_before) <= eps_b  <=>  kept <= the largest k below the level
    f_ab = tv_at(s_after, s_before)
    k_1 = _largest_kept_below(f_ab, length, eps_b)
    if len(rest_b):
        k_s = _smallest_kept(tv_at(s_before, rest_b), length, 1 - eps_b ** 2)
        t_start = np.nan if k_s is None else float(length - k_s)
    else:
        t_start = np.inf
    t1 = float(length - k_1)  # k_1 >= 0 always: TV = 0 with nothing kept
    t_before = t1 if t1 <= t_start else np.nan
    return t_after, t_before, t_start


def _largest_kept_below(f, length, level):
    """Largest kept k in 0..length with f(k) <= level, f nondecreasing with f(0) = 0."""
    lo, hi = 0, length + 1  # f(lo) <= level, f(hi) > level (virtually)
    if f(length) <= level:
        return length
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) <= level:
            lo = mid
        else:
            hi = mid
    return lo


def _sup_fraction(r, length):
    """sup{t in [0, 1] : removed_tokens(t, L) <= r} = (r + 0.5) / L, capped at 1."""
    if not np.isfinite(r):
        return float(r)
    return 1.0 if r >= length else (r + 0.5) / length


def _inf_fraction(r, length):
    """inf{t in [0, 1] : removed_tokens(t, L) >= r} = (r - 0.5) / L, at least 0."""
    if not np.isfinite(r):
        return float(r)
    return 0.0 if r <= 0 else (r - 0.5) / length


# ---------------------------------------------------------------- per-feature predictions

@dataclass(frozen=True)
class TextWindow:
    """Theory for one feature value (or one value inside a coarser one) of the story
    language; times as fractions of the response removed (the unit of text) and in tokens.

    S_after = the value's genres; S_before = every genre (parent_* None) or the parent
    value. Each side uses its own eps from delta = eps (1 + max(1, W)/sqrt 2) (THEORY.md,
    "Empirical window edges"): retention >= 1 - delta for t < t_after and
    <= base_rate + delta for t in [t_before, t_start_before). Fractions are Def. 4 on the
    fraction process (sup / inf over the fractions that cut that many tokens, see the
    module docstring). nan: the defining set is empty; inf: never left.
    """

    feature: str
    value: str
    labels: tuple              # genre label indices of S_after
    parent_feature: str | None
    parent_value: str | None
    parent_labels: tuple | None
    t_after: float             # Def. 4 T_after at eps_after, fraction removed
    t_before: float            # Def. 4 T_before at eps_before, fraction removed
    t_start_before: float      # T_start(S_before) at eps_before (inf for S_before = everything)
    t_after_tokens: float      # the same in tokens removed
    t_before_tokens: float
    t_start_before_tokens: float
    window_exists: bool        # t_after <= t_before, both finite
    eps_after: float
    eps_before: float
    delta_after: float         # = delta
    delta_before: float        # = delta
    w_after: float             # W_after = w(rest) / w(S_after)
    w_before: float            # W_before = w(outside S_before) / w(S_before)
    base_rate: float           # w(S_after) / w(S_before): retention's floor
    length: int                # response tokens L
    fractions: tuple           # where ideal_retention is given
    kept_tokens: tuple         # kept_tokens(fraction, L) at fractions
    ideal_retention: tuple     # R_{S_after} at fractions (exact)

    def to_dict(self) -> dict:
        def num(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v
        return {k: (list(v) if isinstance(v, tuple) else num(v)) for k, v in self.__dict__.items()}


def predict_text_windows(language: StoryLanguage, features=None, *, delta=0.1, fractions=DEFAULT_FRACTIONS,
                         length=None) -> list:
    """Predicted windows of the story language for every feature value, then every value
    nested in a value of another feature (its genres a strict subset: S_before = that value)
    -> list of TextWindow.

    features: dicts {"name", "values": {value: genre labels}} or objects with .name and
    .values (default `story_features(language)`); fractions: where to give the exact
    retention; length: response tokens L (default M + 1; more if a backend counts an
    end-of-sequence token).

    Example::

        recs = predict_text_windows(DEFAULT_STORY, delta=0.1)
        [(r.feature, r.value, r.parent_value, r.t_after, r.t_before) for r in recs]
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    length = language.length if length is None else int(length)
    if length < language.length:
        raise ValueError(f"length must be >= {language.length} (M cues and the ending)")
    fr = tuple(float(f) for f in np.atleast_1d(np.asarray(fractions, dtype=np.float64)))
    kept = tuple(int(k) for k in np.atleast_1d(kept_tokens(np.array(fr), length)))
    out = []
    for r in story_records(language, features, delta):
        s_a = r.s_after
        r_a, r_b, r_s = critical_window_tokens(language, s_a, r.parent_labels, r.eps_after,
                                               eps_before=r.eps_before, length=length)
        out.append(TextWindow(
            feature=r.feature, value=r.value, labels=tuple(int(i) for i in s_a),
            parent_feature=r.parent_feature, parent_value=r.parent_value, parent_labels=r.parent_labels,
            t_after=_sup_fraction(r_a, length), t_before=_inf_fraction(r_b, length),
            t_start_before=_sup_fraction(r_s, length), t_after_tokens=r_a, t_before_tokens=r_b,
            t_start_before_tokens=r_s, window_exists=bool(np.isfinite(r_a) and np.isfinite(r_b) and r_a < r_b),
            eps_after=r.eps_after, eps_before=r.eps_before, delta_after=float(delta), delta_before=float(delta),
            w_after=r.w_after, w_before=r.w_before, base_rate=r.base_rate, length=length, fractions=fr,
            kept_tokens=kept, ideal_retention=tuple(float(x) for x in retention(language, s_a, kept, length=length))))
    return out
