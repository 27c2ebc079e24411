"""Performance machinery: staircase counts equal per-timestep restarts; the benchmark's tiny mode runs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_staircase_counts_equal_per_timestep_restarts():
    from diffusion_windows import load_default_classifier, load_default_pipeline
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.features import DEFAULT_FEATURES

    backend = DiffusionBackend(load_default_pipeline(), load_default_classifier(), DEFAULT_FEATURES, 10)
    backend.prepare([0, 1], total=2, seed=4, batch_size=8)
    ts = [0, 300, 600, 900]
    together = backend.run({0: ts, 1: ts}, restarts=3, seed=4, batch_size=512)
    for b in (0, 1):
        for j, t in enumerate(ts):  # the same restarts, one timestep and one base at a time
            alone = backend.run({b: [t]}, restarts=3, seed=4, batch_size=512)[0]
            assert alone.labels[0] == together[b].labels[j]
    # the staircase's evaluations: each restart takes the steps at or below its timestep
    assert together[0].nfe == 3 * (1 + 4 + 7 + 10) == 3 * sum(backend.cost(t) for t in ts)


def test_compare_edges_counts_steps_and_the_uniform_runs_own_interval():
    """bench_sweep.compare_edges: 3 edges compared (an edge neither run has is skipped); auto's start 20
    off (within one step of 20), its end 60 off (outside two steps) but inside the uniform run's
    interval; an end only the uniform run has counts as outside everything."""
    from types import SimpleNamespace as R

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_sweep import compare_edges

    uni = [R(key="a", start_timestep=100, end_timestep=400, start_ci=(100, 100), end_ci=(340, 480)),
           R(key="b", start_timestep=None, end_timestep=500, start_ci=None, end_ci=(480, 520))]
    auto = [R(key="a", start_timestep=120, end_timestep=460, start_ci=None, end_ci=None),
            R(key="b", start_timestep=None, end_timestep=None, start_ci=None, end_ci=None),
            R(key="c", start_timestep=0, end_timestep=0, start_ci=None, end_ci=None)]
    within1, within2, n, inside = compare_edges(uni, auto, 20)
    assert n == 3 and within1 == within2 == 1 / 3
    assert inside == 1 / 3  # the start at 120 lies outside (100, 100); the end at 460 inside (340, 480)
    assert compare_edges([], auto, 20) == (None, None, 0, None)


@pytest.mark.slow
def test_benchmark_quick_mode_prints_ratios():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("baseline_s", "uniform_s", "auto_s", "nfe_uniform", "nfe_auto", "nfe_ratio", "speedup",
                "model_time_share", "edges_within_one", "edges_within_two", "edges_in_uniform_interval",
                "edges_agree"):
        assert key in result, key
    assert result["nfe_uniform"] == result["nfe_baseline"]  # the same restarts, counted the same way
    assert result["nfe_auto"] <= result["nfe_uniform"]
    assert 0 < result["model_time_share"] <= 1
    assert 0 <= result["edges_within_one"] <= result["edges_within_two"] <= 1


@pytest.mark.slow
def test_replay_of_a_uniform_run_makes_the_live_auto_runs_decisions(tmp_path):
    """benchmarks/replay_auto.py on a uniform run = a live auto run: same evaluations, same rounds."""
    from diffusion_windows import run_sweep

    opts = dict(model="gaussian-mixture", samples=12, restarts=3, num_inference_steps=10, seed=4, quiet=True)
    uni = run_sweep(out=str(tmp_path / "uni"), timesteps="0:1000:100", **opts)
    live = run_sweep(out=str(tmp_path / "auto"), timesteps="auto", edge_precision=100, **opts)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "replay_auto.py"), str(uni)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    replay = json.loads(r.stdout.strip().splitlines()[-1])
    done = json.loads((live / "windows.json").read_text())
    assert replay["nfe_auto"] == done["nfe"] and replay["auto_rounds"] == len(done["rounds"])
    assert replay["nfe_uniform"] == json.loads((uni / "windows.json").read_text())["nfe"]
    assert replay["nfe_ratio"] > 1
    assert 0 <= replay["half_restarts_within_one"] <= replay["half_restarts_within_two"] <= 1
    assert 0 <= replay["edges_in_uniform_interval"] <= 1
    # the told design (benchmarks/oracle_auto.py) prices the same run: at most every re-sample of its points
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oracle_auto.py"), str(uni)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    told, summary = (json.loads(line) for line in r.stdout.strip().splitlines())
    assert told["nfe_uniform"] == replay["nfe_uniform"] and told["edges"] > 0
    assert 0 < told["nfe_oracle"] <= told["nfe_oracle_full"] < told["nfe_uniform"]
    assert summary["ratio"]["median"] == told["ratio"] > 1
    # a run without every grid timestep cannot be replayed: one line, exit 2
    part = tmp_path / "part"
    part.mkdir()
    (part / "options.json").write_text((uni / "options.json").read_text())
    units = [json.loads(line) for line in (uni / "results.jsonl").read_text().splitlines()]
    for u in units:
        keep = [i for i, t in enumerate(u["timesteps"]) if t != 100]
        u["timesteps"], u["labels"] = [u["timesteps"][i] for i in keep], [u["labels"][i] for i in keep]
    (part / "results.jsonl").write_text("".join(json.dumps(u) + "\n" for u in units))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "replay_auto.py"), str(part)],
                       capture_output=True, text=True, timeout=600)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "timestep 100 missing" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oracle_auto.py"), str(uni), str(part)],
                       capture_output=True, text=True, timeout=600)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "timestep 100 missing" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sd3", "flux"])
def test_gpu_benchmark_tiny_mode_prints_its_json(family):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--family", family],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("denoiser_samples_per_s", "bare_samples_per_s", "ratio", "peak_memory_gb", "shares", "nfe"):
        assert key in result, key
    assert result["denoiser_rows"] >= result["nfe"] > 0  # rows include the base samples' generation
    assert result["family"] == f"{family}-shaped"
    assert abs(sum(result["shares"].values()) - 1) <= 3e-3 and result["ratio"] > 0  # a ratio, not a timing test


def test_calibration_benchmark_scores_every_edge_against_the_exact_curve():
    """bench_calibration runs on the current API (it calls the engine and the reports as run_sweep
    does): on the exact denoiser, every record kind and side is scored on every seed, and the truth
    it scores against is the ideal curve's edge (start <= end, on the grid)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_calibration.py"), "--models",
                          "gaussian-mixture", "--seeds", "0,1", "--samples", "40", "--restarts", "2", "--grid",
                          "0:1000:100", "--large-samples", "0"], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    model = json.loads(out.stdout)["models"][0]
    truth = model["exact_edges"]
    assert len(truth) == 10 and all(s <= e and s % 100 == 0 and e % 100 == 0 for s, e in truth.values())
    scored = model["by_truth"]["exact"]["all"]
    for side in ("start", "end"):
        assert scored[side]["n"] == 2 * len(truth)          # each record's edge on each seed
        assert 0.0 <= scored[side]["coverage"] <= 1.0
        assert scored[side]["median_width_steps"] >= 0


