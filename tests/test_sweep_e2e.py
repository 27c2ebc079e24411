"""The sweep end to end on the bundled default model, with tiny budgets."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_windows import run_sweep
from conftest import kill_sweep_after, sweep_cli

TINY = dict(samples=6, restarts=2, timesteps="0:1000:250", num_inference_steps=10, seed=3)
RECORD_KEYS = {"feature", "value", "parent", "base_rate", "floor", "timesteps", "retention", "ci_low", "ci_high",
               "start_timestep", "start_ci", "end_timestep", "end_ci", "jump", "ideal_retention",
               "t_after_timestep", "t_before_timestep", "speciation_timestep", "t_after_ou", "t_before_ou",
               "eps_after", "eps_before", "bracket_holds", "start_minus_t_after", "t_before_minus_end"}


def features(out):
    return json.loads((out / "windows.json").read_text())["features"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    run_sweep(out=str(out), quiet=True, **TINY)
    return out


@pytest.mark.slow
def test_run_sweep_writes_every_file(tiny_run):
    for name in ("options.json", "results.jsonl", "windows.json", "windows.csv", "window.png", "strip.png"):
        assert (tiny_run / name).stat().st_size > 0, name
    d = json.loads((tiny_run / "windows.json").read_text())
    recs = d["features"]
    assert {r["feature"] for r in recs} == {"digit", "group"}
    top = [r for r in recs if r["parent"] is None]
    assert len(top) == 10 + len({r["value"] for r in recs if r["feature"] == "group"})
    assert any(r["parent"] is not None for r in recs)  # nested digit-in-group records
    for r in recs:
        if r["n_base"] == 0:
            continue
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r["timesteps"] == [0.0, 250.0, 500.0, 750.0]
        if r["start_timestep"] is not None and r["end_timestep"] is not None:
            assert r["start_timestep"] <= r["end_timestep"]
        # a restart at timestep 0 runs the grid's last, noise-free step from x0 itself: it keeps the value
        assert r["retention"][0] == 1.0
        assert all(lo <= p + 1e-9 and p <= hi + 1e-9 for lo, p, hi in zip(r["ci_low"], r["retention"], r["ci_high"]))
        assert len(r["ideal_retention"]) == 4
        assert r["t_after_timestep"] is None or 0 <= r["t_after_timestep"] < 1000
    assert d["sampler"]["stochastic"] is True
    assert sum(r["n_base"] for r in top if r["feature"] == "digit") == TINY["samples"]
    lines = (tiny_run / "results.jsonl").read_text().splitlines()
    assert len(lines) == TINY["samples"]
    csv_rows = (tiny_run / "windows.csv").read_text().splitlines()
    assert len(csv_rows) == len(recs) + 1


@pytest.mark.slow
def test_rerun_of_a_half_finished_folder_with_another_batch_size(tiny_run, tmp_path):
    import shutil

    half = tmp_path / "half"
    shutil.copytree(tiny_run, half)
    lines = (half / "results.jsonl").read_text().splitlines()
    (half / "results.jsonl").write_text("\n".join(lines[:3]) + "\n")
    (half / "windows.json").unlink()
    run_sweep(out=str(half), quiet=True, batch_size=7, **TINY)  # batch size may differ
    assert len((half / "results.jsonl").read_text().splitlines()) == TINY["samples"]
    assert features(half) == features(tiny_run)
    run_sweep(out=str(half), quiet=True, **TINY)  # a finished folder: nothing more runs
    assert len((half / "results.jsonl").read_text().splitlines()) == TINY["samples"]


@pytest.mark.slow
def test_measure_window_equals_run_sweep(tiny_run):
    from diffusion_windows import load_default_classifier, load_default_pipeline, measure_window

    recs = measure_window(load_default_pipeline(), load_default_classifier(), **TINY)
    got = {(r.feature, r.value, r.parent): (r.retention, r.start_timestep, r.end_timestep, r.t_after_timestep)
           for r in recs}
    want = {(r["feature"], r["value"], r["parent"]):
            (None if r["retention"] is None else tuple(r["retention"]), r["start_timestep"], r["end_timestep"],
             r.get("t_after_timestep")) for r in features(tiny_run)}
    assert got == want


@pytest.mark.slow
def test_cli_kill_and_resume_gives_same_windows(tmp_path):
    # --batch-size 10 holds one base sample's 2 x 5 restarts: each unit is its own batch group
    args = ["--samples", "8", "--restarts", "2", "--timesteps", "0:1000:200", "--num-inference-steps", "10",
            "--seed", "5", "--batch-size", "10", "--quiet"]
    whole = tmp_path / "whole"
    r = sweep_cli(args, whole)
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    n_done = kill_sweep_after(args, killed, lines=3)
    assert not (killed / "windows.json").exists()
    assert 3 <= n_done < 8
    r = sweep_cli(args, killed)
    assert r.returncode == 0, r.stderr
    assert len((killed / "results.jsonl").read_text().splitlines()) == 8
    assert features(killed) == features(whole)


@pytest.mark.slow
def test_cli_prints_summary_and_folder(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "diffusion_windows.sweep", "--samples", "3", "--restarts", "1",
                        "--timesteps", "0,500", "--num-inference-steps", "5", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "T_aft" in r.stdout
    assert (out / "window.png").exists()
    w = json.loads((out / "windows.json").read_text())["edge_interval_steps"]
    if w["median"] is not None:  # the widths in words, as windows.json holds them (not a raw dict)
        assert f"95% edge intervals: median {w['median']:g} grid steps" in r.stdout and "{" not in r.stdout


class _BrokenAfter(torch.nn.Module):
    """Wraps a UNet; after ``calls`` model calls, returns NaN for timesteps above ``above``."""

    def __init__(self, unet, calls, above):
        super().__init__()
        self.inner, self.calls, self.above, self.n = unet, calls, above, 0
        self.config = unet.config

    @property
    def dtype(self):
        return self.inner.dtype

    @property
    def device(self):
        return self.inner.device

    def forward(self, x, t, *a, **k):
        out = self.inner(x, t, *a, **k)
        self.n += 1
        if self.n > self.calls and float(torch.as_tensor(t).max()) > self.above:
            out.sample.fill_(float("nan"))
        return out


@pytest.mark.slow
def test_nan_from_model_fails_loudly_with_timestep_and_seed():
    from diffusion_windows import load_default_classifier, load_default_pipeline, measure_window
    from diffusion_windows.sweep import SweepError

    pipe = load_default_pipeline()
    clf = load_default_classifier()
    # 5 steps make the base samples; the restarts from timestep 600 then get NaN
    pipe.unet = _BrokenAfter(pipe.unet, calls=5, above=400)
    with pytest.raises(SweepError, match=r"NaN or Inf for base 0 restarted at timestep 600 .*seed \d+"):
        measure_window(pipe, clf, samples=2, restarts=2, timesteps="0,600", num_inference_steps=5)
    broken = _BrokenAfter(load_default_pipeline().unet, calls=0, above=400)
    pipe.unet = broken  # now base generation itself fails, naming the base samples
    with pytest.raises(SweepError, match=r"NaN or Inf for base samples 0\.\.1"):
        measure_window(pipe, clf, samples=2, restarts=1, timesteps="0", num_inference_steps=5)


@pytest.mark.slow
def test_branch_protocol_restarts_from_the_trajectory(tmp_path):
    out = run_sweep(out=str(tmp_path / "branch"), quiet=True, protocol="branch", samples=4, restarts=2,
                    timesteps="0,500,950", num_inference_steps=20, seed=2)
    d = json.loads((out / "windows.json").read_text())
    digit = [r for r in d["features"] if r["feature"] == "digit" and r["parent"] is None and r["n_base"]]
    # restarting from the sampler's own last state keeps the digit; from near pure noise it mostly does not
    assert all(r["retention"][0] == 1.0 for r in digit)
    mean_950 = np.mean([r["retention"][-1] for r in digit])
    assert mean_950 < 0.8


@pytest.mark.slow
def test_real_images_as_base_samples(tmp_path):
    from PIL import Image

    from diffusion_windows.diffusion.default import digits_split

    _, _, test_x, test_y = digits_split()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray((test_x[i, 0].numpy() * 255).astype("uint8")).save(folder / f"{i:02d}_{int(test_y[i])}.png")
    out = run_sweep(out=str(tmp_path / "real"), quiet=True, images=str(folder), restarts=2, timesteps="0,500",
                    num_inference_steps=10)
    d = json.loads((out / "windows.json").read_text())
    assert d["options"]["samples"] == 6
    units = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    labels = {u["base"]: u["base_label"] for u in units}
    truth = {i: int(test_y[i]) for i in range(6)}
    assert sum(labels[i] == truth[i] for i in range(6)) >= 5  # the real digits are classified as such
