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
    interpolation between its neighbours (within one grid step: the precision asked for)."""
    def retention(label, t):
        return 0.0 if abs(t - 540) < 1e-9 else float(np.clip(1 - t / 800, 0, 1))

    def backend():
        return SyntheticBackend(retention, labels=("a", "b"), features=(labels_feature(("a", "b")),), grid=GRID)

    uniform = records(run(backend(), samples=40, timesteps=list(GRID)))
    auto_engine = run(backend(), samples=40, timesteps="auto", edge_precision=20)
    auto = records(auto_engine)
    assert {r.end_timestep for r in uniform.values()} == {540.0}  # the measured curve 0.5 + p/2 crosses 0.6 there first
    # found the dip (within the one grid step the precision allows), not the smooth crossing at 640
    assert all(abs(r.end_timestep - 540) <= 20 for r in auto.values())
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
    assert auto["auto"]["name"] == "sequential-test" and auto["auto"]["grid_source"] == "sampling"
    assert "auto" not in uni
    # flow: auto:START:STOP:STEP refines the grid the uniform run measures, not the shifted sampling grid
    flow = dict(opts, model="gaussian-mixture-flow")
    runs = {spec: json.loads((run_sweep(out=str(tmp_path / name), timesteps=spec, edge_precision=100, **flow)
                              / "windows.json").read_text())
            for name, spec in (("fu", "0:1000:100"), ("fa", "auto:0:1000:100"))}
    asked = runs["auto:0:1000:100"]["auto"]
    assert asked["grid_source"] == "asked" and asked["grid"] == runs["0:1000:100"]["options"]["timesteps"]
    assert runs["auto:0:1000:100"]["options"]["timesteps"].startswith("auto:0,100,200")
    measured = {t for r in runs["auto:0:1000:100"]["features"] for t in r["timesteps"]}
    assert measured <= set(asked["grid"])


def known_edges(backend, n_base):
    """The full grid's true edges of each label of `logistic_backend` (the mean curve over base shifts)."""
    from diffusion_windows.analysis.windows import window_edges

    out = {}
    for label in (0, 1):
        bases = [b for b in range(n_base) if backend.base_labels(b) == label]
        curve = np.mean([[0.5 + 0.5 * backend.retention(label, t - backend.base_shift(b)) for t in GRID]
                         for b in bases], axis=0)
        out[("label", ("a", "b")[label], None)] = window_edges(GRID, curve, 0.5, 0.1)
    return out


def test_auto_finds_the_known_edges_within_one_grid_step_as_often_as_the_uniform_grid():
    """On known curves, over 16 seeds: auto's edges lie within one grid step of the true full-grid edge in at
    least 85% of cases and at most three fewer per 32 edges than the uniform grid's, for at most a tenth of
    its evaluations."""
    hits, nfe = {"auto": [], "uniform": []}, {"auto": 0, "uniform": 0}
    for seed in range(16):
        backend = logistic_backend()
        truth = known_edges(backend, 40)
        for name, spec in (("auto", "auto"), ("uniform", list(GRID))):
            engine = run(logistic_backend(), samples=40, restarts=8, seed=seed, timesteps=spec, edge_precision=20)
            nfe[name] += engine.nfe()
            for key, r in records(engine, n_boot=50).items():
                for side, true in zip(("start_timestep", "end_timestep"), truth[key]):
                    hits[name].append(getattr(r, side) is not None and abs(getattr(r, side) - true) <= 20)
    assert np.mean(hits["auto"]) >= 0.85 and sum(hits["auto"]) >= sum(hits["uniform"]) - 6, hits
    assert nfe["auto"] <= nfe["uniform"] / 10, nfe  # 56 of 64 against 60 of 64, at 18x fewer evaluations


