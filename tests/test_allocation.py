"""Re-sample allocation of ``--timesteps auto`` (`engine.allocation`, `engine.engine.Engine`) on synthetic
retention curves with known edges and known binomial noise (`engine.synthetic.SyntheticBackend`): fewer
evaluations than fixed re-sampling for the same intervals, the verify step, the budget and its base samples,
the replay of a recorded uniform run, and what windows.json reports."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from diffusion_windows.analysis.counts import merge_units
from diffusion_windows.analysis.records import window_records
from diffusion_windows.engine import Engine, MemoryStore, Settings
from diffusion_windows.engine.allocation import STOPS
from diffusion_windows.engine.backend import restart_slots
from diffusion_windows.engine.synthetic import SyntheticBackend
from diffusion_windows.features import labels_feature

GRID = tuple(range(0, 1000, 20))
ROOT = Path(__file__).resolve().parent.parent


def logistic_backend():
    """Two labels whose retention falls around 300 and 500 (width 25); base samples shifted by up to
    +-30 timesteps, so a bootstrap over base samples has a spread to see."""
    return SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 300 - 200 * label) / 25)), labels=("a", "b"),
                            features=(labels_feature(("a", "b")),), grid=GRID,
                            base_shift=lambda b: 15.0 * ((b * 7919) % 5 - 2))


def run(backend, **settings):
    return Engine(backend, Settings(**{"restarts": 8, "seed": 1, **settings}), MemoryStore(), quiet=True).run()


def records(engine, n_boot=200):
    return {r.key: r for r in window_records(merge_units(engine.store.read_all()), engine.backend.features,
                                             len(engine.backend.labels), tolerance=0.1, n_boot=n_boot)}


def edge_gaps(a, b):
    """|edge of a - edge of b| over every record and side of both (inf where only one has the edge)."""
    gaps = []
    for key, r in a.items():
        for side in ("start_timestep", "end_timestep"):
            x, y = getattr(r, side), getattr(b[key], side)
            if x is not None or y is not None:
                gaps.append(np.inf if None in (x, y) else abs(x - y))
    return gaps


def end_width(t, kept, total):
    """Width of the reported interval (a bootstrap over base samples) of the end at 0.6 of a curve."""
    from diffusion_windows.analysis.windows import bootstrap_weights, edge_interval, weighted_curves

    boot = weighted_curves(bootstrap_weights(len(kept), 200, np.random.default_rng(0)), kept / total, total > 0)
    lo, hi = edge_interval(t, boot, np.inf, 0.6, "end")
    return hi - lo


def test_restart_slots_read_bare_times_as_every_restart():
    assert restart_slots([0, (500, 2, 8), [40.0, 0, 1]], 3) == [(0.0, 0, 3), (500.0, 2, 8), (40.0, 0, 1)]


def test_allocation_reaches_the_interval_for_fewer_evaluations_than_fixed_resampling():
    """Starting each (base, timestep) with 2 re-samples (bisect and verify timesteps with one) and adding
    them where an edge could move reaches the interval asked for on as many edges as giving every
    (base, timestep) all 8 at once, for far fewer evaluations, with edges as close to the full grid's."""
    alloc = run(logistic_backend(), samples=120, timesteps="auto", edge_precision=60, initial_restarts=2)
    fixed = run(logistic_backend(), samples=120, timesteps="auto", edge_precision=60, initial_restarts=8)
    uniform = run(logistic_backend(), samples=120, timesteps=list(GRID))
    assert alloc.nfe() < 0.6 * fixed.nfe() < 0.6 * uniform.nfe() / 2
    assert set(alloc.stopped.values()) <= {"precision", "grid"}
    reached = {name: sum(v == "precision" for v in r.stopped.values()) for name, r in (("alloc", alloc), ("fixed", fixed))}
    assert reached["alloc"] >= max(reached["fixed"], 3)  # most edges reach the interval asked for
    for e, why in alloc.stopped.items():
        if why == "precision":
            assert alloc.edges[e].width <= 60
    gaps = edge_gaps(records(alloc), records(uniform))
    assert len(gaps) == 4 and max(gaps) <= 40  # within two grid steps of the full grid's edges


