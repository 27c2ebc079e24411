"""Memory bounded by the batch size: decode and classify in chunks; ``--batch-size auto`` found once and kept."""
import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_sd_pipe, sd_embeds
from diffusion_windows.classifiers import from_callable
from diffusion_windows.diffusion.backend import DiffusionBackend
from diffusion_windows.engine import memory
from diffusion_windows.features import labels_feature


def test_decode_and_classifier_never_see_more_than_batch_size_images():
    pipe = make_tiny_sd_pipe()
    seen = {"decode": [], "classify": []}
    decode = pipe.vae.decode

    def spy_decode(z, *a, **k):
        seen["decode"].append(z.shape[0])
        return decode(z, *a, **k)

    pipe.vae.decode = spy_decode

    def classify(images):
        seen["classify"].append(images.shape[0])
        m = images.mean((1, 2, 3))
        return torch.stack([m, 1 - m], 1)

    clf = from_callable(classify, ["bright", "dark"])
    pos, neg = sd_embeds()
    backend = DiffusionBackend(pipe, clf, (labels_feature(clf.labels),), 4, eta=1.0,
                               conditioning=dict(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=2.0))
    backend.prepare([0, 1, 2], total=3, seed=0, batch_size=5)
    grid = list(backend.grid)
    results = backend.run({0: grid, 1: grid, 2: grid[:2]}, restarts=3, seed=0, batch_size=5, keep=[0, 1])
    assert sum(len(r.labels) * 3 for r in results) == 30  # 30 restarts + 3 base samples classified
    assert max(seen["decode"]) <= 5 and max(seen["classify"]) <= 5
    assert sum(seen["classify"]) == 33


def test_find_batch_size_halves_on_out_of_memory():
    tried = []

    def probe(b):
        tried.append(b)
        if b > 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert memory.find_batch_size(probe, 512) == 32
    assert tried == [512, 256, 128, 64, 32]
    with pytest.raises(ValueError):  # any other error is not retried
        memory.find_batch_size(lambda b: (_ for _ in ()).throw(ValueError("bad")), 8)


def test_auto_batch_size_is_recorded_and_a_resume_reuses_it(tmp_path):
    (tmp_path / "options.json").write_text(json.dumps({"batch_size": "auto", "samples": 4}))
    o = {"batch_size": "auto"}

    def limit(n):
        def probe(b):
            if b > n:
                raise RuntimeError("CUDA error: out of memory")
        return probe

    assert memory.choose_batch_size(tmp_path, o, limit(100), on_cuda=True) == 64
    saved = json.loads((tmp_path / "options.json").read_text())
    assert saved["batch_size"] == 64 and saved["batch_size_auto"] is True and saved["samples"] == 4
    # a resume, even where a probe would now answer otherwise, runs the same batches
    assert memory.choose_batch_size(tmp_path, o, limit(10), on_cuda=True) == 64
    assert memory.choose_batch_size(tmp_path / "none", o, limit(10), on_cuda=False) == memory.DEFAULT_BATCH


@pytest.mark.slow
def test_cli_batch_size_auto_resumes_with_the_recorded_size(tmp_path):
    from diffusion_windows import run_sweep
    from diffusion_windows.options import OptionError

    opts = dict(samples=3, restarts=1, timesteps="0,500", num_inference_steps=4, quiet=True, theory=False)
    out = run_sweep(out=str(tmp_path / "run"), batch_size="auto", **opts)
    saved = json.loads((out / "options.json").read_text())
    assert saved["batch_size"] == memory.DEFAULT_BATCH and saved["batch_size_auto"] is True
    run_sweep(out=str(out), batch_size="auto", **opts)  # the folder's recorded size; no option clash
    with pytest.raises(OptionError, match="--batch-size: 'big'"):
        run_sweep(out=str(tmp_path / "bad"), batch_size="big", **opts)


def test_probe_runs_the_heaviest_steps_at_a_batch_size(tiny_sd_pipe):
    calls = {"rows": 0}
    forward = tiny_sd_pipe.unet.forward

    def counted(x, *a, **k):
        calls["rows"] = max(calls["rows"], x.shape[0])
        return forward(x, *a, **k)

    tiny_sd_pipe.unet.forward = counted
    clf = from_callable(lambda im: torch.full((len(im), 2), 0.5), ["a", "b"])
    pos, neg = sd_embeds()
    backend = DiffusionBackend(tiny_sd_pipe, clf, (labels_feature(clf.labels),), 4,
                               conditioning=dict(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=3.0))
    backend.probe(6)
    assert calls["rows"] == 12  # guidance doubles the rows of the model call
