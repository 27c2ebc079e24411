"""Story-language theory (theory/text.py): the truncation rule, exact sums against closed
forms and brute-force sums over word sequences, Monte Carlo, Def. 4 against a scan."""
import itertools
import json

import numpy as np
import pytest

from diffusion_windows.theory import text as tx


def hard_language(m=6, a=0.2, b=0.5, c=0.3, weights=None):
    """Exclusive cue sets: uniform cues (weight a), world cues (b), genre cues (c)."""
    return tx.StoryLanguage(
        worlds=("sea", "land"), genres=(("pirate", "sailor"), ("ninja", "samurai")),
        uniform_cues=("day", "night"), world_cues=(("ship", "wave"), ("castle", "forest")),
        genre_cues=(("treasure",), ("anchor", "rope"), ("shadow",), ("katana", "honor", "shogun")),
        num_cues=m, p_uniform=a, p_world=b, p_genre=c, genre_weights=weights)


def tiny_language(m=3, weights=(0.1, 0.2, 0.3, 0.4)):
    """Few words, unequal cue-set sizes and weights, and a world cue that is also one genre's
    cue-free ground (the genres of a world differ only by their own cues)."""
    return tx.StoryLanguage(
        worlds=("sea", "land"), genres=(("pirate", "sailor"), ("ninja", "samurai")),
        uniform_cues=("day",), world_cues=(("ship",), ("castle", "forest")),
        genre_cues=(("treasure",), ("anchor",), ("shadow",), ("katana",)),
        num_cues=m, p_uniform=0.3, p_world=0.45, p_genre=0.25, genre_weights=weights)


def brute(language, k):
    """Every cue sequence of length k with its probability under each genre [N, G]."""
    q = language.cue_probs
    seqs = list(itertools.product(range(q.shape[1]), repeat=k))
    probs = np.array([[np.prod(q[g, list(s)]) for g in range(q.shape[0])] for s in seqs]).reshape(-1, q.shape[0])
    return seqs, probs


def mix(language, s):
    a = np.zeros(len(language.genre_names))
    a[list(s)] = language.weights[list(s)] / language.weights[list(s)].sum()
    return a


# ---------------------------------------------------------------- truncation time

def test_kept_tokens_rule():
    assert tx.kept_tokens(0.0, 10) == 10 and tx.kept_tokens(1.0, 10) == 0
    assert tx.kept_tokens(0.25, 10) == 7          # floor(2.5 + 0.5) = 3 removed: half rounds up
    assert tx.kept_tokens(0.05, 10) == 9 and tx.kept_tokens(0.04, 10) == 10
    assert tx.kept_tokens(0.5, 41) == 20          # floor(21.0) = 21 removed
    assert tx.kept_tokens(0.3, 0) == 0
    assert isinstance(tx.kept_tokens(0.3, 10), int)
    fr = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(tx.kept_tokens(fr, 41), 41 - np.floor(fr * 41 + 0.5))
    np.testing.assert_array_equal(tx.kept_tokens(fr, 41) + tx.removed_tokens(fr, 41), 41)
    for bad in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="fraction"):
            tx.kept_tokens(bad, 10)
    with pytest.raises(ValueError, match="length"):
        tx.kept_tokens(0.5, 2.5)


# ---------------------------------------------------------------- the language and posterior

def test_language_validates_and_builds_q():
    lang = hard_language()
    np.testing.assert_allclose(lang.cue_probs.sum(1), 1.0)
    assert lang.length == 7 and lang.num_classes == 7  # uniform, 2 worlds, 4 genres
    with pytest.raises(ValueError, match="sum to 1"):
        hard_language(a=0.5, b=0.5, c=0.5)
    with pytest.raises(ValueError, match="distinct"):
        tx.StoryLanguage(("sea",), (("pirate", "sailor"),), ("ship",), (("ship",),), (("a",), ("b",)),
                         3, 0.5, 0.3, 0.2)


