"""Edge intervals are claims: coverage on simulated clustered designs with known truth, and their seeds.

A run's base samples carry a value with probability ``w`` (the floor is their share, estimated);
each base sample of the value has its own probability ``p_i(t)`` of keeping it at timestep ``t``
(the clustered design: restarts of one base sample are not independent), whose population mean
is ``R(t)``. The true edges are `window_edges` of ``R`` with the true floor ``w``.
"""
import numpy as np
import pytest

from diffusion_windows.analysis.counts import merge_units
from diffusion_windows.analysis.records import window_records
from diffusion_windows.analysis.windows import (bootstrap_seed, edge_summary, estimate_window, floor_draws,
                                                window_edges)
from diffusion_windows.engine import UnitResult
from diffusion_windows.engine.store import UnitRecord
from diffusion_windows.features import Feature

GRID = np.arange(0.0, 1000.0, 50.0)
N_RUN, W, DELTA, K = 300, 0.25, 0.1, 16  # base samples of a run, the value's share, tolerance, restarts


def population_curve(t):
    """R(t): 1 at t = 0 down to W, falling fast through the start's threshold and slowly through the
    end's (W + DELTA): there the floor's error (its share of 300 base samples) moves the end by more
    than the curve's own error does."""
    return W + (1 - W) * (0.55 / (1 + np.exp((t - 200.0) / 40.0)) + 0.45 / (1 + np.exp((t - 500.0) / 150.0)))


def simulate(rng):
    """One run's counts of the value: ``kept``, ``total`` [k, G] and ``k``, the value's base samples."""
    k = rng.binomial(N_RUN, W)
    r = population_curve(GRID)
    u = rng.uniform(-1, 1, size=(k, 1))                       # each base sample's own offset, mean 0
    p = np.clip(r + 0.2 * u * r * (1 - r), 0, 1)              # per-base probabilities, population mean R
    total = np.full((k, GRID.size), K)
    return rng.binomial(total, p), total, k


def coverage(floor_aware: bool, n_sets: int = 200, n_boot: int = 200):
    true_start, true_end = window_edges(GRID, population_curve(GRID), W, DELTA)
    hits = {"start": 0, "end": 0}
    widths = []
    for s in range(n_sets):
        rng = np.random.default_rng([7, s])
        kept, total, k = simulate(rng)
        est = estimate_window(GRID, kept, total, k / N_RUN, tolerance=DELTA, n_boot=n_boot, seed=[11, s],
                              floor_bases=N_RUN if floor_aware else None)
        hits["start"] += est.start_ci is not None and est.start_ci[0] <= true_start <= est.start_ci[1]
        hits["end"] += est.end_ci is not None and est.end_ci[0] <= true_end <= est.end_ci[1]
        widths.append((est.end_ci[1] - est.end_ci[0]) / 50.0)
    return hits["start"] / n_sets, hits["end"] / n_sets, float(np.median(widths))


@pytest.fixture(scope="module")
def both():
    return coverage(True), coverage(False)


def test_floor_aware_end_intervals_cover_the_population_edge(both):
    (start, end, width), _ = both
    assert end >= 0.9, end
    assert start >= 0.9, start
    assert width <= 6, width  # not covering by spanning the whole tail


def test_a_fixed_floor_undercovers_the_same_design(both):
    (_, end_new, width_new), (_, end_old, width_old) = both
    # 0.90 here (0.98 floor-aware): the sure-end bound lifts a fixed floor's coverage a little, not to 95%
    assert end_old < 0.93 and end_old < end_new - 0.05, (end_old, end_new)
    assert width_old < width_new  # the floor's error is what the wider interval holds


def test_floor_draws_are_binomial_shares():
    rng = np.random.default_rng(0)
    f = floor_draws(0.25, 300, 20000, rng)
    assert f.mean() == pytest.approx(0.25, abs=0.002)
    assert f.std() == pytest.approx(np.sqrt(0.25 * 0.75 / 300), rel=0.05)
    assert np.allclose(f * 300, np.round(f * 300), atol=1e-9)   # shares of whole base samples
    assert np.all(floor_draws(0.3, None, 5, rng) == 0.3)       # a floor known exactly is held