def test_resamples_go_where_an_edge_could_move_and_are_the_uniform_grids_own():
    alloc = run(logistic_backend(), samples=60, timesteps="auto", edge_precision=40, initial_restarts=2)
    uniform = run(logistic_backend(), samples=60, timesteps=list(GRID))
    merged = merge_units(alloc.store.read_all())
    per_point = {(b, t): len(v) for b, e in merged.items() for t, v in e.labels.items()}
    assert min(per_point.values()) >= 1 and max(per_point.values()) > 2 and np.median(list(per_point.values())) <= 2
    edges = [x for r in records(alloc).values() for x in (r.start_timestep, r.end_timestep) if x is not None]
    for (b, t), k in per_point.items():  # more than the initial two only near an edge
        if k > 2:
            assert min(abs(t - x) for x in edges) <= 100, (b, t, k)
    added = [u for u in alloc.store.read_all() if any(u.first)]  # later rounds ran restarts k0.. only
    assert added and all(len(u.first) == len(u.times) for u in added)
    # every re-sample is the uniform grid's own (seed from base, timestep and restart index only)
    full = merge_units(uniform.store.read_all())
    for b, e in merged.items():
        for t, labels in e.labels.items():
            assert labels == full[b].labels[t][:len(labels)], (b, t)


def test_verify_step_finds_a_dip_the_full_grid_sees_before_the_smooth_crossing():
    """A slow linear fall with one grid timestep (540) dipping below the end threshold: the full grid's end
    is there, 100 timesteps before the smooth crossing; auto must look and find it, not stop on the
    interpolation between its neighbours."""
    def retention(label, t):
        return 0.0 if abs(t - 540) < 1e-9 else float(np.clip(1 - t / 800, 0, 1))

    def backend():
        return SyntheticBackend(retention, labels=("a", "b"), features=(labels_feature(("a", "b")),), grid=GRID)

    uniform = records(run(backend(), samples=40, timesteps=list(GRID)))
    auto_engine = run(backend(), samples=40, timesteps="auto", edge_precision=20)
    auto = records(auto_engine)
    assert {r.end_timestep for r in uniform.values()} == {540.0}  # the measured curve 0.5 + p/2 crosses 0.6 there first
    assert {r.end_timestep for r in auto.values()} == {540.0}
    assert auto_engine.nfe() < run(backend(), samples=40, timesteps=list(GRID)).nfe() / 2


def test_budget_stops_the_search_and_each_edge_says_why():
    free = run(logistic_backend(), samples=40, timesteps="auto", edge_precision=20)
    budget = free.nfe() // 2
    capped = run(logistic_backend(), samples=40, timesteps="auto", edge_precision=20, max_evaluations=budget)
    assert capped.nfe() <= budget < free.nfe()
    assert "budget" in capped.stopped.values() and "budget" not in free.stopped.values()
    report = capped.edge_report()
    assert report and all(row["start_stopped_by"] in STOPS and row["end_stopped_by"] in STOPS
                          for row in report.values())
    rounds = capped.round_summary()
    assert sum(r["nfe"] for r in rounds) == capped.nfe() and all(r["nfe"] > 0 for r in rounds)


def test_a_budget_left_after_the_price_stop_buys_more_resamples_where_edges_could_move():
    """Without a budget the search stops when no re-sample is worth its evaluations ("grid"); with one, the
    rest of it goes to every re-sample that could move an edge, best per evaluation first."""
    free = run(logistic_backend(), samples=40, timesteps="auto", edge_precision=20)
    more = run(logistic_backend(), samples=40, timesteps="auto", edge_precision=20, max_evaluations=2 * free.nfe())
    assert free.nfe() < more.nfe() <= 2 * free.nfe()
    assert len(more.rounds) > len(free.rounds) and more.rounds[:2] == free.rounds[:2]  # the same start
    widths = [np.median([e.width for e in r.edges.values()]) for r in (free, more)]
    assert widths[1] <= widths[0]


