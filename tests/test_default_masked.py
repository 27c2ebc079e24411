"""``--model default-masked`` end to end (small): the usual files and ``tokens.html``, the time unit, the exact
theory beside the measurement, the sampler flagged as the reverse process; a run cut short and resumed gives the
same files as one run through."""
import json

import pytest

from diffusion_windows.sweep import main

SMALL = ["--model", "default-masked", "--samples", "4", "--restarts", "3", "--timesteps", "0,0.5,0.9",
         "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dm") / "run"
    assert main(SMALL + ["--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_default_masked_writes_the_usual_files_with_theory(run):
    for name in ("options.json", "results.jsonl", "windows.json", "windows.csv", "window.png", "tokens.html"):
        assert (run / name).is_file(), name
    w = json.loads((run / "windows.json").read_text())
    assert w["time_unit"] == "fraction masked" and w["sampler"]["reverse_process"] is True
    genre = [r for r in w["features"] if r["feature"] == "genre" and r["parent"] is None]
    assert genre and all(r["ideal_retention"] and r["t_after_ou"] is not None for r in genre)
    for r in genre:   # the exact curve: the ending is kept with probability 1 - t
        assert all(i >= 1 - t - 1e-9 for i, t in zip(r["ideal_retention"], r["timesteps"]))
    assert {r["task"] for r in w["responses"]} == {"story", "addition"}
    assert all(len(r["influence"]) == len(r["tokens"]) for r in w["responses"])
    assert "keeping it unmasked" in (run / "tokens.html").read_text()


@pytest.mark.slow
def test_a_resumed_run_gives_the_same_windows(run, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:2]))       # killed after two units
    (cut / "windows.json").unlink()
    assert main(SMALL + ["--out", str(cut)]) == 0
    a, b = (json.loads((p / "windows.json").read_text()) for p in (run, cut))
    assert [r["retention"] for r in a["features"]] == [r["retention"] for r in b["features"]]
    assert a["nfe"] == b["nfe"]


@pytest.mark.slow
def test_two_processes_and_another_batch_size_give_the_same_windows(run, tmp_path):
    """torchrun with 2 CPU processes and batch groups of one base each: the single-process run's windows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "diffusion_windows.sweep", *SMALL, "--batch-size", "9", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = (json.loads((p / "windows.json").read_text()) for p in (run, out))
    assert [r["retention"] for r in a["features"]] == [r["retention"] for r in b["features"]]


@pytest.mark.slow
def test_timesteps_auto_adds_restarts_in_later_rounds(tmp_path):
    out = tmp_path / "auto"
    assert main(["--model", "default-masked", "--samples", "4", "--restarts", "4", "--timesteps", "auto",
                 "--max-evaluations", "1500", "--quiet", "--out", str(out)]) == 0
    w = json.loads((out / "windows.json").read_text())
    assert len(w["rounds"]) >= 2 and sum(r["nfe"] for r in w["rounds"]) == w["nfe"] <= 1500 + 400
    assert set(t for r in w["rounds"] for t in r["timesteps"]) <= set(w["grid"])