def test_estimate_window_without_floor_bases_is_unchanged_and_floor_only_moves_the_end():
    rng = np.random.default_rng(3)
    kept, total, k = simulate(rng)
    old = estimate_window(GRID, kept, total, k / N_RUN, n_boot=300, seed=5)
    new = estimate_window(GRID, kept, total, k / N_RUN, n_boot=300, seed=5, floor_bases=N_RUN)
    # a floor given as a number alone still works; the band, the start and the point edges do not move
    assert (new.start_timestep, new.end_timestep, new.start_ci) == (old.start_timestep, old.end_timestep,
                                                                    old.start_ci)
    assert new.ci_low == old.ci_low and new.ci_high == old.ci_high
    assert new.end_ci[0] <= old.end_ci[0] and new.end_ci[1] >= old.end_ci[1] - 50
    with pytest.raises(ValueError, match="floor_bases"):
        estimate_window(GRID, kept, total, k / N_RUN, floor_bases=0)


def test_bootstrap_seed_depends_on_run_seed_and_identity():
    a = bootstrap_seed(0, "digit", "3", None)
    assert a == bootstrap_seed(0, "digit", "3", None)
    assert len({a, bootstrap_seed(1, "digit", "3", None), bootstrap_seed(0, "digit", "4", None),
                bootstrap_seed(0, "digit", "3", "low")}) == 4


DIGIT = Feature("digit", {str(d): (d,) for d in range(4)})
GROUP = Feature("group", {"low": (0, 1), "high": (2, 3)})


def _merged(n_base=40, seed=0):
    """Units of ``n_base`` base samples (label b % 4) whose restarts keep the label less often with time."""
    rng = np.random.default_rng(seed)
    ts = [0, 100, 200, 300, 400, 500]
    units = []
    for b in range(n_base):
        label = b % 4
        rows = [[label if rng.random() < 1 - j / 6 else int(rng.integers(4)) for _ in range(3)] for j in range(6)]
        r = UnitResult(b, label, tuple(ts), tuple(tuple(x) for x in rows), 1)
        units.append(UnitRecord.from_json(r.to_json(f"r0-b{b}", 0)))
    return merge_units(units)


def test_records_draw_from_the_run_seed_and_their_own_identity():
    merged = _merged()
    r0 = {r.key: r for r in window_records(merged, [DIGIT, GROUP], 4, tolerance=0.1, seed=0, n_boot=200)}
    again = {r.key: r for r in window_records(merged, [DIGIT, GROUP], 4, tolerance=0.1, seed=0, n_boot=200)}
    r1 = {r.key: r for r in window_records(merged, [DIGIT, GROUP], 4, tolerance=0.1, seed=1, n_boot=200)}
    assert r0 == again                                                  # bit for bit
    assert any(r0[k].ci_low != r1[k].ci_low for k in r0 if r0[k].n_base)  # another run seed, other draws
    # two values with the same counts draw differently: each record has its own stream
    alone = {r.key: r for r in window_records(merged, [DIGIT], 4, tolerance=0.1, seed=0, n_boot=200)}
    for key, rec in alone.items():                                      # and none depends on the others
        assert rec.ci_low == r0[key].ci_low and rec.start_ci == r0[key].start_ci, key


def test_records_redraw_their_floor_among_the_feature_or_parent():
    merged = _merged(n_base=80, seed=1)
    recs = {r.key: r for r in window_records(merged, [DIGIT, GROUP], 4, tolerance=0.1, seed=0, n_boot=200)}
    nested = recs[("digit", "0", "low")]
    assert nested.floor == pytest.approx(0.5)
    from diffusion_windows.analysis.counts import record_counts

    counts = {(c.feature, c.value, c.parent): c for c in record_counts(merged, [DIGIT, GROUP], 4)}
    assert counts[("digit", "0", None)].floor_bases == 80
    assert counts[("digit", "0", "low")].floor_bases == 40
    assert counts[("group", "low", None)].floor_bases == 80


def test_auto_interval_spans_the_unmeasured_grid_timesteps_of_its_gap():
    grid = np.arange(0.0, 1000.0, 50.0)
    measured = np.array([0.0, 100.0, 300.0, 400.0, 550.0])
    # every draw puts the end at 550 (index 4): the crossing may be anywhere in (400, 550] on the grid
    lo_hi, _ = edge_summary(np.full(50, 4), measured, 0.95, side="end", grid=grid)
    assert lo_hi == (450.0, 550.0)
    # a start at 100 (index 1) may be any grid timestep in [100, 300)
    lo_hi, _ = edge_summary(np.full(50, 1), measured, 0.95, side="start", grid=grid)
    assert lo_hi == (100.0, 250.0)
    # the full grid measured: nothing to widen
    assert edge_summary(np.full(50, 3), grid, 0.95, side="end", grid=grid)[0] == (150.0, 150.0)


