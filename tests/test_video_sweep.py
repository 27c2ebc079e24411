"""The CLI on saved tiny video pipelines (Wan with a tiny T5 in the folder): a motion and an
appearance feature in one run, batch-size independence, and bad input (one ``error:`` line, exit 2)."""
import json

import pytest
from test_flow_sweep import TINY_CLIP
from tiny_transformers import t5
from tiny_video import cogvideox_components, wan_components

from diffusion_windows.sweep import main


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clipcfg") / "dw-video-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return "dw-video-tiny-clip"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from diffusers import CogVideoXPipeline, WanPipeline

    root = tmp_path_factory.mktemp("video")
    tok, enc = t5()
    WanPipeline(**{**wan_components(), "tokenizer": tok, "text_encoder": enc}).save_pretrained(root / "wan")
    CogVideoXPipeline(**{**cogvideox_components(), "tokenizer": tok, "text_encoder": enc}).save_pretrained(root / "cog")
    return root


def run(folder, out, *extra):
    argv = ["--model", str(folder), "--out", str(out), "--prompt", "a cat", "--height", "16", "--width", "16",
            "--num-frames", "5", "--samples", "2", "--restarts", "2", "--num-inference-steps", "3", "--quiet",
            "--no-theory", *extra]
    return main(argv)


def rows(out):
    return sorted(json.loads(line)["labels"] for line in (out / "results.jsonl").read_text().splitlines())


def test_motion_and_appearance_in_one_run(folders, tmp_path, tiny_clip):
    out = tmp_path / "wan"
    assert run(folders / "wan", out, "--motion", "directions", "--labels", "cat,dog", "--clip-model", tiny_clip,
               "--timesteps", "0,500,1000", "--guidance-scale", "2") == 0
    d = json.loads((out / "windows.json").read_text())
    assert {r["feature"] for r in d["features"]} == {"motion", "appearance"}
    assert d["time_unit"] == "1000 sigma" and d["options"]["motion"] == "directions"
    for name in ("window.png", "strip.png", "windows.csv"):
        assert (out / name).stat().st_size > 0
    # batch size changes nothing but floating-point noise: the same labels
    other = tmp_path / "wan-b1"
    assert run(folders / "wan", other, "--motion", "directions", "--labels", "cat,dog", "--clip-model", tiny_clip,
               "--timesteps", "0,500,1000", "--guidance-scale", "2", "--batch-size", "1") == 0
    assert rows(out) == rows(other)


def test_cogvideox_motion_only_sampled_by_ddpm(folders, tmp_path):
    out = tmp_path / "cog"
    assert run(folders / "cog", out, "--motion", "moving", "--timesteps", "0,500,999", "--guidance-scale", "1",
               "--scheduler", "ddpm") == 0
    d = json.loads((out / "windows.json").read_text())
    assert {r["feature"] for r in d["features"]} == {"motion"} and d["time_unit"] == "timestep"
    assert d["sampler"]["name"] == "DDPMScheduler" and d["sampler"]["stochastic"]


def test_a_swapped_scheduler_keeps_cogvideox_shifted_noise():
    """CogVideoX shifts alphas_cumprod after building them (SNR shift, zero terminal SNR): a swap keeps them."""
    import torch

    from diffusion_windows.diffusion.schedule import make_scheduler

    source = cogvideox_components()["scheduler"]
    for name in ("ddpm", "ddim"):
        swapped = make_scheduler(name, source)
        assert torch.allclose(swapped.alphas_cumprod.double(), source.alphas_cumprod.double(), atol=1e-6)
        assert swapped.config.prediction_type == "v_prediction" and swapped.alphas_cumprod[-1] < 1e-6


@pytest.mark.parametrize("extra, needle", [
    (["--labels", "cat,dog"], "--labels: the pipeline"),
    (["--motion", "spin"], "--motion: 'spin' is not one of directions, moving, speed"),
    (["--motion", "directions", "--num-frames", "6"], "--num-frames: 6 does not match the model"),
    ([], "--labels/--motion: the video pipeline"),
    (["--motion", "directions", "--clip-frame", "0"], "--clip-frame: 0 needs --labels"),
])
def test_bad_video_input_one_error_line(folders, tmp_path, capsys, extra, needle):
    argv = ["--model", str(folders / "wan"), "--out", str(tmp_path / "bad"), "--prompt", "a cat", "--quiet", *extra]
    if "--num-frames" not in extra:
        argv += ["--num-frames", "5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_motion_on_an_image_model_refused(capsys, tmp_path):
    assert main(["--out", str(tmp_path / "x"), "--motion", "directions", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--motion: "directions" needs a video model' in err[0]
