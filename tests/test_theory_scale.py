"""The theory's Monte Carlo engine at scale (theory/montecarlo.py, sizing.py): closed forms,
a brute-force reference in R^d, the old engine's values on the default digits, d = 16,384
within time and memory, the torch path against numpy, determinism."""

import time
import tracemalloc

import numpy as np
import pytest
from scipy.special import erf, logsumexp

from diffusion_windows import theory as th
from diffusion_windows.theory.mixtures import _top_eigenvalue

T = np.array([0.05, 0.3, 1.0])


# ---------------------------------------------------------------- brute-force reference

def _draw(mix, comps, n, t, rng):
    """n iid draws of p_t^S in R^d (component pick, data noise, OU noise)."""
    w = mix.weights[comps] / mix.weights[comps].sum()
    j = comps[rng.choice(len(comps), n, p=w)]
    x = mix.means[j] + np.sqrt(mix.var[j])[:, None] * rng.standard_normal((n, mix.dim))
    a = np.exp(-t)
    return a * x + np.sqrt(1 - a * a) * rng.standard_normal((n, mix.dim))


def _logp(mix, comps, y, t):
    """log p_t^S(y), exactly, in float64."""
    a = np.exp(-t)
    v = a * a * mix.var[comps] + 1 - a * a
    d2 = ((y[:, None, :] - a * mix.means[comps][None]) ** 2).sum(2)
    lw = np.log(mix.weights[comps] / mix.weights[comps].sum())
    return logsumexp(lw - d2 / (2 * v) - 0.5 * mix.dim * np.log(2 * np.pi * v), axis=1)


def brute_tv(mix, s1, s2, t, n=20000, seed=1):
    """TV = (E_P |tanh(D/2)| + E_Q |tanh(D/2)|) / 2, D = log p - log q; iid draws -> (value, se)."""
    rng = np.random.default_rng(seed)
    s1, s2 = np.asarray(s1), np.asarray(s2)
    parts = []
    for s in (s1, s2):
        y = _draw(mix, s, n, t, rng)
        parts.append(np.abs(np.tanh(0.5 * (_logp(mix, s1, y, t) - _logp(mix, s2, y, t)))))
    return 0.5 * (parts[0].mean() + parts[1].mean()), 0.5 * np.hypot(parts[0].std() / np.sqrt(n),
                                                                       parts[1].std() / np.sqrt(n))


def brute_retention(mix, s, t, n=20000, seed=2):
    """E_{p_t^S} P(S | y) with iid draws -> (value, se)."""
    rng = np.random.default_rng(seed)
    s = np.asarray(s)
    every = np.arange(mix.num_components)
    y = _draw(mix, s, n, t, rng)
    post = np.exp(np.log(mix.weights[s].sum()) + _logp(mix, s, y, t) - _logp(mix, every, y, t))
    return post.mean(), post.std() / np.sqrt(n)


def close(a, se_a, b, se_b, tol=0.0):
    return np.all(np.abs(np.asarray(a) - np.asarray(b)) <= 3 * np.hypot(se_a, se_b) + tol)


RARE = 3e-4  # values within a few 1e-4 of 0 or 1 rest on draws too rare to see (and to give an se)


# ---------------------------------------------------------------- closed forms

def test_two_points_in_high_dimension_match_closed_form():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, 2048)) * 0.05
    emp = th.EmpiricalMixture(pts, np.array([0, 1]))
    mc = th.tv(emp, [0], [1], T, method="mc")
    exact = th.tv(emp, [0], [1], T)
    dist = np.linalg.norm(pts[0] - pts[1])
    delta = np.exp(-T) * dist / np.sqrt(1 - np.exp(-2 * T))
    np.testing.assert_allclose(exact.value, erf(delta / (2 * np.sqrt(2))), rtol=1e-12)
    assert not mc.exact and np.all(mc.se <= 0.003)
    assert close(mc.value, mc.se, exact.value, 0, RARE)
    r_mc, r_se = th.retention_curve(emp, [0], [0], T, method="mc", return_se=True)
    assert close(r_mc, r_se, th.retention_curve(emp, [0], [0], T), 0, RARE)