def test_the_test_leaves_unresolved_only_the_dearest_points_within_the_miss_chance():
    """`allocation._tested`: the points left untested are chosen dearest per unit of flip chance first, and
    their flip chances sum to at most alpha (a union bound on the edge moving past the precision)."""
    from diffusion_windows.engine.allocation import _tested

    flip = np.array([0.01, 0.04, 0.2, 0.03, 0.02])
    dear = {0: 100.0, 1: 4000.0, 2: 50.0, 3: 900.0, 4: 10.0}
    need = dict.fromkeys(range(5), 4)
    tested = _tested(need, flip, dear, 0.055)
    left = sorted(set(range(5)) - set(tested))
    assert left == [0, 1]  # 4000/0.04 = 1e5 first, then 900/0.03 = 3e4 does not fit, 100/0.01 does
    assert flip[left].sum() <= 0.055
    assert _tested(need, flip, dear, 0.0) == [0, 1, 2, 3, 4]
    assert _tested(need, flip, dear, 1.0) == []


def test_restarts_needed_bring_the_full_grids_spread_under_the_margin():
    """`allocation._restarts_needed` against `predictive_sd`: at the returned k per base sample the full
    grid's predictive spread is at most margin / z, and at k - 1 it is not (unless k is the first step)."""
    from diffusion_windows.engine.allocation import predictive_sd, _restarts_needed

    n, p, restarts, z = 20, 0.4, 16, 1.645
    for margin in (0.02, 0.05, 0.1, 0.2):
        k = _restarts_needed(p, margin, z, np.ones(n), restarts)
        assert 2 <= k <= restarts

        def sd(k):
            return predictive_sd(np.full((n, 1), p * k), np.full((n, 1), k), restarts)[0]
        if k < restarts:
            assert sd(k) <= margin / z * 1.1
        if k > 2:
            assert sd(k - 1) > margin / z * 0.9


def test_windows_json_auto_block_names_the_policy_and_the_grid_it_refines():
    """`Engine.policy_report` (windows.json's ``auto``): the method's name, its parameters in units that carry
    over (precision in grid steps, the confidence and its margin), and the grid: the backend's own, or the
    one asked for with auto:START:STOP:STEP."""
    from diffusion_windows.engine.adaptive import auto_spec

    plain = run(logistic_backend(), samples=8, timesteps="auto", edge_precision=40)
    asked = run(logistic_backend(), samples=8, timesteps=auto_spec(range(0, 1000, 40)), edge_precision=40)
    a, b = plain.policy_report(), asked.policy_report()
    assert a["name"] == b["name"] == "sequential-test" and a["aim"] == "edge"
    assert a["confidence"] == 0.95 and a["z"] == pytest.approx(1.6449, abs=1e-4) and 0 < a["miss"] < 1
    assert a["grid_source"] == "sampling" and a["grid"] == list(map(float, GRID)) and a["precision_steps"] == 2
    assert b["grid_source"] == "asked" and b["grid"] == [float(t) for t in range(0, 1000, 40)]
    assert b["precision_steps"] == 1
    assert run(logistic_backend(), samples=4, timesteps=[0, 500]).policy_report() == {}


def test_auto_on_an_asked_grid_measures_only_its_times():
    """--timesteps auto:0:1000:40 refines exactly the grid --timesteps 0:1000:40 measures: every time it
    restarts from is one of those, and its edges are within one of its steps of that uniform run's."""
    from diffusion_windows.options import parse_timesteps

    from diffusion_windows.options import OptionError

    with pytest.raises(OptionError, match="auto:"):
        parse_timesteps("auto:", 1000)
    with pytest.raises(OptionError, match="2000"):
        parse_timesteps("auto:0:2000:40", 1000)
    spec = parse_timesteps("auto:0:1000:40", 1000)
    uniform_times = parse_timesteps("0:1000:40", 1000)
    assert spec == "auto:" + ",".join(str(t) for t in uniform_times)
    auto = run(logistic_backend(), samples=40, timesteps=spec, edge_precision=40)
    uni = run(logistic_backend(), samples=40, timesteps=uniform_times)
    measured = {t for u in auto.store.read_all() for t in u.times}
    assert auto.grid == [float(t) for t in uniform_times] and measured <= set(auto.grid)
    assert len(measured) < len(uniform_times) and auto.nfe() < uni.nfe() / 3
    assert max(edge_gaps(records(auto), records(uni))) <= 40


