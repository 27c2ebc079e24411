"""Tests for diffusion_windows.analysis.windows on synthetic curves with known edges."""

import json
import math

import numpy as np
import pytest

from diffusion_windows.analysis.windows import (
    WindowEstimate,
    edge_interval_widths,
    estimate_window,
    jump_window,
    wilson_interval,
    window_edges,
)

GRID = np.arange(0.0, 1000.0, 50.0)  # 20 training timesteps, ascending


def logistic_curve(t, centre, scale, base):
    """Retention falling from 1 at t = 0 to ``base`` at large t (training timesteps)."""
    return base + (1 - base) / (1 + np.exp((t - centre) / scale))


def crossings(centre, scale, base, delta):
    """Exact timesteps where the logistic curve crosses 1 - delta and base + delta."""
    def solve(level):
        s = (level - base) / (1 - base)  # sigmoid value at the crossing
        return centre + scale * math.log(1 / s - 1)
    return solve(1 - delta), solve(base + delta)


def binomial_counts(rng, p_base, k):
    """p_base [n_base, G] per-base probabilities -> kept, total with k restarts each."""
    total = np.full(p_base.shape, k)
    return rng.binomial(total, p_base), total


def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(np.array([0, 10, 0]), np.array([10, 10, 0]))
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.2775, abs=1e-4)
    assert hi[1] == pytest.approx(1.0) and lo[1] == pytest.approx(0.7225, abs=1e-4)
    assert np.isnan(lo[2]) and np.isnan(hi[2])


def test_edges_of_logistic_curve_within_a_grid_step_and_covered():
    centre, scale, base, delta = 480.0, 60.0, 0.1, 0.1
    t_start, t_end = crossings(centre, scale, base, delta)
    p = logistic_curve(GRID, centre, scale, base)
    grid_start = GRID[p >= 1 - delta].max()  # the edges on the grid of the true curve
    grid_end = GRID[p <= base + delta].min()
    covered = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        kept, total = binomial_counts(rng, np.tile(p, (200, 1)), 10)
        est = estimate_window(GRID, kept, total, base, tolerance=delta, n_boot=400, seed=seed)
        assert abs(est.start_timestep - t_start) < 50
        assert abs(est.end_timestep - t_end) < 50
        assert est.start_timestep < est.end_timestep
        covered += (est.start_ci[0] <= grid_start <= est.start_ci[1]) and (
            est.end_ci[0] <= grid_end <= est.end_ci[1]
        )
        assert np.all(np.asarray(est.ci_low) <= np.asarray(est.retention) + 1e-12)
        assert np.all(np.asarray(est.ci_high) >= np.asarray(est.retention) - 1e-12)
    assert covered >= 8


def test_band_covers_true_curve():
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    rng = np.random.default_rng(1)
    kept, total = binomial_counts(rng, np.tile(p, (100, 1)), 8)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=500, seed=1)
    inside = (np.asarray(est.ci_low) <= p + 1e-12) & (p <= np.asarray(est.ci_high) + 1e-12)
    assert inside.mean() >= 0.85


def test_clustered_band_wider_than_pooled_binomial():
    """Per-base random offsets: the bootstrap over base samples sees the clustering."""
    rng = np.random.default_rng(2)
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    logit = np.log(p / (1 - p))
    offsets = rng.normal(0.0, 2.0, size=(60, 1))
    p_base = 1 / (1 + np.exp(-(logit[None, :] + offsets)))
    kept, total = binomial_counts(rng, p_base, 20)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=500, seed=0)
    lo, hi = wilson_interval(kept.sum(0), total.sum(0))
    mid = (p > 0.3) & (p < 0.8)
    boot_width = (np.asarray(est.ci_high) - np.asarray(est.ci_low))[mid]
    assert np.all(boot_width > 1.5 * (hi - lo)[mid])


def test_never_crossing_curves_give_none():
    flat = np.full(GRID.size, 0.5)
    kept = np.tile(np.round(flat * 20).astype(int), (5, 1))
    total = np.full_like(kept, 20)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=50)
    assert est.start_timestep is None and est.end_timestep is None
    assert est.start_ci is None and est.start_none_fraction == 1.0
    assert est.end_ci is None and est.end_none_fraction == 1.0
    # always retained: the start is the last grid point, no end
    est = estimate_window(GRID, total, total, 0.1, n_boot=50)
    assert est.start_timestep == GRID[-1] and est.end_timestep is None
    # already at the base rate everywhere: the end is the first grid point, no start
    est = estimate_window(GRID, np.full_like(total, 2), total, 0.1, n_boot=50)
    assert est.start_timestep is None and est.end_timestep == GRID[0]


def test_noisy_non_monotone_rule():
    t = np.arange(9) * 100.0
    p = np.array([1.0, 0.95, 0.5, 0.92, 0.3, 0.1, 0.25, 0.1, 0.1])
    total = np.full((2, 9), 100)
    kept = np.tile(np.round(p * 100).astype(int), (2, 1))
    est = estimate_window(t, kept, total, 0.1, n_boot=20)
    assert est.start_timestep == 100.0  # the bump to 0.92 at t = 300 does not count
    assert est.end_timestep == 500.0  # first point at or below 0.2; the bump at 600 does not count
    assert est.start_ci == (100.0, 100.0) and est.end_ci == (500.0, 500.0)