def test_calibration_benchmark_runs_auto_on_the_grid_asked_and_counts_edges_within_one_step():
    """With ``--timesteps auto --grid G`` the benchmark refines exactly ``G`` (``auto:G``), reads the truth
    on it, and its ``within_one_share`` is the share of its own rows within one grid step of the truth."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_calibration.py"), "--models",
                          "gaussian-mixture", "--seeds", "0", "--samples", "40", "--restarts", "2", "--timesteps",
                          "auto", "--grid", "0:1000:100", "--rows"], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    model = json.loads(out.stdout)["models"][0]
    assert model["timesteps"] == "auto:0:1000:100"
    assert all(s % 100 == 0 and e % 100 == 0 for s, e in model["exact_edges"].values())
    for side in ("start", "end"):
        rows = [r for r in model["rows"] if r["side"] == side and r["truth"] == "exact" and r["covered"] is not None]
        got = model["by_truth"]["exact"]["all"][side]
        assert got["n"] == len(rows) > 0
        assert got["within_one_share"] == np.mean([r["edge"] is not None and abs(r["error_steps"]) <= 1 for r in rows])
        assert 0 <= got["within_one_share"] <= 1


def test_auto_truth_benchmark_counts_coverage_by_kind_from_its_own_rows(tmp_path):
    """bench_auto_truth's per-kind coverage and widths are the means and medians of the rows it writes
    (--rows): one row per design, record and side on every seed, scored against the ideal curve."""
    rows_file = tmp_path / "rows.jsonl"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_auto_truth.py"), "--models",
                          "gaussian-mixture", "--seeds", "0-1", "--samples", "30", "--restarts", "2", "--grid",
                          "0:1000:100", "--rows", str(rows_file)], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert {r["design"] for r in rows} == {"uniform", "auto"} and {r["seed"] for r in rows} == {0, 1}
    assert all(r["covered"] is not None for r in rows)
    groups = {}
    for r in rows:
        groups.setdefault(f"{r['design']}_{r['kind']}_{r['side']}", []).append(r)
    assert set(summary["coverage_by_kind"]) == set(groups)
    for name, rs in groups.items():
        assert summary["coverage_by_kind"][name] == round(sum(r["covered"] for r in rs) / len(rs), 4)
        widths = sorted(r["width_steps"] for r in rs if r["width_steps"] is not None)
        if widths:
            assert summary["median_width_steps"][name] == pytest.approx(float(__import__("numpy").median(widths)))
    for design in ("uniform", "auto"):
        assert summary["edges"][design] == sum(len(rs) for n, rs in groups.items() if n.startswith(design))


def _oracle_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import oracle_auto

    return oracle_auto


def test_oracle_prices_the_cheapest_bracketing_pair_at_the_fewest_restarts():
    """benchmarks/oracle_auto.oracle on a run whose curves are known: two values of 4 base samples each,
    retention 1, 1, 1/2, 1/4, 1/4 on times 0..4 (restart k keeps its value while k < 4, 4, 2, 1, 1), so
    the start (at 0.9) is at time 1 and the end (at floor 0.5 + 0.1) at time 2; a restart from t costs t + 1."""
    from diffusion_windows.analysis.counts import BaseLabels
    from diffusion_windows.features import Feature

    keeps = (4, 4, 2, 1, 1)
    merged = {b: BaseLabels(b // 4, {float(t): tuple(b // 4 if k < keep else 1 - b // 4 for k in range(4))
                                     for t, keep in enumerate(keeps)}) for b in range(8)}
    oracle = _oracle_module().oracle
    run = dict(features=(Feature("v", {"a": (0,), "b": (1,)}),), n_labels=2, grid=range(5), cost=lambda t: t + 1,
               restarts=4, tolerance=0.1)
    # a miss chance of ~0 takes every re-sample: times 1 and 2 bracket both edges exactly (within 0); within one
    # step, times 0 and 2 bracket both, cheaper: 2 curves x 4 base samples x 4 re-samples x the two costs
    exact = oracle(merged, **run, miss=1e-9, within=0)
    assert exact["nfe_oracle"] == exact["nfe_oracle_full"] == 2 * 4 * 4 * (2 + 3)
    assert exact["edges"] == 4 and exact["points"] == 4
    assert oracle(merged, **run, miss=1e-9, within=1)["nfe_oracle"] == 2 * 4 * 4 * (1 + 3)
    # at a loose miss chance: time 1 reads 1 with one re-sample, far from both thresholds (one re-sample);
    # time 2's first re-samples all keep the value: read against the start (0.9) its side is right at the
    # third (2/3), against the end (0.6) only at the fourth (2/3 > 0.6 > the full grid's 1/2)
    loose = oracle(merged, **run, miss=0.99, within=0)
    assert loose["nfe_oracle"] == 2 * 4 * (1 * 2 + 4 * 3) and loose["mean_restarts"] == 2.5
    assert loose["nfe_oracle_full"] == exact["nfe_oracle_full"]
    # a second feature that reads the same labels: its edges ask the same base samples at the same times,
    # and a re-sample serves both features, so the price is the same
    twice = oracle(merged, **{**run, "features": run["features"] + (Feature("w", {"a": (0,), "b": (1,)}),)},
                   miss=0.99, within=0)
    assert twice["edges"] == 2 * loose["edges"] and twice["nfe_oracle"] == loose["nfe_oracle"]