def test_posterior_depends_on_counts_only_and_matches_predictive():
    lang = tiny_language()
    cues = ["ship", "day", "treasure", "ship"]
    p = tx.posterior(lang, cues)
    np.testing.assert_allclose(p, tx.posterior(lang, cues[::-1]))
    np.testing.assert_allclose(p, tx.posterior_from_counts(lang, tx.class_counts(lang, cues)))
    # by hand: w_G prod q_G(c)
    q = lang.cue_probs
    idx = [lang.cue_words.index(c) for c in cues]
    manual = lang.weights * np.prod(q[:, idx], axis=1)
    np.testing.assert_allclose(p, manual / manual.sum())
    nxt = tx.next_word_probs(lang, ["ship"])
    assert set(nxt) == set(lang.cue_words)
    np.testing.assert_allclose(sum(nxt.values()), 1.0)
    np.testing.assert_allclose(list(nxt.values()), tx.posterior(lang, ["ship"]) @ q)
    end = tx.next_word_probs(lang, ["ship", "day", "ship"])
    assert tuple(end) == lang.genre_names
    with pytest.raises(ValueError, match="complete"):
        tx.next_word_probs(lang, ["day"] * 4)
    with pytest.raises(ValueError, match="impossible"):
        tx.posterior(hard_language(), ["ship", "castle"])
    with pytest.raises(ValueError, match="not a cue word"):
        tx.posterior(lang, ["pirate"])


# ---------------------------------------------------------------- exact sums

@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_enumeration_equals_brute_force_over_sequences(k):
    lang = tiny_language(m=3)
    seqs, probs = brute(lang, k)
    w = lang.weights
    p = probs @ w
    post = np.divide(probs * w, p[:, None], out=np.zeros_like(probs), where=p[:, None] > 0)
    for s in [(0,), (1,), (0, 1), (2, 3), (3,)]:
        law = probs @ mix(lang, s)
        r = np.sum(law * post[:, list(s)].sum(1))
        np.testing.assert_allclose(tx.retention(lang, s, [k]), [r], rtol=1e-12, atol=1e-14)
    for a, b in [((0,), (1,)), ((0,), (0, 1)), ((0, 1), (2, 3)), ((1,), (0, 2, 3)), ((2,), (0, 1, 2, 3))]:
        exact = 0.5 * np.abs(probs @ (mix(lang, a) - mix(lang, b))).sum()
        np.testing.assert_allclose(tx.tv(lang, a, b, [k]), [exact], rtol=1e-12, atol=1e-14)


def test_one_cue_closed_form():
    lang = hard_language()
    q, w = lang.cue_probs, lang.weights
    for s in [(0,), (2, 3)]:
        p_s = q[list(s)].T @ w[list(s)]      # [V]: w(S) P^S(c)
        expect = np.sum(p_s ** 2 / (q.T @ w)) / w[list(s)].sum()
        np.testing.assert_allclose(tx.retention(lang, s, [1]), [expect], rtol=1e-12)


def test_uniform_cues_give_the_base_rate_and_genre_cues_decide_at_once():
    flat = hard_language(a=1.0, b=0.0, c=0.0, weights=(0.1, 0.2, 0.3, 0.4))
    # M = 6 cues: kept 0..6 are cues only, kept 7 adds the ending
    np.testing.assert_allclose(tx.retention(flat, (3,), range(8)), [0.4] * 7 + [1.0])
    np.testing.assert_allclose(tx.retention(flat, (0, 1), range(8)), [0.3] * 7 + [1.0])
    np.testing.assert_allclose(tx.tv(flat, (0,), (1, 2, 3), range(8)), [0.0] * 7 + [1.0], atol=1e-15)
    sharp = hard_language(a=0.0, b=0.0, c=1.0, weights=(0.1, 0.2, 0.3, 0.4))
    np.testing.assert_allclose(tx.retention(sharp, (1,), range(8)), [0.2] + [1.0] * 7)
    np.testing.assert_allclose(tx.tv(sharp, (1,), (0, 2, 3), range(8)), [0.0] + [1.0] * 7)


