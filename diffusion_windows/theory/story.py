"""The story language (THEORY.md, "Autoregressive models"): its words, laws and posterior, and
the truncation time of text.

A story is `M` cue words drawn i.i.d. given its genre `G` from
`q_G = p_uniform U(uniform cues) + p_world U(cues of G's world) + p_genre U(cues of G alone)`
(U = the uniform law over a set of words; uniform cues are drawn alike by every genre),
then one ending word that names `G`. Every genre gives one probability to every word of a
*cue class* (the uniform cues, the cues of one world, the cues of one genre), so the
posterior `P(G | c_1..c_k)` depends only on the class counts (`class_counts`,
`posterior_from_counts`). Exact sums over those counts: `theory.story_sums`; the windows:
`theory.text`.

Time is the truncation of the response (THEORY.md): `t` = the fraction of the response's
`length` tokens removed, `kept_tokens(t, length)` tokens kept (t = 0 keeps the response,
t = 1 none). Token `i <= M` of a response is cue `i`, token `M + 1` the ending; any further
token (an end-of-sequence token, if a backend counts it) carries no information.
numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["StoryLanguage", "DEFAULT_FRACTIONS", "kept_tokens", "removed_tokens", "story_features", "class_counts",
           "posterior", "posterior_from_counts", "next_word_probs"]


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