def test_end_draws_that_cross_at_no_measured_timestep_lie_past_the_last_one_and_are_not_dropped():
    """An end draw without a crossing (its redrawn floor low, its curve high) lies past the last measured
    timestep: more than (1 - confidence) / 2 of them carry the interval's upper end to the grid's top
    (from the first grid timestep past the last measured one); fewer leave it where the crossing draws put it."""
    grid = np.arange(0.0, 1000.0, 50.0)
    measured = np.array([0.0, 100.0, 300.0, 400.0, 550.0])
    draws = np.array([3] * 90 + [-1] * 10)  # 10% of draws cross nowhere measured
    (lo, hi), none = edge_summary(draws, measured, 0.95, side="end", grid=grid)
    assert none == pytest.approx(0.1) and lo == 350.0 and hi == 950.0
    # every draw crossing nowhere measured: no interval, as before
    assert edge_summary(np.full(50, -1), measured, 0.95, side="end", grid=grid)[0] is None
    # 1% without a crossing: inside the 2.5% tail, the interval stays at the crossing draws' 400
    draws = np.array([3] * 99 + [-1])
    assert edge_summary(draws, measured, 0.95, side="end", grid=grid)[0] == (350.0, 400.0)
    # a fully measured grid: at or past its top
    draws = np.array([3] * 90 + [-1] * 10)
    assert edge_summary(draws, grid, 0.95, side="end")[0] == (150.0, 950.0)
    # a start without a crossing (no window in that draw) is left out, as before
    assert edge_summary(np.array([1] * 90 + [-1] * 10), measured, 0.95, side="start", grid=grid)[0] == (100.0, 250.0)


def test_auto_estimate_covers_the_full_grid_edge_of_a_known_curve():
    grid = np.arange(0.0, 1000.0, 50.0)
    measured = grid[[0, 2, 4, 6, 8, 11, 14, 19]]          # a partly measured grid
    truth = window_edges(grid, population_curve(grid), W, DELTA)
    hits = 0
    for s in range(40):
        rng = np.random.default_rng([9, s])
        kept, total, k = simulate(rng)
        cols = np.isin(grid, measured)
        est = estimate_window(measured, kept[:, cols], total[:, cols], k / N_RUN, n_boot=200, seed=s,
                              floor_bases=N_RUN, grid=grid)
        hits += est.end_ci[0] <= truth[1] <= est.end_ci[1] and est.start_ci[0] <= truth[0] <= est.start_ci[1]
    assert hits >= 36, hits


def hovering_curve(t):
    """R(t) falling through 1 - delta, then hovering 0.05 above the end's threshold W + delta over five
    grid points (400-600) before it crosses at 650: the stretch where a noisy curve dips early."""
    return W + (0.85 - W) / (1 + np.exp((t - 250.0) / 40.0)) + 0.15 / (1 + np.exp((t - 650.0) / 40.0))


def hovering_coverage(restarts: int, n_sets: int = 300, n_boot: int = 300):
    """End coverage and median width (grid steps) of the reported interval, and of the draws' percentile
    interval alone (the same draws), over ``n_sets`` runs of the hovering curve."""
    from diffusion_windows.analysis.windows import bootstrap_retention, edge_indices

    true_end = window_edges(GRID, hovering_curve(GRID), W, DELTA)[1]
    hits, widths = {"reported": 0, "percentile": 0}, {"reported": [], "percentile": []}
    for s in range(n_sets):
        rng = np.random.default_rng([3, s])
        k = rng.binomial(N_RUN, W)
        r = hovering_curve(GRID)
        p = np.clip(r + 0.2 * rng.uniform(-1, 1, size=(k, 1)) * r * (1 - r), 0, 1)
        total = np.full((k, GRID.size), restarts)
        kept = rng.binomial(total, p)
        est = estimate_window(GRID, kept, total, k / N_RUN, tolerance=DELTA, n_boot=n_boot, seed=[5, s],
                              floor_bases=N_RUN)
        again = np.random.default_rng([5, s])  # estimate_window's draws, read by the percentile alone
        boot = bootstrap_retention(kept, total, n_boot, again)
        thr = floor_draws(k / N_RUN, N_RUN, n_boot, again) + DELTA
        plain = edge_summary(edge_indices(boot, 1 - DELTA, thr)[1], GRID, 0.95, side="end")[0]
        for name, ci in (("reported", est.end_ci), ("percentile", plain)):
            hits[name] += ci is not None and ci[0] <= true_end <= ci[1]
            widths[name].append((ci[1] - ci[0]) / 50.0)
    return {name: (hits[name] / n_sets, float(np.median(widths[name]))) for name in hits}