def test_exclusive_cues_closed_form():
    """Exclusive cue sets: the genre is known once one of its cues appears (prob 1 - (1-c)^k),
    else the world once a world cue appears, else nothing: R_g = 1 - (1-c)^k +
    ((1-c)^k - a^k) w_g / w(W) + a^k w_g; R_W = 1 - a^k + a^k w(W)."""
    a, b, c = 0.2, 0.5, 0.3
    w = np.array([0.1, 0.2, 0.3, 0.4])
    lang = hard_language(m=8, a=a, b=b, c=c, weights=tuple(w))
    k = np.arange(9)
    for g, world in [(0, [0, 1]), (3, [2, 3])]:
        expect = 1 - (1 - c) ** k + ((1 - c) ** k - a ** k) * w[g] / w[world].sum() + a ** k * w[g]
        np.testing.assert_allclose(tx.retention(lang, (g,), k), expect, rtol=1e-12)
        expect_w = 1 - a ** k + a ** k * w[world].sum()
        np.testing.assert_allclose(tx.retention(lang, world, k), expect_w, rtol=1e-12)
    # TV between the worlds: disjoint as soon as a non-uniform cue appears
    np.testing.assert_allclose(tx.tv(lang, (0, 1), (2, 3), k), 1 - a ** k, rtol=1e-12)
    # a genre against its world: TV = w(other)/w(W) * P(own cue seen)  (sailor inside sea)
    np.testing.assert_allclose(tx.tv(lang, (1,), (0, 1), k[:-1]), w[0] / w[:2].sum() * (1 - (1 - c) ** k[:-1]),
                               rtol=1e-12)


def test_ending_kept_and_extra_tokens():
    lang = tiny_language(m=3)
    # length 5: an end-of-sequence token counted after the ending carries nothing
    np.testing.assert_allclose(tx.retention(lang, (1,), [3, 4, 5], length=5)[1:], [1.0, 1.0])
    # TV of the genre laws: sailor against sea = (pirate 1/3, sailor 2/3)
    np.testing.assert_allclose(tx.tv(lang, (1,), (0, 1), [4, 5], length=5), [1 / 3, 1 / 3])
    np.testing.assert_allclose(tx.tv(lang, (1,), (0, 2, 3), [4], length=5), [1.0])
    with pytest.raises(ValueError, match="kept"):
        tx.retention(lang, (1,), [5])  # default length 4


def test_response_entropy_by_brute_force():
    lang = tiny_language(m=3)
    seqs, probs = brute(lang, 3)
    p = probs @ lang.weights
    probs = probs[p > 0]
    p = p[p > 0]
    post = probs * lang.weights / p[:, None]
    h_cues = -np.sum(p * np.log(p))
    h_end = -np.sum(p * np.sum(np.where(post > 0, post * np.log(np.where(post > 0, post, 1)), 0), axis=1))
    h = tx.response_entropy(lang)
    np.testing.assert_allclose([h["cues"], h["ending"]], [h_cues, h_end], rtol=1e-10)


@pytest.mark.parametrize("value", [(0,), (2, 3)])
def test_monte_carlo_within_3_se(value):
    lang = hard_language(m=10, a=0.3, b=0.5, c=0.2, weights=(0.1, 0.2, 0.3, 0.4))
    k = [0, 1, 3, 6, 10, 11]
    exact = tx.retention(lang, value, k)
    mc, se = tx.retention_mc(lang, value, k, n=20_000, seed=3)
    # + 1e-5: where 1 - R ~ 1e-6 no draw of 20,000 sees an undecided story (se 0)
    assert np.all(np.abs(mc - exact) <= 3 * se + 1e-5), (mc, exact, se)
    soft = tiny_language(m=3)
    mc, se = tx.retention_mc(soft, value, [2, 3], n=20_000, seed=4)
    assert np.all(np.abs(mc - tx.retention(soft, value, [2, 3])) <= 3 * se)


