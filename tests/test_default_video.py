"""The bundled video default (``default-video``): clips with known motion and digit, its shipped
pipeline, the two features it is read by, and the sweep on it: files, batch-size independence,
kill and resume, bad input."""
import json
import subprocess
import sys

import pytest
import torch

from diffusion_windows import run_sweep
from diffusion_windows.bundled import assets_path
from diffusion_windows.diffusion import default_video as dv
from diffusion_windows.video_classifiers import motion_classifier
from conftest import kill_sweep_after, sweep_cli

TINY = dict(model="default-video", samples=4, restarts=2, timesteps="0,400,800", num_inference_steps=5, seed=2,
            theory=False)


def features(out):
    return json.loads((out / "windows.json").read_text())["features"]


def test_clips_move_as_built():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 0, 0] = 1.0  # one bright pixel: its track is the motion
    for d, (dy, dx) in enumerate([(-1, 0), (1, 0), (0, -1), (0, 1)]):
        clip = dv.make_clips(image, [d])[0, :, 0]
        tracks = [tuple(int(v) for v in torch.nonzero(frame)[0]) for frame in clip]
        assert all(b == (a[0] + dy, a[1] + dx) for a, b in zip(tracks, tracks[1:]))


@pytest.fixture(scope="module")
def clips():
    return dv.training_clips()


def test_features_read_the_training_clips(clips):
    x, digits, directions = clips
    assert x.shape == (4 * 10 * dv.PER_DIGIT, dv.FRAMES, 1, dv.SIZE, dv.SIZE)
    motion = motion_classifier("directions")
    assert torch.equal(motion(x).argmax(1), directions + 1)  # exact: label 0 is "static"
    pick = torch.arange(0, len(x), 9)
    read = dv.DigitFrames()(x[pick]).argmax(1)
    assert (read == digits[pick]).float().mean() >= 0.98


def test_mixture_labels_are_the_joint_classifiers(clips):
    x, digits, directions = clips
    mix = dv.default_video_mixture()
    clf = dv.load_default_video_classifier()
    fm, fd = dv.default_video_features(clf)
    assert mix.num_components == len(x) and (fm.name, fd.name) == ("motion", "digit")
    labels = clf(x[:40]).argmax(1)
    assert torch.equal(labels[labels // 10 > 0], torch.as_tensor(mix.labels[:40])[labels // 10 > 0])


def test_shipped_pipeline_is_small_and_loads():
    folder = assets_path() / dv.VIDEO_DIR
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 3.1e6
    pipe = dv.load_default_video_pipeline()
    assert pipe.unet.dtype == torch.float32 and pipe.unet.config.in_channels == dv.FRAMES
    out = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, dv.FRAMES, 1, dv.SIZE, dv.SIZE) and 0 <= out.min() and out.max() <= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dv") / "run"
    run_sweep(out=str(out), quiet=True, **TINY)
    return out


def test_sweep_measures_motion_and_digit(tiny_run):
    d = json.loads((tiny_run / "windows.json").read_text())
    assert {r["feature"] for r in d["features"]} == {"motion", "digit"}
    for name in ("window.png", "strip.png", "windows.csv", "results.jsonl"):
        assert (tiny_run / name).stat().st_size > 0


@pytest.mark.slow
def test_batch_size_does_not_change_results(tiny_run, tmp_path):
    other = tmp_path / "b1"
    run_sweep(out=str(other), quiet=True, batch_size=1, **TINY)
    assert features(other) == features(tiny_run)


@pytest.mark.slow
def test_kill_and_resume_gives_same_windows(tiny_run, tmp_path):
    args = ["--model", "default-video", "--samples", "4", "--restarts", "2", "--timesteps", "0,400,800",
            "--num-inference-steps", "5", "--seed", "2", "--no-theory", "--batch-size", "6", "--quiet"]
    killed = tmp_path / "killed"
    assert 1 <= kill_sweep_after(args, killed, lines=1) <= 4
    r = sweep_cli(args, killed)
    assert r.returncode == 0, r.stderr
    assert len((killed / "results.jsonl").read_text().splitlines()) == 4
    assert features(killed) == features(tiny_run)


@pytest.mark.parametrize("extra, needle", [
    (["--num-frames", "9"], "num_frames 9 does not match the model"),
    (["--labels", "3,5"], "'default-video' has its own features"),
    (["--height", "32"], "has one size"),
])
def test_bad_input_one_error_line(tmp_path, capsys, extra, needle):
    from diffusion_windows.sweep import main

    assert main(["--model", "default-video", "--out", str(tmp_path / "x"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.mark.slow
def test_two_processes_give_the_single_process_windows(tiny_run, tmp_path):
    import os

    args = ["--model", "default-video", "--samples", "4", "--restarts", "2", "--timesteps", "0,400,800",
            "--num-inference-steps", "5", "--seed", "2", "--no-theory", "--batch-size", "6", "--quiet"]
    out = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "diffusion_windows.sweep", *args, "--out", str(out)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert features(out) == features(tiny_run)
