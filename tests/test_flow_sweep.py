"""Flow models end to end: the exact flow check (the built-in mixture's velocity under
flow-ancestral sits on the ideal curve; the ODE is flagged) and the CLI on saved tiny SD3, Flux
and DiT pipeline folders."""
import json

import numpy as np
import pytest
import torch
from test_gaussian_sweep import coverage, informative
from tiny_transformers import dit_pipe, flux_pipe, flux_text, sd3_pipe, sd3_text

from diffusion_windows import run_sweep
from diffusion_windows.plotting.figures import x_label
from diffusion_windows.sweep import main

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 12, "patch_size": 4, "width": 32, "head_width": 16, "layers": 1},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def windows(out):
    return json.loads((out / "windows.json").read_text())


@pytest.mark.slow
def test_flow_ancestral_retention_sits_on_the_ideal_curve(tmp_path):
    """The criterion of test_gaussian_sweep.py, on the mixture's exact flow velocity (timestep 1000 s)."""
    out = run_sweep(model="gaussian-mixture-flow", samples=48, restarts=8, timesteps="0:1000:50",
                    num_inference_steps=50, seed=1, out=str(tmp_path / "gmf"), quiet=True)
    d = windows(out)
    assert d["sampler"]["name"] == "FlowAncestralScheduler" and d["sampler"]["stochastic"] is True
    assert d["time_unit"] == "1000 sigma" and "warning" not in d and d["theory"]["available"] is True
    recs = d["features"]
    cov, n_points = coverage(recs)
    assert n_points >= 30 and cov >= 0.9, (cov, n_points)
    for r in (r for r in recs if r["parent"] is None and r["retention"] is not None):
        bias = np.mean((np.asarray(r["retention"]) - np.asarray(r["ideal_retention"]))[informative(r)])
        assert abs(bias) <= 0.03, (r["feature"], r["value"], bias)
    assert (out / "window.png").stat().st_size > 0


def test_the_flow_ode_is_run_and_flagged(tmp_path):
    out = run_sweep(model="gaussian-mixture-flow", scheduler="flow-euler", samples=6, restarts=2,
                    timesteps="0,400,812.5", num_inference_steps=10, out=str(tmp_path / "ode"), quiet=True)
    d = windows(out)
    assert d["sampler"] == {"name": "FlowMatchEulerDiscreteScheduler", "stochastic": False, "num_inference_steps": 10,
                            "eta": None, "family": "flow"}
    assert "deterministic" in d["warning"] and d["time_unit"] == "1000 sigma"
    assert d["features"][0]["timesteps"] == [0, 400, 812.5]
    assert "1000 \u03c3" in x_label(d["time_unit"]) and x_label(None).startswith("training timestep")


def test_auto_and_branching_on_the_flow_model(tmp_path):
    """--timesteps auto plans on the flow grid (its first point s = 1 is pure noise, read by the theory
    at a finite ou_time); branching restarts from grid states, 0 being the trajectory's end."""
    auto = windows(run_sweep(model="gaussian-mixture-flow", samples=6, restarts=2, timesteps="auto",
                             num_inference_steps=8, out=str(tmp_path / "auto"), quiet=True))
    assert auto["theory"]["available"] and len(auto["rounds"]) >= 1
    assert all(r["ideal_retention"] is None or all(v is not None for v in r["ideal_retention"])
               for r in auto["features"])
    branch = windows(run_sweep(model="gaussian-mixture-flow", samples=6, restarts=2, timesteps="0:1000:250",
                               protocol="branch", num_inference_steps=8, out=str(tmp_path / "branch"), quiet=True))
    rec = next(r for r in branch["features"] if r["retention"] is not None)
    assert rec["timesteps"][0] == 0 and all(t in branch["grid"] for t in rec["timesteps"][1:])
    assert rec["retention"][0] == 1.0


# ----------------------------------------------------------------------------- the CLI on saved pipelines
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clipcfg") / "dw-flow-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)  # in this process: the CLI runs in it (main), pretrained None
    return "dw-flow-tiny-clip"


def cli(folder, out, *extra, clip):
    argv = ["--model", str(folder), "--out", str(out), "--labels", "cat,dog", "--clip-model", clip,
            "--samples", "4", "--restarts", "2", "--num-inference-steps", "4", "--quiet", "--no-theory", *extra]
    assert main(argv) == 0
    for name in ("options.json", "results.jsonl", "windows.json", "window.png"):
        assert (out / name).stat().st_size > 0, name
    return windows(out)


def test_cli_on_a_saved_sd3_pipeline(tmp_path, tiny_clip):
    """Text encoders and tokenizers are in the folder (tiny CLIP x2 and T5, written by the test):
    --prompt is encoded as the pipeline encodes it; flow-ancestral samples; branching works."""
    sd3_pipe(**sd3_text(tmp_path)).save_pretrained(tmp_path / "sd3")
    d = cli(tmp_path / "sd3", tmp_path / "run", "--prompt", "a photo of a cat", "--guidance-scale", "3",
            "--height", "8", "--width", "8", "--scheduler", "flow-ancestral", "--protocol", "branch",
            "--timesteps", "0:1000:250", clip=tiny_clip)
    assert d["time_unit"] == "1000 sigma" and d["sampler"]["name"] == "FlowAncestralScheduler"
    assert "warning" not in d and d["options"]["scheduler"] == "flow-ancestral"
    # branching restarts from grid states: 4 steps of SD3's shift-3 grid, 0 is the trajectory's end
    assert all(t in [0.0] + d["grid"] for t in d["features"][0]["timesteps"])
    assert d["nfe"] > 0


def test_cli_on_a_saved_flux_pipeline_with_real_images(tmp_path, tiny_clip):
    from PIL import Image

    flux_pipe(guidance_embeds=True, **flux_text(tmp_path)).save_pretrained(tmp_path / "flux")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    d = cli(tmp_path / "flux", tmp_path / "run", "--prompt", "a cat", "--height", "8", "--width", "8",
            "--images", str(images), "--samples", "3", "--timesteps", "0,333.3,700", clip=tiny_clip)
    assert d["time_unit"] == "1000 sigma" and d["sampler"]["stochastic"] is False and "warning" in d
    assert d["features"][0]["timesteps"] == [0, 333.3, 700] and d["options"]["samples"] == 3


def test_cli_on_a_saved_dit_pipeline(tmp_path, tiny_clip):
    dit_pipe().save_pretrained(tmp_path / "dit")
    d = cli(tmp_path / "dit", tmp_path / "run", "--class-label", "1", "--guidance-scale", "2",
            "--timesteps", "0:1000:250", clip=tiny_clip)
    assert d["time_unit"] == "timestep" and d["sampler"]["name"] == "DDIMScheduler" and d["sampler"]["stochastic"]
    # two model rows per restart step (classifier-free guidance), DDIM grid of 4 steps
    assert d["nfe"] == 4 * 2 * 2 * (1 + 2 + 3 + 4)
    assert main(["--model", str(tmp_path / "dit"), "--out", str(tmp_path / "bad"), "--labels", "a,b",
                 "--clip-model", tiny_clip, "--class-label", "unicorn", "--quiet"]) == 2