# ---------------------------------------------------------------- TV, Def. 4, predictions

def default_story():
    from diffusion_windows.text.tasks import DEFAULT_STORY
    return DEFAULT_STORY


@pytest.mark.parametrize("lang", ["default", "hard", "tiny"])
def test_tv_nonincreasing_in_tokens_removed(lang):
    lang = {"default": default_story, "hard": hard_language, "tiny": tiny_language}[lang]()
    kept = np.arange(lang.length + 1)
    for a, b in [((0,), (1, 2, 3)), ((0, 1), (2, 3)), ((1,), (0, 1)), ((2,), (0, 1, 2, 3))]:
        v = tx.tv(lang, a, b, kept)
        assert np.all(np.diff(v) >= -1e-12), (a, b, v)  # nondecreasing in kept
        assert v[0] == 0.0


def scan(lang, after, before, eps, eps_b):
    """Def. 4 by brute force over every number r of tokens removed."""
    length = lang.length
    everything = tuple(range(len(lang.genre_names)))
    rest_a = tuple(sorted(set(everything) - set(after)))
    before = everything if before is None else before
    rest_b = tuple(sorted(set(everything) - set(before)))
    rs = np.arange(length + 1)
    tv_a = tx.tv(lang, after, rest_a, length - rs)
    tv_ab = tx.tv(lang, after, before, length - rs)
    ok_a = rs[tv_a >= 1 - eps ** 2]
    t_after = float(ok_a.max()) if len(ok_a) else np.nan
    if rest_b:
        tv_b = tx.tv(lang, before, rest_b, length - rs)
        sep = tv_b >= 1 - eps_b ** 2
        ok_s = rs[sep]
        t_start = float(ok_s.max()) if len(ok_s) else np.nan
    else:
        sep, t_start = np.ones(len(rs), bool), np.inf
    ok_b = rs[(tv_ab <= eps_b) & sep]
    t_before = float(ok_b.min()) if len(ok_b) else np.nan
    return t_after, t_before, t_start


@pytest.mark.parametrize("lang", ["default", "hard"])
def test_def4_thresholds_equal_a_brute_force_scan(lang):
    lang = {"default": default_story, "hard": lambda: hard_language(m=12, a=0.1, b=0.85, c=0.05)}[lang]()
    for after, before in [((0,), None), ((3,), None), ((0, 1), None), ((1,), (0, 1)), ((2,), (2, 3))]:
        for eps, eps_b in [(0.032, 0.0586), (0.0586, 0.0586), (0.2, 0.1), (0.01, 0.3)]:
            got = tx.critical_window_tokens(lang, after, before, eps, eps_before=eps_b)
            np.testing.assert_equal(got, scan(lang, after, before, eps, eps_b))


def test_world_decided_with_fewer_cues_than_the_genre():
    """Coarse first (the paper, Sec. 5): the world's T_before lies at more tokens removed than
    the T_before of a genre inside its world, and the nested windows exist."""
    lang = default_story()
    recs = {(r.feature, r.value, r.parent_value): r for r in tx.predict_text_windows(lang, delta=0.1)}
    for world, genres in [("sea", ("pirate", "sailor")), ("land", ("ninja", "samurai"))]:
        w = recs[("world", world, None)]
        for g in genres:
            nested = recs[("genre", g, world)]
            assert nested.window_exists and w.window_exists
            assert w.t_before_tokens > nested.t_before_tokens
            assert nested.t_before_tokens <= nested.t_start_before_tokens == w.t_after_tokens
            # against everything a genre cannot be decided later than its world (TV(p^g, p) >= TV(p^W, p))
            assert recs[("genre", g, None)].t_before_tokens >= w.t_before_tokens
    kept = np.arange(lang.length + 1)
    assert np.all(tx.tv(lang, (0,), (0, 1, 2, 3), kept) >= tx.tv(lang, (0, 1), (0, 1, 2, 3), kept) - 1e-12)
    # retention: the world reaches 1 - delta with fewer cues than the genre
    r_world = tx.retention(lang, (0, 1), kept)
    r_genre = tx.retention(lang, (0,), kept)
    assert np.argmax(r_world >= 0.9) < np.argmax(r_genre >= 0.9)


