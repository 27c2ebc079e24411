"""Theory (THEORY.md): closed forms, Monte Carlo against exact values, thresholds, order."""

import numpy as np
import pytest
from scipy.stats import norm

from diffusion_windows import theory as th


def two_gaussians(mu=3.0, var=1.0, d=1, weights=(0.5, 0.5)):
    m = np.zeros((2, d))
    m[0, 0], m[1, 0] = mu, -mu
    return th.GaussianMixture(m, weights, var)


def test_two_gaussians_tv_closed_form():
    mix = two_gaussians(mu=2.0, d=3)
    t = np.array([0.0, 0.3, 1.0, 2.5])
    est = th.tv(mix, [0], [1], t)
    assert est.exact and np.all(est.se == 0)
    # unit variance is kept by the OU process: Delta_t = exp(-t) * |2 mu|
    np.testing.assert_allclose(est.value, 2 * norm.cdf(np.exp(-t) * 4.0 / 2) - 1, rtol=1e-12)
    # nested: TV(p^0, p) = (1 - w_0) TV(p^0, p^1)
    np.testing.assert_allclose(th.tv(mix, [0], [0, 1], t).value, 0.5 * est.value, rtol=1e-12)


@pytest.mark.parametrize("cov", ["iso", "full"])
def test_monte_carlo_tv_within_3_se_of_exact(cov):
    rng = np.random.default_rng(1)
    means = rng.normal(size=(2, 3))
    if cov == "iso":
        mix = th.GaussianMixture(means, [0.3, 0.7], 0.4)
    else:
        a = rng.normal(size=(3, 3))
        c = a @ a.T / 3 + 0.1 * np.eye(3)
        mix = th.GaussianMixture(means, [0.3, 0.7], np.stack([c, c]))
    t = np.array([0.05, 0.4, 1.0])
    exact = th.tv(mix, [0], [1], t)
    mc = th.tv(mix, [0], [1], t, method="mc")
    assert exact.exact and not mc.exact
    assert np.all(mc.se <= 0.003)
    assert np.all(np.abs(mc.value - exact.value) <= 3 * mc.se + 1e-9)


def test_retention_closed_form_and_monte_carlo():
    mix = two_gaussians(mu=3.0, var=0.25)
    # THEORY.md: ideal retention 0.730 at timestep 500 of the linear DDPM schedule
    ab500 = np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:501])
    assert th.retention_curve(mix, [0], [0], -0.5 * np.log(ab500)) == pytest.approx(0.730, abs=1e-3)
    t = np.array([0.3, 1.0, 2.0])
    exact = th.retention_curve(mix, [0], [0], t)
    mc, se = th.retention_curve(mix, [0], [0], t, method="mc", return_se=True)
    assert np.all(se <= 0.003) and np.all(np.abs(mc - exact) <= 3 * se)
    # posterior probabilities of the two sides sum to one
    other = th.retention_curve(mix, [0], [1], t)
    np.testing.assert_allclose(exact + other, 1, atol=1e-9)


def test_thresholds_from_inverse_normal_cdf():
    mu, eps = 4.0, 0.1
    mix = two_gaussians(mu=mu, d=2)
    w = th.critical_window(mix, [0], [0, 1], eps)
    # T_after: 2 Phi(Delta_t/2) - 1 = 1 - eps^2;  T_before: TV(p^0, p) = TV(p^0, p^1)/2 = eps
    t_after = np.log(2 * mu / (2 * norm.ppf(1 - eps ** 2 / 2)))
    t_before = np.log(2 * mu / (2 * norm.ppf(0.5 + eps)))
    assert w.t_after == pytest.approx(t_after, rel=1e-6)
    assert w.t_before == pytest.approx(t_before, rel=1e-6)
    assert w.exists and w.t_start_before == np.inf and w.n_samples == 0
    assert w.bound == pytest.approx(eps * (1 + 1 / np.sqrt(2)))
    b = th.example1_bounds(mu, eps)  # the paper's looser bounds hold
    assert b["t_after_lower"] <= w.t_after <= w.t_before <= b["t_before_upper"]
    t2 = th.theorem2_window(mix, [0], [0, 1], eps)
    assert t2.t_end == pytest.approx(w.t_before) and t2.t_start == np.inf and t2.exists


def test_monte_carlo_threshold_matches_exact():
    mix = two_gaussians(mu=3.0, d=2)
    pts = th.GaussianMixture(mix.means, mix.weights, 1.0)
    exact = th.critical_window(pts, [0], [0, 1], 0.1)
    # a third, far-away and negligible component forces Monte Carlo for TV(p^0, rest)
    far = th.GaussianMixture(np.vstack([mix.means, [[0.0, 60.0]]]), [0.5, 0.5 - 1e-9, 1e-9], 1.0)
    mc = th.critical_window(far, [0], [0, 1], 0.1)
    assert mc.n_samples > 0
    assert abs(mc.t_after - exact.t_after) <= 3 * mc.t_after_se + 0.01


