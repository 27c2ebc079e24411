"""Bad input to the sweep's CLI: exit 2, one line ``error: ...`` naming the value, nothing touched."""
import json
import os
import subprocess
import sys

import pytest

from diffusion_windows.options import OptionError
from diffusion_windows.sweep import main


@pytest.fixture
def places(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    notpipe = tmp_path / "notpipe"
    notpipe.mkdir()
    (notpipe / "weights.bin").write_text("x")
    textpipe = tmp_path / "textpipe"
    (textpipe / "scheduler").mkdir(parents=True)
    (textpipe / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
         "unet": ["diffusers", "UNet2DConditionModel"]}))
    (textpipe / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    uncond = tmp_path / "uncond"
    (uncond / "scheduler").mkdir(parents=True)
    (uncond / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}))
    (uncond / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(imgs / "a.png")
    return dict(empty=str(empty), notpipe=str(notpipe), textpipe=str(textpipe), uncond=str(uncond), afile=str(afile),
                imgs=str(imgs), missing=str(tmp_path / "missing" / "pipe"))


# (argv, text the one-line error must contain)
CASES = [
    (["--timesteps", "-10,100"], "-10"),
    (["--timesteps", "0,1000"], "1000"),
    (["--timesteps", "abc"], "'abc'"),
    (["--timesteps", "10:50:0"], "step 0"),
    (["--timesteps", "500:100:10"], "empty"),
    (["--timesteps", "12.5"], "12.5"),
    (["--restarts", "0"], "--restarts: 0"),
    (["--restarts", "two"], "'two'"),
    (["--batch-size", "0"], "--batch-size: 0"),
    (["--samples", "-5"], "--samples: -5"),
    (["--num-inference-steps", "0"], "--num-inference-steps: 0"),
    (["--model", "{missing}"], "does not exist"),
    (["--model", "{notpipe}"], "not a diffusers pipeline"),
    (["--model", "{textpipe}", "--labels", "a,b"], "--prompt"),
    (["--scheduler", "bogus"], "'bogus'"),
    (["--labels", ""], "--labels"),
    (["--labels", "cat"], "'cat'"),
    (["--labels", "cat,cat"], "repeats"),
    (["--images", "{missing}"], "is not a folder"),
    (["--images", "{empty}"], "holds no image"),
    (["--images", "{imgs}", "--protocol", "branch"], "branch"),
    (["--images", "{imgs}", "--samples", "2"], "--samples: 2 is more than the 1 images"),
    # a hub id is read from the local cache (its scheduler: training timesteps, flow or not), never assumed
    (["--model", "no-such-org/no-such-model", "--labels", "a,b", "--clip-model", "RN50"],
     "'no-such-org/no-such-model' is not a local folder and is not in the Hugging Face cache"),
    (["--device", "cuda:7"], "cuda:7"),
    (["--device", "toaster"], "'toaster'"),
    (["--out", "{afile}"], "is a file"),
    (["--tolerance", "1.5"], "1.5"),
    (["--tolerance", "-0.1"], "-0.1"),
    (["--edge-precision", "-1"], "-1"),
    (["--timesteps", "auto", "--restarts", "2", "--initial-restarts", "3"], "--initial-restarts: 3"),
    (["--initial-restarts", "0"], "--initial-restarts"),
    (["--max-evaluations", "0"], "--max-evaluations"),
    (["--protocol", "sideways"], "'sideways'"),
    (["--dtype", "float8"], "'float8'"),
    (["--seed", "-1"], "-1"),
    (["--guidance-scale", "-2"], "-2"),
    (["--eta", "2"], "--eta"),
    (["--clip-model", "no-such-clip"], "'no-such-clip'"),
    (["--clip-pretrained", "laion"], "--clip-model"),
    (["--model", "default", "--prompt", "a cat"], "--prompt"),
    (["--bogus-flag", "1"], "--bogus-flag"),
    # non-finite numbers: NaN compares False with everything, so each must be refused by name
    (["--timesteps", "nan"], "'nan'"),
    (["--timesteps", "inf"], "'inf'"),
    (["--timesteps", "1e400"], "'1e400'"),
    (["--timesteps", "0:inf:10"], "'inf'"),
    (["--timesteps", "10,nan"], "'nan'"),
    (["--guidance-scale", "nan"], "--guidance-scale: 'nan' is not a finite number"),
    (["--tolerance", "nan"], "--tolerance: 'nan' is not a finite number"),
    (["--eta", "inf"], "--eta: 'inf' is not a finite number"),
    (["--edge-precision", "1e400"], "--edge-precision: '1e400' is not a finite number"),
    # a photo pipeline is never classified by the bundled 16-px digit CLIP
    (["--model", "{uncond}", "--labels", "a cat,a dog"], "--clip-model"),
    (["--model", "{textpipe}", "--prompt", "a pet", "--labels", "a cat,a dog"], "--clip-model"),
    (["--model", "{uncond}", "--labels", "a,b", "--clip-model", "ViT-B-32", "--templates", "a photo"],
     "'a photo' has no '{{}}'"),
    (["--templates", "plain"], "needs --clip-model"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_exits_2_with_one_line(argv, needle, places, capsys, tmp_path):
    argv = [a.format(**places) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert needle.format(**places) in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_option_clash_refused_and_folder_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--out", str(out), "--dry-run"]) == 0
    # a folder made by an earlier run with other result-changing options
    out.mkdir()
    from diffusion_windows.options import resolve

    old = resolve({"out": str(out), "restarts": 8})
    (out / "options.json").write_text(json.dumps(old))
    (out / "results.jsonl").write_text('{"unit": "r0-b0"}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["--out", str(out), "--restarts", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "--restarts 8" in err and "4" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_non_result_options_may_differ(tmp_path):
    from diffusion_windows.options import resolve
    from diffusion_windows.runfolder import check_resume

    out = tmp_path / "run"
    out.mkdir()
    (out / "options.json").write_text(json.dumps(resolve({"out": str(out), "batch_size": 64})))
    check_resume(out, resolve({"out": str(out), "batch_size": 7}))  # no error


def test_a_run_from_before_an_option_existed_resumes_at_its_default_only(tmp_path):
    """A folder whose options.json predates an option (--auto-aim here) is the same run at that option's
    default, which is what the older version did, and a different run at any other value."""
    from diffusion_windows.options import resolve
    from diffusion_windows.runfolder import check_resume

    out = tmp_path / "run"
    out.mkdir()
    old = resolve({"out": str(out)})
    del old["auto_aim"]
    (out / "options.json").write_text(json.dumps(old))
    check_resume(out, resolve({"out": str(out)}))  # no error
    with pytest.raises(OptionError, match="--auto-aim"):
        check_resume(out, resolve({"out": str(out), "auto_aim": "interval"}))


def test_dry_run_prints_resolved_options(capsys, tmp_path):
    assert main(["--dry-run", "--timesteps", "0:100:50", "--out", str(tmp_path / "x")]) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["timesteps"] == [0, 50]
    assert o["restarts"] >= 1 and o["model"] == "default"
    assert not (tmp_path / "x").exists()


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "diffusion_windows.sweep", "--timesteps", "-10,100",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "-10" in r.stderr and "Traceback" not in r.stderr


def test_images_samples_takes_the_first_by_name(tmp_path, capsys):
    from PIL import Image

    from diffusion_windows.engine import fingerprint as fp

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("c.png", "a.png", "b.png"):
        Image.new("L", (8, 8), color=ord(name[0])).save(imgs / name)
    assert main(["--images", str(imgs), "--samples", "2", "--dry-run", "--out", str(tmp_path / "x")]) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["samples"] == 2
    assert o["fingerprints"]["images"] == fp.images_fingerprint([imgs / "a.png", imgs / "b.png"])
    assert main(["--images", str(imgs), "--dry-run", "--out", str(tmp_path / "x")]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3  # no --samples: every image


def test_a_digits_classifier_on_another_pipeline_gets_no_bundled_theory_data(tiny_ddpm_pipe):
    import copy

    import numpy as np

    from diffusion_windows import load_default_pipeline, theory_predictions
    from diffusion_windows.classifiers import from_callable
    from diffusion_windows.diffusion.resolve import is_bundled_pipeline

    digits = from_callable(lambda im: np.full((len(im), 10), 0.1), [str(d) for d in range(10)])
    with pytest.raises(OptionError, match="mixture"):
        theory_predictions(tiny_ddpm_pipe, digits, timesteps="0:1000:500", num_inference_steps=5)
    bundled = load_default_pipeline()
    assert is_bundled_pipeline(bundled) and is_bundled_pipeline(copy.deepcopy(bundled))
    assert not is_bundled_pipeline(tiny_ddpm_pipe)
