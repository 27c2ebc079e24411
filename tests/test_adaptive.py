"""The adaptive timestep search (`diffusion_windows.engine.adaptive`) on synthetic retention curves with known edges,
and end to end on the default model against the uniform grid with the same seeds."""
import numpy as np
import pytest
from diffusers import DDPMScheduler

from diffusion_windows.engine.adaptive import Curve, coarse_grid, curve_se, first_round, next_timesteps
from diffusion_windows.diffusion.backend import staircase_nfe
from diffusion_windows.engine.seeds import unit_seed
from diffusion_windows.analysis.windows import window_edges

GRID = np.arange(0, 1000, 20)  # a 50-step DDPM grid (training timesteps)


DDPM = DDPMScheduler()  # its 50-step grid is GRID


def logistic(center, width, floor):
    return lambda t: floor + (1 - floor) / (1 + np.exp((np.asarray(t, float) - center) / width))


def search(f, start_thr, end_thrs, precision, se=0.0, z=1.0):
    """Run the search against retention ``f`` (exact values, standard error ``se``): measured set, rounds."""
    measured = set(float(t) for t in first_round(GRID))
    rounds = 0
    while True:
        ts = sorted(measured)
        curve = Curve(tuple(ts), tuple(f(np.asarray(ts))), tuple([se] * len(ts)), start_thr, tuple(end_thrs))
        new = next_timesteps(GRID, {"v": curve}, precision, z=z)
        if not new:
            return sorted(measured), rounds
        assert not set(new["v"]) & measured  # never asks twice for a timestep
        measured.update(float(t) for t in new["v"])
        rounds += 1


def first_crossing(ts, p, thr):
    below = np.flatnonzero(np.asarray(p) <= thr)
    return float(np.asarray(ts)[below[0]]) if len(below) else None


@pytest.mark.parametrize("center,width", [(300, 30), (555, 20), (720, 60)])
def test_search_finds_full_grid_edges_at_one_step_precision(center, width):
    floor, delta = 0.1, 0.1
    f = logistic(center, width, floor)
    full = window_edges(GRID, f(GRID), floor, delta)
    measured, rounds = search(f, 1 - delta, [floor + delta], precision=20)
    assert window_edges(measured, f(np.asarray(measured)), floor, delta) == full
    # each edge is bracketed by adjacent grid timesteps, so no grid point could move it
    for edge in full:
        assert edge in measured
    assert rounds <= 8
    # the search spends under 30% of the full grid's model evaluations (an end near the top
    # of the grid is the expensive case: each of its bracket's restarts takes ~43 of 50 steps)
    assert staircase_nfe(GRID, measured, 1, DDPM) <= 0.3 * staircase_nfe(GRID, GRID, 1, DDPM)
    # above the end crossing, beyond the first round, only the reach step that crossed it
    beyond = [t for t in measured if t > full[1] and t not in first_round(GRID)]
    assert len(beyond) <= 1


def test_several_end_thresholds_of_one_curve_all_located():
    # a digit's curve is read by its own record (floor = base rate) and by the nested one
    # (floor = w(digit)/w(group)): both ends must be the full grid's
    f = logistic(500, 50, 0.1)
    ends = [0.2, 0.43]
    measured, _ = search(f, 0.9, ends, precision=20)
    for thr in ends:
        assert first_crossing(measured, f(np.asarray(measured)), thr) == first_crossing(GRID, f(GRID), thr)


def test_known_evaluations_on_a_linear_curve():
    # P(t) = 1 - t/1000, end threshold 0.305: the first grid timestep at or below it is 700.
    # Round 0 measures 0..480 (P(480) = 0.52). Round 1, reach: slope -0.001 extrapolates to
    # 695, capped at the next coarse timestep, 620 (0.38). Round 2, reach: 695 again, now
    # under the cap 740 -> 700 (0.30, crossed). Round 3: bracket (620, 700) is wider than 20;
    # regula falsi gives 695, kept to the middle half [640, 680] -> 680 (0.32, above).
    # Bracket (680, 700): done. Evaluations: a restart from t takes t/20 + 1 steps.
    f = lambda t: 1 - np.asarray(t, float) / 1000  # noqa: E731
    measured, rounds = search(f, None, [0.305], precision=20)
    assert measured == [0, 120, 240, 360, 480, 620, 680, 700]
    assert rounds == 3
    assert staircase_nfe(GRID, measured, 1, DDPM) == 1 + 7 + 13 + 19 + 25 + 32 + 35 + 36


