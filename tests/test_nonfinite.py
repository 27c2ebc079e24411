"""NaN never becomes a label: decoded images and probabilities are checked, fp16 VAEs that need it
are upcast as diffusers does, and the exact denoiser keeps its float64 internals under any cast."""
import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_sd_pipe, sd_embeds
from diffusion_windows.diffusion import hooks
from diffusion_windows.classifiers import from_callable
from diffusion_windows.diffusion.backend import DiffusionBackend
from diffusion_windows.engine.seeds import unit_seed


def test_fp16_vae_with_force_upcast_decodes_in_float32():
    pipe = make_tiny_sd_pipe()
    pipe.vae.register_to_config(force_upcast=True)
    pipe.vae.to(torch.float16)
    seen = []
    decode = pipe.vae.decode

    def spy(z, *a, **k):
        seen.append((z.dtype, next(pipe.vae.parameters()).dtype))
        return decode(z, *a, **k)

    pipe.vae.decode = spy
    images = hooks.decode(pipe, torch.randn(2, 4, 8, 8, dtype=torch.float16))
    assert seen == [(torch.float32, torch.float32)]
    assert next(pipe.vae.parameters()).dtype == torch.float16  # cast back afterwards
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    pipe.vae.register_to_config(force_upcast=False)  # without the flag the VAE runs as it is
    hooks.decode(pipe, torch.randn(1, 4, 8, 8, dtype=torch.float16))
    assert seen[-1] == (torch.float16, torch.float16)


def _sd_backend(classifier=None):
    pipe = make_tiny_sd_pipe()
    pos, neg = sd_embeds()
    clf = classifier or from_callable(lambda im: torch.stack([im.mean((1, 2, 3)), 1 - im.mean((1, 2, 3))], 1),
                                      ["bright", "dark"])
    from diffusion_windows.features import labels_feature

    return DiffusionBackend(pipe, clf, (labels_feature(clf.labels),), 4, eta=1.0,
                            conditioning=dict(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=2.0))


def test_nan_image_fails_its_unit_with_the_seed_and_is_never_counted():
    backend = _sd_backend()
    backend.prepare([0, 1], total=2, seed=9, batch_size=8)
    decode = backend.pipe.vae.decode
    calls = [0]

    def broken(z, *a, **k):  # the VAE returns NaN for the 4th image it decodes
        out = decode(z, *a, **k)
        calls[0] += 1
        out[0][3] = float("nan")
        return out

    backend.pipe.vae.decode = broken
    plan = {0: [500.0, 750.0], 1: [500.0]}
    with pytest.raises(FloatingPointError) as e:
        backend.run(plan, restarts=2, seed=9, batch_size=64)
    # sample 3 = base 0 at its 2nd timestep (750), restart 1
    msg = str(e.value)
    assert "decoded image is NaN or Inf for base 0 restarted at timestep 750" in msg
    assert f"reverse seed {unit_seed(9, 'reverse', 0, 750, 1)}" in msg


def test_nan_probabilities_fail_the_unit():
    good = _sd_backend().classifier

    def nan_for_dark(images):
        p = good(images).clone()
        p[-1] = float("nan")  # the last image classified: a base sample
        return p

    backend = _sd_backend(from_callable(nan_for_dark, good.labels))
    backend.prepare([0], total=1, seed=0, batch_size=8)
    with pytest.raises(FloatingPointError, match=r"probabilities is NaN or Inf for base sample 0 .*base seed \d+"):
        backend.run({0: [250.0]}, restarts=1, seed=0, batch_size=64)


@pytest.mark.slow
def test_gaussian_mixture_in_float16_is_finite_and_matches_float32(tmp_path):
    from diffusion_windows import run_sweep

    runs = {}
    for dtype in ("float32", "float16"):
        out = run_sweep(model="gaussian-mixture", dtype=dtype, samples=16, restarts=4, timesteps="0:1000:250",
                        num_inference_steps=10, out=str(tmp_path / dtype), quiet=True)
        runs[dtype] = {(r["feature"], r["value"], r["parent"]): r for r in
                       json.loads((out / "windows.json").read_text())["features"]}
    for key, r16 in runs["float16"].items():
        r32 = runs["float32"][key]
        assert r16["retention"] is not None and all(np.isfinite(r16["retention"]))
        # the same seeds: fp16 rounding flips few restarts
        assert np.max(np.abs(np.subtract(r16["retention"], r32["retention"]))) <= 0.15, key
