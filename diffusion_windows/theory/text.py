"""The story language (THEORY.md, "Autoregressive models"): exact posterior, retention, TV
and the critical windows (the paper, Def. 4) of truncation, for validating the text side.

A story is `M` cue words drawn i.i.d. given its genre `G` from
`q_G = p_uniform U(uniform cues) + p_world U(cues of G's world) + p_genre U(cues of G alone)`
(U = the uniform law over a set of words; uniform cues are drawn alike by every genre),
then one ending word that names `G`. Every genre gives one probability to every word of a
*cue class* (the uniform cues, the cues of one world, the cues of one genre), so the
posterior `P(G | c_1..c_k)` depends only on the class counts and every law of a prefix is
a mixture of multinomials over class-count vectors: retention and TV are finite sums over
the count vectors some genre can emit (exact, vectorised; `retention_mc` checks them with
exact word likelihoods).

Time is the truncation of the response (THEORY.md): `t` = the fraction of the response's
`length` tokens removed, `kept_tokens(t, length)` tokens kept (t = 0 keeps the response,
t = 1 none). Token `i <= M` of a response is cue `i`, token `M + 1` the ending; any further
token (an end-of-sequence token, if a backend counts it) carries no information.
Thresholds are given in tokens removed (integers, the natural unit) and in fractions: on
the fraction process `t -> kept_tokens(t, L)` a sup over `{r <= r*}` tokens removed is
`(r* + 0.5) / L` (not attained) and an inf over `{r >= r*}` is `(r* - 0.5) / L`.
numpy/scipy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from scipy import special

from .predict import _feature_items
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

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(11))  # the paper's LLM grid


# ---------------------------------------------------------------- truncation time

def removed_tokens(fraction, length):
    """Tokens removed from a response of `length` tokens at time `fraction`:
    `floor(fraction * length + 0.5)` (round half up; int, or an int array)."""
    f = np.asarray(fraction, dtype=np.float64)
    if np.any(~np.isfinite(f)) or np.any(f < 0) or np.any(f > 1):
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    if int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    r = np.floor(f * int(length) + 0.5).astype(np.int64)
    return int(r) if r.ndim == 0 else r


def kept_tokens(fraction, length):
    """Tokens of a response of `length` tokens kept at time `fraction` (the fraction removed):
    `length - floor(fraction * length + 0.5)`; 0 -> all kept, 1 -> none. The one rule for
    cutting responses: the text backend imports it."""
    r = removed_tokens(fraction, length)
    return int(length) - r


# ---------------------------------------------------------------- the language

@dataclass(frozen=True)
class StoryLanguage:
    """Worlds, genres per world with weights, cue words and `q_G` (THEORY.md).

    genres[i] are the genres of worlds[i]; genre_weights is flat over genres in that order
    (normalised; None: equal). uniform_cues are drawn alike by every genre, world_cues[i]
    are shared by the genres of world i, genre_cues[j] belong to genre j alone (flat
    order). q_G mixes the uniform laws over the uniform cues (weight p_uniform), over the
    cues of G's world (p_world) and over G's own cues (p_genre). The ending is the
    genre's name. Words are single tokens.
    """

    worlds: tuple
    genres: tuple
    uniform_cues: tuple
    world_cues: tuple
    genre_cues: tuple
    num_cues: int                       # M: cue words per story
    p_uniform: float
    p_world: float
    p_genre: float
    genre_weights: tuple | None = field(default=None)

    def __post_init__(self):
        t = lambda x: tuple(str(s) for s in x)  # noqa: E731
        object.__setattr__(self, "worlds", t(self.worlds))
        object.__setattr__(self, "genres", tuple(t(g) for g in self.genres))
        object.__setattr__(self, "world_cues", tuple(t(c) for c in self.world_cues))
        object.__setattr__(self, "genre_cues", tuple(t(c) for c in self.genre_cues))
        object.__setattr__(self, "uniform_cues", t(self.uniform_cues))
        n_g = sum(len(g) for g in self.genres)
        w = np.ones(n_g) if self.genre_weights is None else np.asarray(self.genre_weights, float)
        if w.shape != (n_g,) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"genre_weights must be {n_g} positive numbers, got {self.genre_weights!r}")
        object.__setattr__(self, "genre_weights", tuple(float(x) for x in w / w.sum()))
        if len(self.genres) != len(self.worlds) or any(len(g) == 0 for g in self.genres):
            raise ValueError("genres must give a non-empty tuple of genres for each world")
        if len(self.world_cues) != len(self.worlds):
            raise ValueError(f"world_cues must give cues for each of the {len(self.worlds)} worlds")
        if len(self.genre_cues) != n_g:
            raise ValueError(f"genre_cues must give cues for each of the {n_g} genres")
        p = (self.p_uniform, self.p_world, self.p_genre)
        if min(p) < 0 or not math.isclose(sum(p), 1.0, abs_tol=1e-9):
            raise ValueError(f"p_uniform, p_world, p_genre must be >= 0 and sum to 1, got {p}")
        if ((self.p_uniform > 0 and not self.uniform_cues)
                or (self.p_world > 0 and any(len(c) == 0 for c in self.world_cues))
                or (self.p_genre > 0 and any(len(c) == 0 for c in self.genre_cues))):
            raise ValueError("a cue set with positive weight has no words")
        words = self.cue_words + self.genre_names + self.worlds
        if len(set(words)) != len(words) or any(not s or s.split() != [s] for s in words):
            raise ValueError("cue words, genre and world names must be distinct single words")
        if int(self.num_cues) != self.num_cues or self.num_cues < 0:
            raise ValueError(f"num_cues must be a non-negative integer, got {self.num_cues!r}")

    # -- names and weights
    @property
    def genre_names(self) -> tuple:
        """Genres in flat order (the label indices of features); also the ending words."""
        return tuple(g for gs in self.genres for g in gs)

    @property
    def genre_world(self) -> tuple:
        """World index of each genre."""
        return tuple(i for i, gs in enumerate(self.genres) for _ in gs)

    @property
    def weights(self) -> np.ndarray:
        return np.array(self.genre_weights)

    @property
    def length(self) -> int:
        """Response tokens: M cues and the ending (an end-of-sequence token not counted)."""
        return int(self.num_cues) + 1

    @property
    def cue_words(self) -> tuple:
        return self.uniform_cues + tuple(c for cs in self.world_cues for c in cs) + tuple(
            c for cs in self.genre_cues for c in cs)

    @cached_property
    def cue_probs(self) -> np.ndarray:
        """q_G(c) [num genres, num cue words]."""
        words = self.cue_words
        index = {c: i for i, c in enumerate(words)}
        q = np.zeros((len(self.genre_names), len(words)))
        for c in self.uniform_cues:
            q[:, index[c]] = self.p_uniform / len(self.uniform_cues)
        for g, (wi, cues) in enumerate(zip(self.genre_world, self.genre_cues)):
            for c in self.world_cues[wi]:
                q[g, index[c]] += self.p_world / len(self.world_cues[wi])
            for c in cues:
                q[g, index[c]] += self.p_genre / len(cues)
        q.setflags(write=False)
        return q

    @cached_property
    def _classes(self):
        """(class of each cue word [V] or -1 when no genre emits it, class probabilities
        [G, C] = probability of drawing *some* word of the class, class sizes [C])."""
        q = self.cue_probs
        keys, cls = {}, np.full(q.shape[1], -1)
        for j in range(q.shape[1]):
            if q[:, j].max() > 0:
                cls[j] = keys.setdefault(tuple(np.round(q[:, j], 15)), len(keys))
        probs = np.zeros((q.shape[0], len(keys)))
        np.add.at(probs.T, cls[cls >= 0], q[:, cls >= 0].T)
        return cls, probs, np.bincount(cls[cls >= 0], minlength=len(keys))

    @property
    def num_classes(self) -> int:
        return self._classes[1].shape[1]

    def labels(self, value_genres) -> np.ndarray:
        """Genre label indices as a sorted array, checked."""
        s = np.unique(np.asarray(list(value_genres), dtype=np.int64))
        if len(s) == 0 or s.min() < 0 or s.max() >= len(self.genre_names):
            raise ValueError(f"genre labels must lie in 0..{len(self.genre_names) - 1}, got {value_genres!r}")
        return s


def story_features(language: StoryLanguage) -> list:
    """The features "genre" (one value per genre) and "world" (its genres), as dicts
    {"name", "values": {value: genre label indices}}."""
    return [{"name": "genre", "values": {g: (i,) for i, g in enumerate(language.genre_names)}},
            {"name": "world", "values": {w: tuple(i for i, x in enumerate(language.genre_world) if x == wi)
                                         for wi, w in enumerate(language.worlds)}}]


# ---------------------------------------------------------------- posterior

def class_counts(language: StoryLanguage, cues) -> np.ndarray:
    """Class-count vector [C] of a sequence of cue words (the posterior's sufficient statistic)."""
    index = {c: i for i, c in enumerate(language.cue_words)}
    cls = language._classes[0]
    out = np.zeros(language.num_classes, dtype=np.int64)
    for c in cues:
        if c not in index or cls[index[c]] < 0:
            raise ValueError(f"{c!r} is not a cue word of the language")
        out[cls[index[c]]] += 1
    return out


def posterior_from_counts(language: StoryLanguage, counts) -> np.ndarray:
    """P(G | c_1..c_k) [..., G] from class counts [..., C]: proportional to
    w_G prod_i q_G(c_i) (THEORY.md); the multinomial coefficient cancels."""
    n = np.asarray(counts, dtype=np.float64)
    logp = np.log(language.weights) + _xlogy(n[..., None, :], language._classes[1]).sum(-1)
    return _softmax(logp)


def posterior(language: StoryLanguage, cues) -> np.ndarray:
    """P(G | c_1..c_k) [G] for a sequence of cue words, from the word likelihoods q_G."""
    index = {c: i for i, c in enumerate(language.cue_words)}
    idx = [index[c] if c in index else _bad_cue(c) for c in cues]
    logq = np.log(np.where(language.cue_probs > 0, language.cue_probs, 1.0))
    logq[language.cue_probs == 0] = -np.inf
    logp = np.log(language.weights) + logq[:, idx].sum(1)
    if not np.isfinite(logp).any():
        raise ValueError(f"no genre emits the cues {list(cues)!r}: an impossible prefix")
    return _softmax(logp)


def next_word_probs(language: StoryLanguage, words) -> dict:
    """The exact next-word law after the response words so far (cues, then the ending):
    the posterior predictive sum_G P(G | cues) q_G(c) while fewer than M cues are written,
    then P(G | all M cues) over the endings. A complete story raises ValueError."""
    words = list(words)
    m = int(language.num_cues)
    if len(words) > m:
        raise ValueError(f"the story is complete after {m} cues and the ending")
    post = posterior(language, words)
    if len(words) < m:
        return dict(zip(language.cue_words, post @ language.cue_probs))
    return dict(zip(language.genre_names, post))


def response_entropy(language: StoryLanguage) -> dict:
    """Entropy in nats of a story's response under the language: {"cues": H(c_1..c_M),
    "ending": H(G | c_1..c_M)}: the least expected loss of any model (per story), summed
    over the response's tokens; per token, divide by the tokens predicted."""
    m = int(language.num_cues)
    n = _count_vectors(language, m)
    law = _count_law(language, m)
    p_n = law @ language.weights
    # log p(one sequence with counts n) = log sum_G w_G prod_c (pi_G(c) / size_c)^{n_c}
    _, probs, sizes = language._classes
    logp = np.log(language.weights) + _xlogy(n[:, None, :], probs[None]).sum(-1)
    log_seq = special.logsumexp(logp, axis=1) - n @ np.log(sizes)
    post = posterior_from_counts(language, n)
    h_post = -np.sum(post * np.log(np.where(post > 0, post, 1.0)), axis=1)
    keep = p_n > 0
    return {"cues": float(-np.sum(p_n[keep] * log_seq[keep])), "ending": float(np.sum(p_n * h_post))}


def _bad_cue(c):
    raise ValueError(f"{c!r} is not a cue word of the language")


def _xlogy(n, p):
    """n log p with 0 log 0 = 0 and n log 0 = -inf for n > 0 (broadcasting)."""
    with np.errstate(divide="ignore"):
        return np.where(n > 0, n * np.log(np.where(p > 0, p, 1.0)) + np.where(p > 0, 0.0, -np.inf), 0.0)


def _softmax(logp):
    m = np.max(logp, axis=-1, keepdims=True)
    e = np.exp(logp - m)
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- exact sums over count vectors

@lru_cache(maxsize=None)
def _compositions(k: int, parts: int) -> np.ndarray:
    """All count vectors [N, parts] of non-negative ints summing to k (stars and bars)."""
    if parts == 1:
        return np.array([[k]], dtype=np.int64)
    blocks = [np.concatenate([np.full((len(rest), 1), j, np.int64), rest], axis=1)
              for j in range(k + 1) for rest in [_compositions(k - j, parts - 1)]]
    return np.concatenate(blocks)


@lru_cache(maxsize=256)
def _count_vectors(language: StoryLanguage, k: int) -> np.ndarray:
    """The class-count vectors [N, C] of k cues that some genre can emit: the union over
    genres of the compositions of k over that genre's classes (all of them when every genre
    can emit every class; few when cue sets are exclusive)."""
    probs = language._classes[1]
    blocks = []
    for support in sorted({tuple(np.flatnonzero(row > 0)) for row in probs}):
        comp = _compositions(k, len(support))
        full = np.zeros((len(comp), probs.shape[1]), np.int64)
        full[:, list(support)] = comp
        blocks.append(full)
    n = blocks[0] if len(blocks) == 1 else np.unique(np.concatenate(blocks), axis=0)
    n.setflags(write=False)
    return n


@lru_cache(maxsize=256)
def _count_law(language: StoryLanguage, k: int) -> np.ndarray:
    """P_G(n) [N, G]: multinomial law of the class counts n of k cues under each genre
    (rows in the order of `_count_vectors(language, k)`)."""
    n = _count_vectors(language, k)
    log_coef = special.gammaln(k + 1) - special.gammaln(n + 1).sum(1)
    logp = log_coef[:, None] + _xlogy(n[:, None, :], language._classes[1][None]).sum(-1)
    out = np.exp(logp)
    out.setflags(write=False)
    return out


def _mix(language, subset):
    """Normalised weights [G] of p^S (zero outside S)."""
    a = np.zeros(len(language.genre_names))
    s = language.labels(subset)
    a[s] = language.weights[s] / language.weights[s].sum()
    return a


def _kept_list(language, kept, length):
    k = np.atleast_1d(np.asarray(kept))
    if np.any(k != np.round(k)) or np.any(k < 0) or np.any(k > length):
        raise ValueError(f"kept tokens must be integers in 0..{length}, got {kept!r}")
    return k.astype(np.int64)


def retention(language: StoryLanguage, value, kept, *, length=None) -> np.ndarray:
    """Exact retention R_S(k) = E_{x ~ p_k^S} [P(S | x)] (THEORY.md, "Autoregressive models")
    of the value S (genre label indices) with `kept` response tokens kept (array): a finite sum
    over class-count vectors of min(k, M) cues; 1 once the ending is kept."""
    length = language.length if length is None else int(length)
    if length < language.length:
        raise ValueError(f"length must be >= {language.length} (M cues and the ending)")
    a = _mix(language, value)
    w, s = language.weights, a > 0
    out = []
    for k in _kept_list(language, kept, length):
        if k > language.num_cues:  # the ending names the genre
            out.append(1.0)
            continue
        law = _count_law(language, int(k))
        p_all = law @ w
        p_s = law[:, s] @ w[s]
        # sum_n P^S(n) P(S | n) = sum_n (w(S) P^S(n))^2 / (w(S) p(n))
        out.append(float(np.sum(np.divide(p_s ** 2, p_all, out=np.zeros_like(p_all), where=p_all > 0))
                         / w[s].sum()))
    return np.array(out)


def retention_mc(language: StoryLanguage, value, kept, *, n=20_000, seed=0, length=None):
    """Monte Carlo check of `retention`: n stories x ~ p^S cut to `kept` tokens, exact
    word likelihoods, mean of P(S | x) -> (mean [K], standard error [K])."""
    length = language.length if length is None else int(length)
    rng = np.random.default_rng(seed)
    a = _mix(language, value)
    s = a > 0
    q = language.cue_probs
    cdf = np.cumsum(q, axis=1)
    cdf[:, -1] = 1.0
    logq = np.log(np.where(q > 0, q, 1.0)) + np.where(q > 0, 0.0, -np.inf)
    means, ses = [], []
    for k in _kept_list(language, kept, length):
        if k > language.num_cues:
            means.append(1.0), ses.append(0.0)
            continue
        g = rng.choice(len(a), size=n, p=a)
        u = rng.random((n, int(k)))
        words = (u[..., None] >= cdf[g][:, None, :]).sum(-1)  # inverse CDF, [n, k]
        logp = np.log(language.weights)[None] + logq[:, words].transpose(1, 2, 0).sum(1)
        p_s = _softmax(logp)[:, s].sum(1)
        means.append(float(p_s.mean())), ses.append(float(p_s.std(ddof=1) / np.sqrt(n)))
    return np.array(means), np.array(ses)


def tv(language: StoryLanguage, a, b, kept, *, length=None) -> np.ndarray:
    """Exact TV(p_k^A, p_k^B) between the laws of the response prefixes that keep `kept`
    tokens (array), A and B sets of genre labels: half the sum over class-count vectors of
    |P^A(n) - P^B(n)| (every word sequence with counts n has one probability under every
    genre); with the ending kept, the TV of the genre laws (1 for disjoint A, B)."""
    length = language.length if length is None else int(length)
    wa, wb = _mix(language, a), _mix(language, b)
    out = []
    for k in _kept_list(language, kept, length):
        if k > language.num_cues:
            out.append(0.5 * float(np.abs(wa - wb).sum()))
        elif k == 0:  # the empty prefix: one law
            out.append(0.0)
        else:
            out.append(0.5 * float(np.abs(_count_law(language, int(k)) @ (wa - wb)).sum()))
    return np.array(out)


# ---------------------------------------------------------------- Def. 4 in tokens removed

def _rest(language, s):
    return np.setdiff1d(np.arange(len(language.genre_names)), language.labels(s))


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
    items = _feature_items(story_features(language) if features is None else features)
    records = [(f, v, labs, None, None, None) for f, values in items for v, labs in values.items()]
    records += [(f, v, labs, g, gv, glabs) for f, values in items for g, gvalues in items if g != f
                for v, labs in values.items() for gv, glabs in gvalues.items() if set(labs) < set(glabs)]
    w = language.weights
    out = []
    for fname, v, labs, pname, pv, plabs in records:
        s_a = language.labels(labs)
        s_b = np.arange(len(w)) if plabs is None else language.labels(plabs)
        rest_a, rest_b = _rest(language, s_a), np.setdiff1d(np.arange(len(w)), s_b)
        if len(rest_a) == 0:
            raise ValueError(f"feature value {fname}={v!r} covers every genre")
        w_a = w[rest_a].sum() / w[s_a].sum()
        w_b = w[rest_b].sum() / w[s_b].sum() if len(rest_b) else 0.0
        eps_a, eps_b = _eps_from_delta(delta, w_a), _eps_from_delta(delta, w_b)
        r_a, r_b, r_s = critical_window_tokens(language, s_a, None if plabs is None else s_b, eps_a,
                                               eps_before=eps_b, length=length)
        t_a, t_b = _sup_fraction(r_a, length), _inf_fraction(r_b, length)
        out.append(TextWindow(
            feature=fname, value=v, labels=tuple(int(i) for i in s_a), parent_feature=pname,
            parent_value=pv, parent_labels=None if plabs is None else tuple(int(i) for i in s_b),
            t_after=t_a, t_before=t_b, t_start_before=_sup_fraction(r_s, length),
            t_after_tokens=r_a, t_before_tokens=r_b, t_start_before_tokens=r_s,
            window_exists=bool(np.isfinite(r_a) and np.isfinite(r_b) and r_a < r_b),
            eps_after=float(eps_a), eps_before=float(eps_b), delta_after=float(delta),
            delta_before=float(delta), w_after=float(w_a), w_before=float(w_b),
            base_rate=float(w[s_a].sum() / w[s_b].sum()), length=length, fractions=fr, kept_tokens=kept,
            ideal_retention=tuple(float(x) for x in retention(language, s_a, kept, length=length))))
    return out
