"""The exact theory of the story language under re-masking (THEORY.md, "Masked diffusion"),
against brute-force enumeration of every response and every mask pattern of a tiny language."""
import itertools

import numpy as np
import pytest

from diffusion_windows.theory.story import StoryLanguage
from diffusion_windows.theory.story_mask import (critical_window_masked, predict_masked_windows, retention_masked,
                                                 tv_masked)
from diffusion_windows.theory.text import retention

TINY = StoryLanguage(worlds=("sea", "land"), genres=(("pirate", "sailor"), ("ninja",)), uniform_cues=("day",),
                     world_cues=(("ship",), ("castle",)), genre_cues=(("gold",), ("rope",), ("blade",)),
                     num_cues=3, p_uniform=0.5, p_world=0.3, p_genre=0.2, genre_weights=(0.3, 0.2, 0.5))


def _responses(language):
    """Every response (cue indices..., genre) with its probability under each genre [G]."""
    q, w = language.cue_probs, language.weights
    out = []
    for cues in itertools.product(range(q.shape[1]), repeat=language.num_cues):
        for g in range(len(w)):
            p = np.zeros(len(w))
            p[g] = w[g] * np.prod(q[g, list(cues)])
            if p[g] > 0:
                out.append((cues + (("end", g),), p))
    return out


def _observations(language, t):
    """{observation: probability per genre [G]}: the law of the re-masked response, joint with the genre."""
    law = {}
    n = language.num_cues + 1
    for tokens, p in _responses(language):
        for mask in itertools.product((0, 1), repeat=n):
            pm = t ** sum(mask) * (1 - t) ** (n - sum(mask))
            obs = tuple(None if m else x for x, m in zip(tokens, mask))
            law[obs] = law.get(obs, 0) + pm * p
    return law


def _brute_retention(language, s, t):
    law, w = _observations(language, t), language.weights
    s = list(s)
    total = 0.0
    for p in law.values():   # sum_o P^S(o) P(S | o)
        if p.sum() > 0:
            total +=  (p[s].sum() / w[s].sum()) * (p[s].sum() / p.sum())
    return total


def _brute_tv(language, a, b, t):
    law, w = _observations(language, t), language.weights
    a, b = list(a), list(b)
    return 0.5 * sum(abs(p[a].sum() / w[a].sum() - p[b].sum() / w[b].sum()) for p in law.values())


@pytest.mark.parametrize("t", [0.0, 0.2, 0.55, 0.9, 1.0])
def test_retention_matches_enumeration(t):
    for s in ([0], [1], [2], [0, 1]):
        assert retention_masked(TINY, s, [t])[0] == pytest.approx(_brute_retention(TINY, s, t), abs=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 1.0])
def test_tv_matches_enumeration(t):
    for a, b in (([0], [1, 2]), ([0, 1], [2]), ([0], [0, 1]), ([0], [0, 1, 2])):
        assert tv_masked(TINY, a, b, [t])[0] == pytest.approx(_brute_tv(TINY, a, b, t), abs=1e-12)


def test_retention_bounds_and_ends():
    t = np.linspace(0, 1, 21)
    r = retention_masked(TINY, [0], t)
    assert r[0] == pytest.approx(1.0) and r[-1] == pytest.approx(TINY.weights[0])
    assert np.all(r >= 1 - t - 1e-12)            # the ending is kept with probability 1 - t
    assert np.all(np.diff(r) <= 1e-12)           # more masking forgets more
    # all cues kept but the ending masked is the truncation retention with M cues
    assert retention_masked(TINY, [0], [1e-9])[0] == pytest.approx(1.0, abs=1e-8)
    eps = 1e-6
    slope = (1 - retention_masked(TINY, [0], [eps])[0]) / eps
    assert slope == pytest.approx(1 - retention(TINY, [0], [TINY.num_cues])[0], rel=1e-4)


def test_thresholds_are_the_roots_of_def4():
    eps = 0.1
    ta, tb, ts = critical_window_masked(TINY, [2], None, eps)
    rest = [0, 1]
    assert tv_masked(TINY, [2], rest, [ta])[0] == pytest.approx(1 - eps ** 2, abs=1e-6)
    assert tv_masked(TINY, [2], [0, 1, 2], [tb])[0] == pytest.approx(eps, abs=1e-6)
    assert ts == np.inf and 0 < ta < tb < 1
    # nested: the genre inside its world is valid only while the world is still separated
    ta2, tb2, ts2 = critical_window_masked(TINY, [0], [0, 1], eps)
    assert tv_masked(TINY, [0, 1], [2], [ts2])[0] == pytest.approx(1 - eps ** 2, abs=1e-6)
    assert np.isnan(tb2) or tb2 <= ts2


def test_predictions_carry_the_exact_curve():
    recs = predict_masked_windows(TINY, delta=0.1, fractions=(0.0, 0.5, 1.0))
    assert [(r.feature, r.parent_value) for r in recs][:3] == [("genre", None)] * 3
    for r in recs:
        assert r.ideal_retention == pytest.approx(tuple(retention_masked(TINY, r.labels, r.fractions)))
        if r.parent_value is None:
            assert r.ideal_retention[-1] == pytest.approx(r.base_rate)
