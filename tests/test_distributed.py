"""Scale-out: the sweep under torchrun with 2 CPU processes gives the single-process windows."""
import json
import os
import shutil
import subprocess
import sys

import pytest

# --batch-size 8 holds one base sample's 2 x 4 restarts: every base is its own batch group,
# so the 6 units split 3 + 3 between two processes
ARGS = ["--samples", "6", "--restarts", "2", "--timesteps", "0:1000:250", "--num-inference-steps", "10",
        "--seed", "11", "--batch-size", "8", "--quiet"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _sweep(out, *extra, procs=1, script=None):
    head = TORCHRUN if procs > 1 else [sys.executable]
    target = [script] if script else ["-m", "diffusion_windows.sweep"]
    return subprocess.run([*head, *target, *ARGS, *extra, "--out", str(out)], capture_output=True, text=True,
                          timeout=900, env=_env())


def _windows(out):
    return json.loads((out / "windows.json").read_text())["features"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "single"
    r = _sweep(out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_two_processes_give_identical_windows(single, tmp_path):
    out = tmp_path / "two"
    r = _sweep(out, procs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _windows(out) == _windows(single)
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 6


FAILING = """
import os, sys
from diffusion_windows.diffusion.backend import DiffusionBackend
real = DiffusionBackend.run
def run(self, plan, *a, **k):
    if os.environ.get("RANK") == "1" and max(plan) >= 4:
        raise RuntimeError(f"worker 1 broke on base {max(plan)}")
    return real(self, plan, *a, **k)
DiffusionBackend.run = run
from diffusion_windows.sweep import main
sys.exit(main())
"""


@pytest.mark.slow
def test_failing_worker_fails_the_run_keeps_results_and_resumes_with_one_process(single, tmp_path):
    script = tmp_path / "failing_sweep.py"
    script.write_text(FAILING)
    out = tmp_path / "failed"
    r = _sweep(out, procs=2, script=str(script))
    assert r.returncode != 0
    assert "worker 1 broke on base 4" in r.stderr
    assert not (out / "windows.json").exists()
    kept = [json.loads(x)["unit"] for p in out.glob("results*.jsonl") for x in p.read_text().splitlines()]
    assert "r0-b3" in kept and "r0-b4" not in kept  # worker 1 finished base 3 before breaking
    # resume with a different number of processes: finishes the rest, same windows
    r = _sweep(out)
    assert r.returncode == 0, r.stderr
    assert _windows(out) == _windows(single)


@pytest.mark.slow
def test_half_finished_run_resumed_with_two_processes_and_another_batch_size(single, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(single, out)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (out / "windows.json").unlink()
    # batch 16: two base samples per batch group instead of one; only floating-point noise may differ
    r = _sweep(out, "--batch-size", "16", procs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _windows(out) == _windows(single)


@pytest.mark.slow
def test_two_processes_give_the_single_process_auto_run(tmp_path):
    """--timesteps auto with re-samples added in later rounds (restart slots) and a budget that makes more
    base samples: every process plans the same rounds from the same records, so the windows are identical."""
    auto = ["--timesteps", "auto", "--restarts", "4", "--initial-restarts", "1", "--edge-precision", "100",
            "--max-evaluations", "4000"]
    one, two = tmp_path / "one", tmp_path / "two"
    r = _sweep(one, *auto)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _sweep(two, *auto, procs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((o / "windows.json").read_text()) for o in (one, two))
    assert a["features"] == b["features"] and a["rounds"] == b["rounds"] and a["nfe"] == b["nfe"]
    lines = [json.loads(x) for x in (one / "results.jsonl").read_text().splitlines()]
    assert len(a["rounds"]) >= 2 and any("first" in u for u in lines)  # later rounds added re-samples
    assert any(r["new_samples"] for r in a["rounds"]) and a["nfe"] <= 4000  # and base samples, within budget
