"""A resume never mixes two models: retrained weights, a new hub revision or other images are an option clash."""
import json

import pytest
import torch

from conftest import make_tiny_ddpm_pipe
from diffusion_windows.engine import fingerprint as fp
from diffusion_windows.options import OptionError, resolve
from diffusion_windows.runfolder import check_resume


def test_folder_fingerprint_sees_retraining_not_copies(tmp_path):
    pipe = make_tiny_ddpm_pipe()
    pipe.save_pretrained(tmp_path / "a")
    pipe.save_pretrained(tmp_path / "b")
    assert fp.folder_fingerprint(tmp_path / "a") == fp.folder_fingerprint(tmp_path / "b")
    with torch.no_grad():  # "retrained": one weight moves, shapes and sizes stay
        next(pipe.unet.parameters()).add_(1e-3)
    pipe.save_pretrained(tmp_path / "b")
    assert fp.folder_fingerprint(tmp_path / "a") != fp.folder_fingerprint(tmp_path / "b")


def test_resume_with_changed_weights_is_an_option_clash(tmp_path):
    folder = tmp_path / "pipe"
    make_tiny_ddpm_pipe().save_pretrained(folder)
    opts = dict(model=str(folder), labels="a,b", clip_model="ViT-B-32", out=str(tmp_path / "run"))
    o = resolve(opts)
    assert o["fingerprints"]["model"] == fp.folder_fingerprint(folder)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "options.json").write_text(json.dumps(o))
    check_resume(tmp_path / "run", resolve(opts))  # unchanged: fine
    pipe = make_tiny_ddpm_pipe()
    with torch.no_grad():
        next(pipe.unet.parameters()).mul_(1.01)
    pipe.save_pretrained(folder)
    with pytest.raises(OptionError, match=r"--model: the content of .* changed since the run"):
        check_resume(tmp_path / "run", resolve(opts))


def test_resume_with_changed_images_is_an_option_clash(tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=10 * i).save(imgs / f"{i}.png")
    opts = dict(images=str(imgs), out=str(tmp_path / "run"))
    o = resolve(opts)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "options.json").write_text(json.dumps(o))
    Image.new("L", (8, 8), color=99).save(imgs / "1.png")  # same count, other content
    with pytest.raises(OptionError, match="--images: the content"):
        check_resume(tmp_path / "run", resolve(opts))


def test_hub_revision_recorded_from_the_local_cache(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    make_tiny_ddpm_pipe().save_pretrained(snap)
    monkeypatch.setattr(fp, "hub_snapshot", lambda repo: ("0123abcd", snap) if repo == "org/name" else None)
    o = resolve(dict(model="org/name", labels="a,b", clip_model="ViT-B-32", out=str(tmp_path / "run")))
    assert o["fingerprints"]["model_revision"] == "0123abcd"
    assert o["fingerprints"]["model"] == fp.folder_fingerprint(snap)