def test_verification_finds_an_early_dip_the_full_grid_sees():
    # a linear curve with one dip below the threshold at 640, before the smooth crossing at 700
    def f(t):
        t = np.asarray(t, float)
        return np.where(t == 640, 0.30, 1 - t / 1000)

    assert first_crossing(GRID, f(GRID), 0.31) == 640
    noisy, _ = search(f, None, [0.31], precision=20, se=0.06)
    assert first_crossing(noisy, f(np.asarray(noisy)), 0.31) == 640
    # with no uncertainty the interpolated curve is trusted, and the dip is not looked for
    exact, _ = search(f, None, [0.31], precision=20, se=0.0)
    assert 640 not in exact and first_crossing(exact, f(np.asarray(exact)), 0.31) == 700


def test_unresolved_curves_only():
    settled = Curve(tuple(GRID), tuple(logistic(500, 30, 0.1)(GRID)), (0.0,) * len(GRID), 0.9, (0.2,))
    todo = Curve((0, 480, 960), (1.0, 0.5, 0.1), (0.0, 0.0, 0.0), 0.9, (0.2,))
    new = next_timesteps(GRID, {"done": settled, "todo": todo}, 40)
    assert set(new) == {"todo"}
    assert all(0 < t < 960 and t not in (480,) for t in new["todo"])


def test_curve_that_never_crosses_stops_at_the_top():
    measured, _ = search(lambda t: np.ones_like(np.asarray(t, float)), 0.9, [0.2], precision=20)
    assert max(measured) == GRID.max()  # reached the top looking for the end, then stopped
    assert len(measured) <= len(coarse_grid(GRID))


def test_curve_se_takes_the_larger_of_spread_and_binomial():
    kept = np.array([[4, 1], [0, 1], [4, 1], [0, 1]])
    total = np.full_like(kept, 4)
    se = curve_se(kept, total)
    frac = kept / total
    assert se[0] == pytest.approx(np.std(frac[:, 0], ddof=1) / 2)
    assert se[1] == pytest.approx(np.sqrt(0.25 * 0.75 / 16))  # bases agree: binomial over 16 re-samples


def test_staircase_nfe_counts_steps_below_each_start():
    # restarts from grid timestep 0 take 1 step, from 980 all 50
    assert staircase_nfe(GRID, [0], 1, DDPM) == 1
    assert staircase_nfe(GRID, [980], 1, DDPM) == 50
    assert staircase_nfe(GRID, [0, 980], 4, DDPM) == 4 * 51


def test_unit_seed_depends_only_on_identity():
    a = unit_seed(0, "forward", 3, 500, 1)
    assert a == unit_seed(0, "forward", 3, 500, 1)
    assert a == unit_seed(0, "forward", 3, 500.0, 1)
    assert a != unit_seed(1, "forward", 3, 500, 1)
    assert a != unit_seed(0, "reverse", 3, 500, 1)
    assert 0 <= a < 2 ** 63


@pytest.mark.slow
def test_auto_reads_the_uniform_runs_restarts_and_finds_its_edges():
    """On the default model: every restart auto runs is one of the uniform run's (same seeds), for fewer evaluations."""
    from diffusion_windows import load_default_classifier, load_default_pipeline
    from diffusion_windows.analysis.counts import merge_units
    from diffusion_windows.analysis.records import window_records
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.features import DEFAULT_FEATURES
    from diffusion_windows.options import parse_timesteps

    backend = DiffusionBackend(load_default_pipeline(), load_default_classifier(), DEFAULT_FEATURES, 20)
    runs = {}
    for spec in ("0:1000:50", "auto"):
        settings = Settings(samples=40, restarts=4, timesteps=parse_timesteps(spec, 1000), seed=5, batch_size=512,
                            tolerance=0.1, edge_precision=50)
        runs[spec] = Engine(backend, settings, MemoryStore(), quiet=True).run()
    uni, auto = (merge_units(runs[s].store.read_all()) for s in ("0:1000:50", "auto"))
    shared = 0
    for b, entry in auto.items():
        assert entry.label == uni[b].label
        for t, labels in entry.labels.items():
            # auto runs restarts 0..k-1 of (b, t), k <= restarts: the first k of the uniform run's
            assert 1 <= len(labels) <= 4 and labels == uni[b].labels[t][:len(labels)], (b, t)
            shared += 1
    assert shared > 40 * 5
    nfe = {s: runs[s].nfe() for s in runs}
    assert nfe["auto"] < nfe["0:1000:50"] / 2
    assert len(runs["auto"].rounds) >= 2
    recs = {s: window_records(merge_units(runs[s].store.read_all()), backend.features, 10, tolerance=0.1, n_boot=1)
            for s in runs}
    u = {r.key: r for r in recs["0:1000:50"]}
    diffs = []
    for r in recs["auto"]:
        ru = u[r.key]
        for side in ("start_timestep", "end_timestep"):
            if getattr(r, side) is not None or getattr(ru, side) is not None:
                diffs.append(np.inf if None in (getattr(r, side), getattr(ru, side))
                             else abs(getattr(r, side) - getattr(ru, side)))
    assert np.mean(np.asarray(diffs) <= 50) >= 0.8  # within one grid step of the uniform grid's edges