def test_an_end_hovering_near_its_threshold_is_bounded_by_the_first_surely_crossed_timestep():
    """One re-sample per base sample (what --timesteps auto starts each timestep with) on a curve that
    hovers just above floor + delta: one of the hovering points dips below it by chance in many runs,
    the draws repeat that dip, and the percentile interval of their first crossings stops short of the
    population's end (83% here). Reaching at least the first timestep the draws put surely below the
    threshold (`analysis.edges.sure_end`) restores 95% coverage at one grid step more width; with
    four re-samples both are calibrated and the bound adds at most one grid step."""
    one = hovering_coverage(1)
    assert one["percentile"][0] <= 0.88, one
    assert one["reported"][0] >= 0.93, one
    assert one["reported"][1] <= one["percentile"][1] + 1, one
    four = hovering_coverage(4, n_sets=150)
    assert four["percentile"][0] >= 0.94 and four["reported"][0] >= 0.94, four
    assert four["reported"][1] <= four["percentile"][1] + 1, four


def test_sure_end_is_the_first_point_past_the_estimate_the_draws_put_below_their_thresholds():
    from diffusion_windows.analysis.edges import end_summary, sure_end

    t = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    boot = np.tile([0.9, 0.5, 0.35, 0.31, 0.1], (100, 1))
    boot[:10, 3] = 0.2  # 90% of draws put 300 above 0.3, 10% below: not sure
    assert sure_end(boot, np.full(100, 0.3), 0, 0.975) == 4
    assert sure_end(boot, 0.4, 0, 0.975) == 2 and sure_end(boot, 0.4, 3, 0.975) == 3
    assert sure_end(boot[:, :4], np.full(100, 0.3), 0, 0.975) == -1
    # the percentile interval of the draws' ends is 300 alone (90 at 400, 10 at 300 -> lo 300, hi 400)
    ends = np.where(np.arange(100) < 10, 3, 4)
    assert end_summary(ends, boot, np.full(100, 0.3), 3, t, 0.95) == ((300.0, 400.0), 0.0)
    # no point surely below: the interval reaches past the last measured timestep (the grid's top)
    ci, _ = end_summary(np.full(100, 3), boot[:, :4], np.full(100, 0.3), 3, t[:4], 0.95,
                        grid=np.arange(0.0, 1000.0, 100.0))
    assert ci == (300.0, 900.0)


def test_a_point_where_a_few_single_re_samples_all_lost_the_value_is_not_sure():
    """Three base samples with one re-sample each, all lost at 300: every bootstrap draw agrees (P* = 0),
    so the draws alone would call 300 surely below floor + delta. The Wilson interval of its pooled
    re-samples (0 of 3: up to 0.56) does not lie below 0.35, so the end's interval reaches past it, to
    400, where 0 of 40 pooled re-samples bound it (up to 0.09)."""
    t = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    kept = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]) * np.array([1, 1, 1, 1, 40])
    total = np.array([[1, 1, 1, 1, 40]] * 3)
    from diffusion_windows.analysis.edges import sure_end
    from diffusion_windows.analysis.windows import bootstrap_retention, wilson_interval

    boot = bootstrap_retention(kept, total, 200, np.random.default_rng(0))
    upper = wilson_interval(kept.sum(axis=0), total.sum(axis=0), 0.95)[1]
    assert sure_end(boot, 0.35, 3, 0.975) == 3  # the draws alone
    assert sure_end(boot, 0.35, 3, 0.975, upper, 0.35) == 4 and upper[3] > 0.5 and upper[4] < 0.1
    est = estimate_window(t, kept, total, 0.25, tolerance=0.1, n_boot=200, seed=0)
    assert est.end_timestep == 300.0 and est.end_ci[1] == 400.0