@pytest.mark.parametrize("var", [0.3, 0.0])
def test_two_gaussians_scalar_variance_match_closed_form(var):
    rng = np.random.default_rng(1)
    means = rng.normal(size=(2, 500)) * 0.1
    mix = th.GaussianMixture(means, [0.3, 0.7], var)
    mc = th.tv(mix, [0], [1], T, method="mc")
    assert np.all(mc.se <= 0.003) and close(mc.value, mc.se, th.tv(mix, [0], [1], T).value, 0, RARE)
    r, se = th.retention_curve(mix, [1], [1], T, method="mc", return_se=True)
    assert close(r, se, th.retention_curve(mix, [1], [1], T), 0, RARE)


# ---------------------------------------------------------------- brute force in R^d

@pytest.mark.parametrize("var", [[0.2, 0.5, 0.0, 1.0, 0.3], 0.4])
def test_isotropic_mixture_matches_brute_force(var):
    """Per-component variances (Wishart part of |y|^2, d - r = 36) and one shared variance."""
    rng = np.random.default_rng(2)
    mix = th.GaussianMixture(rng.normal(size=(5, 40)) * 0.4, [0.1, 0.3, 0.2, 0.25, 0.15], var)
    mc = th.tv(mix, [0, 1], [2, 3, 4], T)
    ref = np.array([brute_tv(mix, [0, 1], [2, 3, 4], t) for t in T])
    assert close(mc.value, mc.se, ref[:, 0], ref[:, 1])
    r, se = th.retention_curve(mix, [0, 1], [0, 1], T, return_se=True)
    ref = np.array([brute_retention(mix, [0, 1], t) for t in T])
    assert close(r, se, ref[:, 0], ref[:, 1])


def _crossing_ref(mix, s1, s2, level, t0, n=20000):
    """Where the brute-force TV(t) crosses level, linearly between 9 points around t0 -> (t, se)."""
    ts = t0 * np.geomspace(0.85, 1.15, 9)
    v = np.array([brute_tv(mix, s1, s2, t, n=n, seed=3)[0] for t in ts])  # common seed: smooth in t
    se = brute_tv(mix, s1, s2, t0, n=n, seed=4)[1]
    i = np.flatnonzero(np.diff(np.sign(v - level)))
    assert len(i), f"no crossing of {level} near {t0}: {v}"
    i = i[0]
    slope = (v[i + 1] - v[i]) / (ts[i + 1] - ts[i])
    return ts[i] + (level - v[i]) / slope, se / abs(slope)


def test_random_empirical_mixture_thresholds_and_retention_match_brute_force():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 10)) * 1.5
    labels = np.repeat([0, 1, 2], 15)
    emp = th.EmpiricalMixture(centres[labels] + rng.normal(size=(45, 10)), labels)
    feats = [{"name": "label", "values": {"0": (0,), "1": (1,), "2": (2,)}},
             {"name": "pair", "values": {"01": (0, 1)}}]
    ts = np.array([0.1, 0.5, 1.5])
    out = th.predict_windows(emp, feats, ou_times=ts)
    by = {(r.feature, r.value, r.parent_value): r for r in out}
    r = by[("label", "2", None)]
    s2, rest = emp.indices(2), emp.indices([0, 1])
    ref = np.array([brute_retention(emp, s2, t) for t in ts])
    assert close(r.ideal_retention, r.ideal_retention_se, ref[:, 0], ref[:, 1])
    # T_after: TV(S_after, rest) = 1 - eps^2; T_before: TV(S_after, everything) = eps
    t_ref, se_ref = _crossing_ref(emp, s2, rest, 1 - r.eps_after ** 2, r.t_after_ou)
    assert abs(r.t_after_ou - t_ref) <= 3 * np.hypot(r.t_after_se, se_ref) + 0.02 * t_ref
    t_ref, se_ref = _crossing_ref(emp, s2, np.arange(45), r.eps_before, r.t_before_ou, n=8000)
    assert abs(r.t_before_ou - t_ref) <= 3 * np.hypot(r.t_before_se, se_ref) + 0.02 * t_ref