def test_missing_counts_are_ignored():
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    rng = np.random.default_rng(3)
    kept, total = binomial_counts(rng, np.tile(p, (30, 1)), 10)
    full = estimate_window(GRID, kept, total, 0.1, n_boot=100)
    total2, kept2 = total.copy(), kept.copy()
    total2[0, 3] = kept2[0, 3] = 0
    part = estimate_window(GRID, kept2, total2, 0.1, n_boot=100)
    expected = np.mean(kept[1:, 3] / total[1:, 3])
    assert part.retention[3] == pytest.approx(expected)
    assert part.retention[4] == full.retention[4]
    total2[:, 5] = kept2[:, 5] = 0  # a grid point with no data at all
    gap = estimate_window(GRID, kept2, total2, 0.1, n_boot=100)
    assert math.isnan(gap.retention[5]) and math.isnan(gap.ci_low[5])
    assert gap.start_timestep is not None and gap.start_timestep != GRID[5]


def test_nested_floor_moves_end():
    p = logistic_curve(GRID, 500.0, 80.0, 0.5)  # a digit inside a 2-digit group
    kept = np.tile(np.round(p * 1000).astype(int), (3, 1))
    total = np.full_like(kept, 1000)
    with_base = estimate_window(GRID, kept, total, 0.1, n_boot=50)
    nested = estimate_window(GRID, kept, total, 0.1, floor=0.5, n_boot=50)
    assert with_base.end_timestep is None  # never reaches 0.2
    assert nested.end_timestep == GRID[p <= 0.6].min() and nested.floor == 0.5


def test_overlapping_thresholds_give_no_window():
    kept = np.full((4, GRID.size), 19)
    total = np.full_like(kept, 20)
    est = estimate_window(GRID, kept, total, 0.85, n_boot=20)
    assert est.start_timestep is None and est.end_timestep is None


def test_single_base_sample_uses_wilson_band():
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    rng = np.random.default_rng(4)
    kept, total = binomial_counts(rng, p[None, :], 50)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=200)
    lo, hi = wilson_interval(kept[0], total[0])
    np.testing.assert_allclose(est.ci_low, lo)
    np.testing.assert_allclose(est.ci_high, hi)
    assert est.n_base == 1 and est.start_ci is not None


def test_jump_criterion_step_vs_gradual():
    t = np.arange(10) * 100.0
    step = np.array([1, 1, 1, 0.95, 0.9, 0.2, 0.15, 0.1, 0.1, 0.1])
    assert jump_window(t, step) == (500.0, 400.0)  # (upper, lower) timesteps
    assert jump_window(t, np.linspace(1, 0.1, 10)) is None  # gradual
    dip = step.copy()
    dip[1] = 0.6  # reading toward less noise: 0.95 -> 1 -> 0.6 is a drop of -0.4
    assert jump_window(t, dip) is None
    assert jump_window(t[::-1], step[::-1]) == (500.0, 400.0)  # grid order does not matter


def test_deterministic_with_seed():
    rng = np.random.default_rng(5)
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    kept, total = binomial_counts(rng, np.tile(p, (40, 1)), 5)
    a = estimate_window(GRID, kept, total, 0.1, n_boot=300, seed=7)
    b = estimate_window(GRID, kept, total, 0.1, n_boot=300, seed=7)
    c = estimate_window(GRID, kept, total, 0.1, n_boot=300, seed=8)
    assert a == b
    assert a.ci_low != c.ci_low


def test_json_round_trip():
    rng = np.random.default_rng(6)
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    kept, total = binomial_counts(rng, np.tile(p, (40, 1)), 5)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=100)
    d = est.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert isinstance(d["start_ci"], list) and isinstance(d["n_base"], int)
    assert WindowEstimate.from_dict(json.loads(text)) == est


def test_edge_interval_widths():
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    kept = np.tile(np.round(p * 1000).astype(int), (3, 1))
    total = np.full_like(kept, 1000)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=50)
    assert est.start_ci == (est.start_timestep,) * 2
    assert edge_interval_widths(est) == (50.0, 50.0)  # one grid step of resolution
    flat = estimate_window(GRID, np.full_like(total, 500), total, 0.1, n_boot=20)
    assert edge_interval_widths(flat) == (None, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(timesteps=GRID[::-1]), "ascending"),
        (dict(kept=np.full((2, 20), 6)), "kept <= total"),
        (dict(total=np.full((2, 19), 5)), r"\[n_base, 20\]"),
        (dict(base_rate=1.5), "base_rate"),
        (dict(tolerance=0.0), "tolerance"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(timesteps=GRID, kept=np.full((2, 20), 1), total=np.full((2, 20), 5), base_rate=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        estimate_window(args.pop("timesteps"), args.pop("kept"), args.pop("total"), **args)


def test_window_edges_matches_estimate():
    p = logistic_curve(GRID, 500.0, 80.0, 0.1)
    kept = np.tile(np.round(p * 1000).astype(int), (3, 1))
    total = np.full_like(kept, 1000)
    est = estimate_window(GRID, kept, total, 0.1, n_boot=20)
    assert window_edges(GRID, est.retention, 0.1) == (est.start_timestep, est.end_timestep)
    assert window_edges(GRID, est.retention, 0.85) == (None, None)
