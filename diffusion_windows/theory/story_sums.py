"""Exact sums over class-count vectors for the story language (`theory.story`, THEORY.md
"Autoregressive models"): retention, TV between sub-populations and the entropy of a response.

Every law of a prefix of `k` cues is a mixture of multinomials over class-count vectors
(`theory.story`), so retention and TV are finite sums over the count vectors some genre can
emit (exact, vectorised); `retention_mc` checks them with exact word likelihoods. ``kept``:
response tokens kept (the truncation time, `theory.story.kept_tokens`). numpy/scipy only.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special

from .story import StoryLanguage, _softmax, _xlogy, posterior_from_counts

__all__ = ["retention", "retention_mc", "tv", "response_entropy"]


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