# ---------------------------------------------------------------- the default digits, old engine

RET_IDX = [3, 4, 5, 6, 8, 10]  # of the ou_times of timesteps 0, 50, ..., 950 (linear DDPM)
# predict_windows(default_mixture(), DEFAULT_FEATURES, delta=0.1) with the engine before this
# change (commit 48fee2f: n = 1,412 TV draws, 15,522 retention draws per atom):
# (feature, value): t_after, se, t_before, se, ideal retention at RET_IDX, se
OLD_DIGITS = {
    ("digit", "0"): (0.1269, 0.0035, 3.1092, 0.0102, [0.9994, 0.9829, 0.9002, 0.7416, 0.399, 0.2026],
                     [0.0001, 0.0007, 0.0017, 0.0024, 0.0022, 0.0012]),
    ("digit", "1"): (0.0892, 0.0062, 2.8431, 0.0105, [0.997, 0.9636, 0.8503, 0.6644, 0.321, 0.166],
                     [0.0003, 0.001, 0.002, 0.0025, 0.0019, 0.0009]),
    ("digit", "2"): (0.1158, 0.0039, 2.9753, 0.0104, [0.9995, 0.9767, 0.8748, 0.6954, 0.3527, 0.1827],
                     [0.0001, 0.0009, 0.0019, 0.0025, 0.0021, 0.001]),
    ("digit", "3"): (0.1002, 0.0035, 2.9145, 0.0102, [0.9971, 0.9476, 0.7956, 0.5948, 0.2958, 0.1669],
                     [0.0003, 0.0013, 0.0022, 0.0025, 0.0017, 0.0009]),
    ("digit", "4"): (0.1265, 0.0063, 3.1041, 0.0108, [0.9995, 0.9837, 0.8999, 0.7402, 0.3964, 0.2034],
                     [0.0001, 0.0007, 0.0017, 0.0025, 0.0022, 0.0012]),
    ("digit", "5"): (0.1031, 0.0027, 2.8686, 0.0101, [0.9983, 0.9648, 0.8417, 0.6476, 0.3151, 0.1666],
                     [0.0002, 0.0011, 0.0021, 0.0026, 0.0019, 0.0009]),
    ("digit", "6"): (0.1021, 0.0139, 3.1324, 0.0100, [0.9993, 0.983, 0.9011, 0.7438, 0.4015, 0.2047],
                     [0.0001, 0.0007, 0.0017, 0.0024, 0.0022, 0.0012]),
    ("digit", "7"): (0.1274, 0.0040, 3.0349, 0.0103, [0.9996, 0.9821, 0.8934, 0.7264, 0.3731, 0.1879],
                     [0.0001, 0.0008, 0.0018, 0.0025, 0.0021, 0.0011]),
    ("digit", "8"): (0.0801, 0.0062, 2.4512, 0.0101, [0.9956, 0.936, 0.7448, 0.5017, 0.2124, 0.1283],
                     [0.0004, 0.0014, 0.0024, 0.0025, 0.0013, 0.0005]),
    ("digit", "9"): (0.0857, 0.0066, 2.8227, 0.0103, [0.9959, 0.9364, 0.7687, 0.5587, 0.2703, 0.1563],
                     [0.0004, 0.0014, 0.0023, 0.0025, 0.0016, 0.0008]),
    ("group", "0-3-5-9"): (0.1489, 0.0023, 2.3546, 0.0066, [0.9993, 0.9845, 0.9225, 0.8159, 0.6023, 0.4782],
                           [0.0001, 0.0004, 0.0007, 0.001, 0.001, 0.0007]),
    ("group", "1-2-7-8"): (0.1486, 0.0024, 2.2638, 0.0066, [0.9995, 0.9846, 0.9195, 0.8069, 0.5851, 0.4641],
                           [0.0001, 0.0003, 0.0007, 0.001, 0.001, 0.0006]),
    ("group", "4-6"): (0.1339, 0.0078, 2.8988, 0.0083, [0.9995, 0.9862, 0.9205, 0.794, 0.5056, 0.32],
                       [0.0001, 0.0005, 0.0011, 0.0016, 0.0016, 0.001]),
}