def test_default_retention_is_not_degenerate_on_the_grid():
    """The bundled language: the world decided gradually across the fraction grid, the genre
    by the ending (a jump between t = 0 and t = 0.1), both from 1 down to their floors."""
    lang = default_story()
    recs = {(r.feature, r.value, r.parent_value): r for r in tx.predict_text_windows(lang)}
    for r in recs.values():
        curve = np.array(r.ideal_retention)
        assert curve[0] == 1.0 and np.all(np.diff(curve) <= 1e-12)
        assert curve[-1] == pytest.approx(0.25 if r.feature == "genre" else 0.5)
    world = np.array(recs[("world", "sea", None)].ideal_retention)
    assert np.sum((world > 0.6) & (world < 0.99)) >= 5   # gradual: five grid points inside
    genre = recs[("genre", "pirate", None)].ideal_retention
    assert genre[1] < 0.6 and genre[0] - genre[1] > 0.4     # the ending decides the genre


def test_fractions_are_def4_on_the_fraction_process():
    lang = hard_language(m=12, a=0.1, b=0.85, c=0.05)
    recs = tx.predict_text_windows(lang, delta=0.1)
    fine = np.linspace(0, 1, 20_001)
    kept = tx.kept_tokens(fine, lang.length)
    for r in recs:
        rest = tuple(sorted(set(range(4)) - set(r.labels)))
        ok = tx.tv(lang, r.labels, rest, np.arange(lang.length + 1))[kept] >= 1 - r.eps_after ** 2
        sup = fine[ok].max()
        assert sup <= r.t_after <= sup + 1e-4 + (r.t_after == 1.0)
        if np.isfinite(r.t_before):
            assert r.t_before == pytest.approx(max(0.0, (r.t_before_tokens - 0.5) / lang.length))
            assert tx.removed_tokens(r.t_before, lang.length) == r.t_before_tokens
        assert r.window_exists == (np.isfinite(r.t_after) and np.isfinite(r.t_before) and r.t_after <= r.t_before)


def test_predict_text_windows_records():
    lang = hard_language(weights=(0.1, 0.2, 0.3, 0.4))
    recs = tx.predict_text_windows(lang, delta=0.1, fractions=[0.0, 0.5, 1.0])
    assert len(recs) == 4 + 2 + 4
    by = {(r.feature, r.value, r.parent_value): r for r in recs}
    r = by[("genre", "sailor", "sea")]
    assert r.base_rate == pytest.approx(0.2 / 0.3) and r.w_before == pytest.approx(0.7 / 0.3)
    assert r.eps_before == pytest.approx(0.1 / (1 + (0.7 / 0.3) / np.sqrt(2)))
    r0 = by[("genre", "pirate", None)]
    assert r0.w_after == pytest.approx(9.0) and r0.w_before == 0.0 and r0.t_start_before == np.inf
    assert r0.eps_after == pytest.approx(0.1 / (1 + 9 / np.sqrt(2)))
    assert r0.kept_tokens == (7, 3, 0)
    np.testing.assert_allclose(r0.ideal_retention, tx.retention(lang, (0,), [7, 3, 0]))
    assert r0.ideal_retention[0] == 1.0 and r0.ideal_retention[-1] == pytest.approx(0.1)
    d = json.loads(json.dumps(r0.to_dict()))
    assert d["t_start_before"] is None and d["fractions"] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="delta"):
        tx.predict_text_windows(lang, delta=1.5)
    with pytest.raises(ValueError, match="covers every genre"):
        tx.predict_text_windows(lang, [{"name": "all", "values": {"x": (0, 1, 2, 3)}}])