def test_budget_makes_more_base_samples_of_the_values_that_need_them():
    """With every point at --restarts, only more base samples narrow an edge: under a budget the engine
    makes a block of them, keeps those of the values that asked, and counts their generation."""
    backend = logistic_backend()
    engine = run(backend, samples=8, restarts=2, timesteps="auto", edge_precision=20, max_evaluations=60000)
    assert engine.blocks, engine.stopped
    block = engine.blocks[0]
    assert block.start == 8 and block.nfe == (block.stop - block.start) * backend.cost(GRID[-1])
    assert any(start == 8 for start, _, _ in backend.made)  # made in a block of its own
    merged = merge_units(engine.store.read_all())
    new = [b for b in merged if b >= 8]
    assert new and all(merged[b].kept_for for b in new)
    assert any(merged[b].labels for b in new)  # their restarts caught up with the other base samples'
    assert engine.nfe() <= 60000
    assert engine.nfe() == sum(u.nfe for u in engine.store.read_all()) + sum(k.nfe for k in engine.blocks)


def _replay_module():
    spec = importlib.util.spec_from_file_location("replay_auto", ROOT / "benchmarks" / "replay_auto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("budget", [None, 30000])
def test_replay_of_a_recorded_uniform_run_makes_the_live_runs_decisions(budget):
    """benchmarks/replay_auto.py's backend reads a recorded full-grid run: the search makes the same rounds,
    runs the same re-samples (same labels), spends the same evaluations and stops each edge the same way."""
    replay = _replay_module()
    recorded = merge_units(run(logistic_backend(), samples=64, timesteps=list(GRID)).store.read_all())
    settings = dict(samples=16, timesteps="auto", edge_precision=20, restarts=4, max_evaluations=budget)
    live = run(logistic_backend(), **settings)
    played = run(replay.ReplayBackend(logistic_backend(), recorded), **settings)
    assert played.rounds == live.rounds and len(live.rounds) >= 3
    strip = [(u.round, u.base, u.times, u.labels, u.nfe, u.first) for u in live.store.read_all()]
    assert [(u.round, u.base, u.times, u.labels, u.nfe, u.first) for u in played.store.read_all()] == strip
    assert played.nfe() == live.nfe() and played.stopped == live.stopped and played.blocks == live.blocks
    if budget is not None:
        assert live.nfe() <= budget and live.blocks  # base samples beyond --samples, read from the recording


def test_uniform_grid_run_ignores_the_allocation():
    """A fixed grid runs every restart once, in one round, whatever --initial-restarts says."""
    a = run(logistic_backend(), samples=6, timesteps=[0, 200, 400], initial_restarts=1)
    b = run(logistic_backend(), samples=6, timesteps=[0, 200, 400])
    assert a.rounds == b.rounds == [[0.0, 200.0, 400.0]] and a.edge_report() == {}
    assert [u.labels for u in a.store.read_all()] == [u.labels for u in b.store.read_all()]
    assert all(len(row) == 8 for u in a.store.read_all() for row in u.labels)


def test_bad_initial_restarts_fail_early():
    with pytest.raises(ValueError, match="initial_restarts 9"):
        run(logistic_backend(), samples=4, timesteps="auto", initial_restarts=9)


@pytest.mark.slow
def test_windows_json_reports_why_each_edge_stopped_and_what_it_cost(tmp_path):
    from diffusion_windows import run_sweep

    opts = dict(model="gaussian-mixture", samples=12, restarts=4, num_inference_steps=10, seed=4, quiet=True,
                theory=False)
    auto = json.loads((run_sweep(out=str(tmp_path / "auto"), timesteps="auto", edge_precision=100,
                                 initial_restarts=2, **opts) / "windows.json").read_text())
    uni = json.loads((run_sweep(out=str(tmp_path / "uni"), timesteps="0:1000:100", **opts)
                      / "windows.json").read_text())
    assert sum(r["nfe"] for r in auto["rounds"]) == auto["nfe"] < uni["nfe"]
    assert all(r["restarts"] > 0 for r in auto["rounds"])
    recs = auto["features"]
    assert recs and all(r["start_stopped_by"] in STOPS and r["end_stopped_by"] in STOPS for r in recs)
    assert all(isinstance(r["start_nfe"], int) and r["start_nfe"] >= 0 for r in recs)
    uni_recs = uni["features"]
    assert not any("start_stopped_by" in r for r in uni_recs)
    assert len(uni["rounds"]) == 1 and uni["rounds"][0]["nfe"] == uni["nfe"]


def test_narrowing_predicts_how_much_more_resamples_narrow_the_reported_interval():
    """`allocation._narrowing` on curves with known per-base retention (base samples shifted at random),
    measured with 8 re-samples except three points near the end edge with one: the point it picks,
    topped up to 8 with fresh draws, narrows the reported interval (a bootstrap over base samples) by
    about what it predicted; a point already at 8 re-samples predicts nothing."""
    from diffusion_windows.engine.allocation import _narrowing, _reported_draws

    t = np.arange(10) * 20.0

    predicted, measured = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        p = 0.3 + 0.7 / (1 + np.exp((t[None, :] - 100 - rng.normal(0, 20, size=(12, 1))) / 25))
        total = np.full(p.shape, 8)
        total[:, 3:6] = 1
        kept = rng.binomial(total, p)
        gain = _narrowing(t, _reported_draws(kept, total, 200), total, (np.inf, 0.6), "end", np.full(10, 8), 8, 0.95)
        assert (gain[[0, 1, 2, 6, 7, 8, 9]] == 0).all()
        j = int(np.argmax(gain))
        k2, t2 = kept.copy(), total.copy()
        k2[:, j] += rng.binomial(7, p[:, j])
        t2[:, j] += 7
        predicted.append(gain[j])
        measured.append(end_width(t, kept, total) - end_width(t, k2, t2))
    assert np.mean(measured) >= 5  # one grid step is 20: the picked point narrows the interval in earnest
    assert 0.5 * np.mean(measured) <= np.mean(predicted) <= 2 * np.mean(measured)
    assert np.corrcoef(predicted, measured)[0, 1] > 0.3


def test_filling_predicts_how_much_measuring_a_gap_above_an_end_narrows_its_interval():
    """`allocation._filling` on curves with known per-base retention, measured every 20 timesteps with
    8 re-samples except a gap of three grid timesteps just above the end edge: the timestep it rates
    highest, measured with fresh draws, narrows the reported interval by about what it predicted (a
    draw that passed the edge no longer jumps the whole gap); timesteps outside the interval, and an
    interval with no gap, give nothing."""
    from diffusion_windows.engine.allocation import _filling, _reported_draws

    grid = np.arange(15) * 20.0
    measured = np.array([j for j in range(15) if j not in (8, 9, 10)])  # 160, 180, 200 unmeasured

    predicted, measured_gain = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        p = 0.3 + 0.7 / (1 + np.exp((grid[None, :] - 130 - rng.normal(0, 20, size=(12, 1))) / 25))
        full = rng.binomial(8, p)
        t, kept, total = grid[measured], full[:, measured], np.full((12, len(measured)), 8)
        fills = dict(_filling(t, grid, _reported_draws(kept, total, 200), (np.inf, 0.6), "end", 0.95, 8))
        assert set(fills) <= {160.0, 180.0, 200.0}
        if not fills or max(fills.values()) == 0:
            continue
        x = max(fills, key=fills.get)
        j = int(x // 20)
        t2 = np.sort(np.append(t, x))
        order = np.argsort(np.append(t, x))
        k2 = np.concatenate([kept, full[:, [j]]], axis=1)[:, order]
        n2 = np.concatenate([total, np.full((12, 1), 8)], axis=1)[:, order]
        predicted.append(fills[x])
        measured_gain.append(end_width(t, kept, total) - end_width(t2, k2, n2))
    assert len(predicted) >= 15
    assert np.mean(measured_gain) >= 10  # the gap is three grid steps of 20: filling it narrows in earnest
    assert 0.5 * np.mean(measured_gain) <= np.mean(predicted) <= 2 * np.mean(measured_gain)
    every = np.arange(15)
    kept = np.random.default_rng(0).binomial(8, 0.3 + 0.7 / (1 + np.exp((grid[None, :] - 130) / 25)) * np.ones((12, 1)))
    assert _filling(grid[every], grid, _reported_draws(kept, np.full((12, 15), 8), 200), (np.inf, 0.6), "end",
                    0.95, 8) == []


def test_resamples_that_narrow_the_reported_interval_are_bought(monkeypatch):
    """With the narrowing term (`allocation.NARROWING`) the reported intervals come out no wider than with
    the edge shift alone, and narrower in sum, for a few more evaluations."""
    from diffusion_windows.engine import allocation

    def widths_and_nfe(weight):
        monkeypatch.setattr(allocation, "NARROWING", weight)
        engine = run(logistic_backend(), samples=60, timesteps="auto", edge_precision=20, initial_restarts=2)
        w = [ci[1] - ci[0] for r in records(engine, n_boot=1000).values() for ci in (r.start_ci, r.end_ci)]
        return np.array(w), engine.nfe()

    shift_only, nfe_shift = widths_and_nfe(0.0)
    both, nfe_both = widths_and_nfe(0.4)
    assert len(both) == 4 and (both <= shift_only).all() and both.sum() < shift_only.sum()
    assert nfe_shift <= nfe_both <= 1.1 * nfe_shift


def test_narrowing_counts_more_on_a_value_with_more_base_samples(monkeypatch):
    """The default sweep's shape (300 base samples x 4 re-samples, a new timestep at one): a timestep of
    narrowing counts sqrt(n / NARROWING_BASES) times `allocation.NARROWING` on a value of n base samples
    (an interval shrinks like 1 / sqrt(n)). Against counting NARROWING on every value, the reported
    intervals come out no wider and narrower in sum, for a few more evaluations: with 150 base samples
    per value, re-samples cost 12x more per ask than with 12, and at NARROWING alone a point near an
    end edge keeps one re-sample."""
    from diffusion_windows.engine import allocation

    def backend():
        return SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 300 - 40 * label) / 60)), labels=("a", "b"),
                                features=(labels_feature(("a", "b")),), grid=GRID,
                                base_shift=lambda b: 15.0 * ((b * 7919) % 5 - 2))

    def widths_and_nfe(bases):
        monkeypatch.setattr(allocation, "NARROWING_BASES", bases)
        engine = run(backend(), samples=300, restarts=4, timesteps="auto", edge_precision=40, initial_restarts=1)
        w = [ci[1] - ci[0] for r in records(engine, n_boot=1000).values() for ci in (r.start_ci, r.end_ci)]
        return np.array(w), engine.nfe()

    default = allocation.NARROWING_BASES
    flat, nfe_flat = widths_and_nfe(150)  # 150 base samples per value: a factor of 1
    scaled, nfe_scaled = widths_and_nfe(default)
    assert len(scaled) == 4 and (scaled <= flat).all() and scaled.sum() < flat.sum()
    assert nfe_flat < nfe_scaled <= 1.15 * nfe_flat