def digits_ou_times():
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    return -0.5 * np.log(ab[np.arange(0, 1000, 50)])


@pytest.mark.slow
def test_default_digits_match_the_old_engine():
    pytest.importorskip("sklearn")
    from diffusion_windows.diffusion.theory import default_mixture
    from diffusion_windows.features import DEFAULT_FEATURES

    out = th.predict_windows(default_mixture(), DEFAULT_FEATURES, delta=0.1, ou_times=digits_ou_times())
    assert len(out) == 13 + 10
    for r in out:
        assert max(r.ideal_retention_se) <= th.SE_TARGET * 1.05
        if r.parent_value is not None:  # T_before of a digit inside its group lies after the group's T_start
            assert np.isnan(r.t_before_ou)
            continue
        ta, ta_se, tb, tb_se, ret, ret_se = OLD_DIGITS[(r.feature, r.value)]
        assert abs(r.t_after_ou - ta) <= 3 * np.hypot(ta_se, r.t_after_se) + 1e-3, r
        assert abs(r.t_before_ou - tb) <= 3 * np.hypot(tb_se, r.t_before_se) + 1e-3, r
        assert r.t_before_se <= 0.0105 and r.t_after_se <= 0.0105  # no worse than the old engine's
        new = np.array(r.ideal_retention)[RET_IDX]
        new_se = np.array(r.ideal_retention_se)[RET_IDX]
        assert close(new, new_se, ret, ret_se, 2e-4), (r.feature, r.value, new, ret)


# ---------------------------------------------------------------- d = 16,384