def test_plan_draws_its_bootstrap_from_the_run_seed_and_the_values_identity():
    """The plan is a pure function of the counts, the run seed and the value's key: the same call gives the
    same plan; another run seed or another value draws other bootstrap curves (its interval may differ)."""
    from diffusion_windows.engine.allocation import ValueCounts, plan_values

    rng = np.random.default_rng(3)
    t = tuple(float(x) for x in range(0, 500, 20))
    p = 0.2 + 0.8 / (1 + np.exp((np.asarray(t)[None, :] - 250 - rng.normal(0, 40, size=(15, 1))) / 30))
    kept = rng.binomial(2, p)
    total = np.full(kept.shape, 2)

    def intervals(key, seed):
        _, edges = plan_values(GRID, [ValueCounts(key, t, kept, total, 0.9, (0.3,))], precision=20, restarts=8,
                               initial=1, cost=lambda x: 1 + x // 20, seed=seed, n_boot=100)
        return [e.interval for e in edges.values()]

    base = intervals(("f", "a"), 0)
    assert base == intervals(("f", "a"), 0)
    others = [intervals(("f", "a"), s) for s in (1, 2, 3)] + [intervals(("f", k), 0) for k in "bcd"]
    assert any(o != base for o in others)


def test_an_end_whose_floor_redrawn_draws_cross_nowhere_measured_asks_for_the_timestep_above():
    """An end read as the reported interval reads it (each draw against its own floor* + delta): when
    more than (1 - confidence) / 2 of those draws cross at no measured timestep, the search asks for the
    grid timestep above the highest measured one, even where the point estimate crosses below it;
    with the floor known exactly (no ``end_floors``) the same counts need nothing above."""
    from diffusion_windows.engine.allocation import ValueCounts, plan_values

    rng = np.random.default_rng(5)
    t = tuple(float(x) for x in range(0, 440, 20))  # every grid timestep up to 420: nothing to bracket
    p = np.array([0.97] * 16 + [0.85, 0.75, 0.68, 0.64, 0.57, 0.56])  # below floor + delta = 0.6 from 400 on
    kept = rng.binomial(4, np.clip(p[None, :] + rng.normal(0, 0.03, size=(200, 1)), 0, 1))
    total = np.full(kept.shape, 4)

    def end(floors):
        v = ValueCounts(("f", "a"), t, kept, total, 0.9, (0.6,), floors)
        asks, edges = plan_values(GRID, [v], precision=20, restarts=4, initial=1, cost=lambda x: 1 + x // 20,
                                  seed=0, n_boot=400)
        return [(a.time, a.kind) for a in asks if a.time > 420], edges[(("f", "a"), "end", 0.6)]

    above, edge = end(())
    assert above == [] and edge.timestep == 400.0
    above, edge = end(((0.5, 20),))  # a floor from 20 base samples: sd 0.11, many draws' thresholds below 0.56
    assert above == [(440.0, "locate")] and edge.timestep == 400.0 and edge.width == np.inf


def test_an_end_above_every_measured_point_is_tested_at_the_top_before_it_is_called_no_edge():
    """An end the measured curve never crosses is "no-edge" only once no measured point is left that the
    full grid (``restarts`` re-samples) might read at or below its threshold: the grid's top, measured with
    one re-sample per base sample at 0.63 against 0.6, is asked for more re-samples first; holding every
    re-sample there, the same curve stops as "no-edge"; and a curve far above the threshold asks nothing."""
    from diffusion_windows.engine.allocation import ValueCounts, plan_values

    t = tuple(float(x) for x in GRID)  # every grid timestep measured: nothing to locate
    n = 100
    p = np.linspace(0.97, 0.63, len(t))

    def end(kept, total, thr=0.6):
        v = ValueCounts(("f", "a"), t, kept, total, 0.9, (thr,))
        asks, edges = plan_values(GRID, [v], precision=20, restarts=4, initial=1, cost=lambda x: 1 + x // 20,
                                  seed=0, n_boot=200)
        return asks, edges[(("f", "a"), "end", thr)]

    one = np.ones((n, len(t)), dtype=int)
    kept = (np.arange(n)[:, None] < np.round(p * n)[None, :]).astype(int)  # exactly p[j] of the bases kept
    asks, edge = end(kept, one)
    assert edge.stopped_by is None and edge.timestep is None
    top = [a for a in asks if a.edges == ((("f", "a"), "end", 0.6),)]
    assert top and all(a.kind == "resample" and a.time >= 800 and a.restarts > 1 for a in top)  # p <= 0.69
    assert max(a.time for a in top) == t[-1]
    _, edge = end(kept * 4, one * 4)  # the full grid's own reading: 0.63 > 0.6 stays
    assert edge.stopped_by == "no-edge"
    asks, edge = end(kept, one, thr=0.3)  # far below the curve: no flip is possible
    assert edge.stopped_by == "no-edge" and not [a for a in asks if a.edges == ((("f", "a"), "end", 0.3),)]


def test_aim_interval_gives_the_uniform_grids_intervals_for_fewer_evaluations():
    """``auto_aim="interval"``: every measured point inside an edge's interval whose draws cross its threshold
    ends with every re-sample, so the intervals are the uniform grid's (within one grid step on both sides,
    same base samples and seeds) for fewer evaluations; the default aim ("edge") is cheaper still and its
    intervals are not all the uniform grid's. windows.json's auto block names the aim."""
    uniform = run(logistic_backend(), samples=100, timesteps=GRID)
    edge = run(logistic_backend(), samples=100, timesteps="auto", edge_precision=20)
    narrow = run(logistic_backend(), samples=100, timesteps="auto", edge_precision=20, auto_aim="interval")
    ru, re_, rn = records(uniform), records(edge), records(narrow)

    def gaps(r):  # per edge bound: timesteps from the uniform grid's interval
        return [abs(x - y) for k in ru for side in ("start_ci", "end_ci")
                for x, y in zip(getattr(r[k], side), getattr(ru[k], side))]

    assert max(gaps(rn)) <= 20 and max(gaps(re_)) > 20
    assert edge.nfe() < narrow.nfe() < uniform.nfe() / 3
    assert narrow.policy_report()["aim"] == "interval"
    assert set(narrow.stopped.values()) <= {"grid", "precision"}  # every edge ran to its stop


def test_narrowing_asks_for_the_points_inside_the_interval_that_can_set_a_bound():
    """`allocation._narrowing`: inside the interval, short of re-samples, and crossing more often than one
    tail (or, past an end, read below it with a pooled bound still above): those points and no other."""
    from diffusion_windows.engine.allocation import _crossing, _narrowing

    t = np.arange(0.0, 200.0, 20.0)                      # 10 points; the end at index 5 (t = 100)
    p = np.array([0.9, 0.85, 0.8, 0.64, 0.62, 0.58, 0.56, 0.45, 0.4, 0.35])
    boot = p[None, :] + np.linspace(-0.06, 0.06, 101)[:, None]   # draws spread +-0.06 around each point
    cross = _crossing(p, boot, np.full(101, 0.6), 0.6)
    assert cross[3] > 0.1 and cross[5] > 0.1 and cross[2] == 0 and cross[7] == 0
    short = np.ones(10, dtype=bool)
    short[5] = False                                     # the end's own point holds every re-sample
    assert _narrowing(t, p, cross, (40.0, 140.0), short, 0.025, 5) == [3, 4, 6]
    assert _narrowing(t, p, cross, (80.0, 100.0), short, 0.025, 5) == [4]  # outside the interval: nothing
    unsure = np.zeros(10, dtype=bool)
    unsure[7] = True                                     # read below, its Wilson bound above the threshold
    assert _narrowing(t, p, cross, (40.0, 140.0), short, 0.025, 5, unsure) == [3, 4, 6, 7]
    assert _narrowing(t, p, cross, (40.0, 140.0), np.zeros(10, dtype=bool), 0.025, 5, unsure) == []