def test_monotone_in_time_with_common_random_numbers():
    rng = np.random.default_rng(0)
    mix = th.GaussianMixture(rng.normal(scale=2, size=(5, 4)), None, [0.1, 0.2, 0.3, 0.2, 0.1])
    t = np.geomspace(0.01, 4, 25)
    tv = th.tv(mix, [0, 1], [2, 3, 4], t).value
    ret = th.retention_curve(mix, [0, 1], [0, 1], t)
    assert np.all(np.diff(tv) <= 1e-3) and tv[0] > 0.95 and tv[-1] < 0.1
    assert np.all(np.diff(ret) <= 1e-3) and ret[0] > 0.95
    assert ret[-1] == pytest.approx(0.4, abs=0.02)  # falls to the base rate w(S)


def test_empirical_mixture_points():
    pts = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [2.0, 3.0]])
    emp = th.EmpiricalMixture(pts, np.array(["a", "a", "b", "b"]))
    assert list(emp.indices("b")) == [2, 3] and list(emp.indices(["a", "b"])) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no point"):
        emp.indices("c")
    # two single points: closed form with Delta_t = exp(-t) |x - x'| / sqrt(1 - exp(-2t))
    t = 0.5
    est = th.tv(emp, [0], [2], t)
    delta = np.exp(-t) * 3 / np.sqrt(1 - np.exp(-2 * t))
    assert est.exact and est.value == pytest.approx(2 * norm.cdf(delta / 2) - 1)
    mc = th.tv(emp, emp.indices("a"), emp.indices("b"), [0.2, 0.8])
    exact_groups = 2 * norm.cdf(np.exp(-np.array([0.2, 0.8])) * 3
                                / np.sqrt(1 - np.exp(-2 * np.array([0.2, 0.8]))) / 2) - 1
    # groups differ only along the second axis, where each is one point: same TV
    assert np.all(np.abs(mc.value - exact_groups) <= 3 * mc.se + 1e-9)


def test_hierarchy_coarse_before_fine():
    h = np.sign(np.random.default_rng(3).normal(size=(2, 16)))
    means = np.array([3 * g * h[0] + 0.6 * c * h[1] for g in (1, -1) for c in (1, -1)]) / 4
    mix = th.GaussianMixture(means, None, 0.01)
    feats = [{"name": "class", "values": {str(i): (i,) for i in range(4)}},
             {"name": "group", "values": {"a": (0, 1), "b": (2, 3)}}]
    out = th.predict_windows(mix, feats, ou_times=[0.0, 5.0])
    by = {(r.feature, r.value, r.parent_value): r for r in out}
    assert len(out) == 4 + 2 + 4
    for c, g in ((0, "a"), (3, "b")):
        fine, coarse = by[("class", str(c), None)], by[("group", g, None)]
        assert coarse.t_after_ou > fine.t_after_ou + 0.3  # coarse decided earlier: larger t
        nested = by[("class", str(c), g)]
        assert nested.base_rate == pytest.approx(0.5) and nested.t_start_before_ou == pytest.approx(
            coarse.t_after_ou, rel=0.05)  # same TV and (W = 1) same eps as the group's T_after
        assert nested.speciation_ou < coarse.speciation_ou
    r = by[("class", "0", None)]
    assert r.delta_after == 0.1 and r.eps_after * (1 + 3 / np.sqrt(2)) == pytest.approx(0.1)
    assert r.eps_before * (1 + 1 / np.sqrt(2)) == pytest.approx(0.1)
    assert r.window_exists and r.t_after_ou < r.t_before_ou
    assert r.ideal_retention[0] == pytest.approx(1.0) and r.ideal_retention[1] == pytest.approx(0.25, abs=0.01)
    assert set(r.to_dict()) >= {"t_after_ou", "t_before_ou", "eps_after", "eps_before",
                                "speciation_ou", "ideal_retention"}


def test_speciation_time():
    mu = np.array([5.0, 0.0, 0.0])
    mix = th.GaussianMixture(np.stack([mu, -mu]), None, 1.0)
    # covariance I + mu mu^T: Lambda = 1 + |mu|^2, t_S = 0.5 ln(26) ~ ln |mu|
    assert th.speciation_time(mix) == pytest.approx(0.5 * np.log(26))
    x, _ = mix.sample(20000, np.random.default_rng(0))
    assert th.speciation_time(x) == pytest.approx(0.5 * np.log(26), abs=0.02)


def test_bad_input():
    mix = two_gaussians()
    with pytest.raises(ValueError, match="out of range"):
        th.tv(mix, [0], [2], 0.5)
    with pytest.raises(ValueError, match="ou_time"):
        th.tv(mix, [0], [1], -1.0)
    with pytest.raises(ValueError, match="eps"):
        th.critical_window(mix, [0], [0, 1], 1.5)
    with pytest.raises(ValueError, match="subset"):
        th.critical_window(mix, [0, 1], [1], 0.1)
    with pytest.raises(ValueError, match="cov"):
        th.GaussianMixture(np.zeros((2, 3)), None, np.ones((2, 2)))