def latent_like(d=16384, seed=0):
    """64 points, 4 labels of 16 around 4 centres (Stable-Diffusion latent size)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 16)
    pts = rng.normal(size=(4, d))[labels] * 0.5 + rng.normal(size=(64, d))
    feats = [{"name": "label", "values": {str(i): (i,) for i in range(4)}},
             {"name": "group", "values": {"a": (0, 1), "b": (2, 3)}}]
    return th.EmpiricalMixture(pts, labels), feats


@pytest.mark.slow
def test_sixty_four_points_in_sd_latent_size_within_time_and_memory():
    mix, feats = latent_like()
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        out = th.predict_windows(mix, feats, delta=0.1, ou_times=digits_ou_times())
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds <= 30 and peak <= 2 * 2 ** 30, (seconds, peak / 2 ** 30)
    by = {(r.feature, r.value, r.parent_value): r for r in out}
    for lab, grp in (("0", "a"), ("3", "b")):
        fine, coarse = by[("label", lab, None)], by[("group", grp, None)]
        assert fine.window_exists and coarse.window_exists
        assert coarse.t_after_ou >= fine.t_after_ou - 3 * np.hypot(coarse.t_after_se, fine.t_after_se)
        assert np.isfinite(fine.speciation_ou)


# ---------------------------------------------------------------- torch, determinism

def small_mixture():
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], 12)
    return th.EmpiricalMixture(rng.normal(size=(3, 30))[labels] * 0.8 + rng.normal(size=(36, 30)) * 0.7,
                               labels)


def test_torch_cpu_path_matches_numpy():
    pytest.importorskip("torch")
    emp = small_mixture()
    a, b = emp.indices(0), emp.indices([1, 2])
    ref = th.tv(emp, a, b, T, n=512)
    tor = th.tv(emp, a, b, T, n=512, device="cpu")  # the same draws: float32 rounding apart
    np.testing.assert_allclose(tor.value, ref.value, atol=1e-5)
    np.testing.assert_allclose(tor.se, ref.se, atol=1e-5)
    r1 = th.retention_curve(emp, a, a, T, n=512)
    r2 = th.retention_curve(emp, a, a, T, n=512, device="cpu")
    np.testing.assert_allclose(r2, r1, atol=1e-5)
    gm = th.GaussianMixture(emp.means[:6], None, [0.1, 0.3, 0.0, 0.2, 0.5, 0.1])  # several variances
    np.testing.assert_allclose(th.tv(gm, [0, 1], [2, 3], T, n=512, device="cpu").value,
                               th.tv(gm, [0, 1], [2, 3], T, n=512).value, atol=1e-5)
    feats = [{"name": "label", "values": {"0": (0,), "1": (1,)}}]
    p1 = th.predict_windows(emp, feats, ou_times=[0.2, 1.0])
    p2 = th.predict_windows(emp, feats, ou_times=[0.2, 1.0], device="cpu")
    for x, y in zip(p1, p2):  # sized from (nearly) the same estimates: equal within Monte Carlo error
        assert abs(x.t_after_ou - y.t_after_ou) <= 3 * np.hypot(x.t_after_se, y.t_after_se) + 1e-6
        assert close(x.ideal_retention, x.ideal_retention_se, y.ideal_retention, y.ideal_retention_se, 1e-6)


def test_deterministic_and_independent_of_blas_threads():
    from threadpoolctl import threadpool_limits

    emp = small_mixture()
    feats = [{"name": "label", "values": {"0": (0,), "1": (1,)}},
             {"name": "pair", "values": {"01": (0, 1)}}]
    first = [r.to_dict() for r in th.predict_windows(emp, feats, ou_times=[0.2, 1.0])]
    with threadpool_limits(limits=2):
        again = [r.to_dict() for r in th.predict_windows(emp, feats, ou_times=[0.2, 1.0])]
    for x, y in zip(first, again):
        for key, value in x.items():
            if isinstance(value, float):
                assert value == pytest.approx(y[key], abs=1e-12, nan_ok=True), key
            elif isinstance(value, list) and value and isinstance(value[0], float):
                np.testing.assert_allclose(value, y[key], atol=1e-12, err_msg=key)
            else:
                assert value == y[key], key


def test_top_eigenvalue_without_the_d_by_d_covariance():
    rng = np.random.default_rng(5)
    gm = th.GaussianMixture(rng.normal(size=(6, 30)), rng.random(6) + 0.1, rng.random(6))
    for s in (None, [0, 2, 5]):
        lam = np.linalg.eigvalsh(gm.covariance(s))[-1]
        assert _top_eigenvalue(gm, s) == pytest.approx(lam, rel=1e-10)
    assert th.speciation_time(gm, [0, 2, 5]) == pytest.approx(0.5 * np.log(np.linalg.eigvalsh(gm.covariance([0, 2, 5]))[-1]))
    x = rng.normal(size=(20, 300))  # N < d: from the Gram matrix
    assert th.speciation_time(x) == pytest.approx(0.5 * np.log(np.linalg.eigvalsh(np.cov(x, rowvar=False))[-1]))


def test_numpy_path_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np, diffusion_windows.theory as th\n"
            "mix = th.GaussianMixture(np.array([[0.0, 0], [3, 0], [0, 3]]), None, [0.5, 0.2, 0.0])\n"
            "th.predict_windows(mix, [{'name': 'c', 'values': {'0': (0,), '1': (1,)}}], ou_times=[0.5])\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
