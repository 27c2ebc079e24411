"""The transformer adapters on tiny random pipelines: stock reproduction (SD3, Flux dev and
schnell-like, PixArt-α and -Σ, Sana, DiT), img2img equivalence (SD3, Flux), restarts off the
grid, branching, staircase batching, model-call counts, decoding, refusals."""
import types

import numpy as np
import pytest
import torch
from tiny_transformers import dit_pipe, flux_embeds, flux_pipe, pixart_pipe, sana_pipe, sd3_embeds, sd3_pipe, t5_embeds

from diffusion_windows.diffusion import hooks
from diffusion_windows.diffusion import schedule as S
from diffusion_windows.diffusion.backend import DiffusionBackend
from diffusion_windows.diffusion.denoisers import denoiser
from diffusion_windows.diffusion.denoisers.flux import pack, unpack

N = 5


def gens(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def family(name):
    """``(pipe, call keywords, pixel size, stock-only keywords)`` of each family, batch 2."""
    if name == "sd3":
        pe, pooled, ne, npooled = sd3_embeds(2)
        return sd3_pipe(), dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, negative_prompt_embeds=ne,
                                negative_pooled_prompt_embeds=npooled, guidance_scale=5.0), 8, {}
    if name in ("flux-dev", "flux-schnell"):
        pe, pooled, ne, npooled = flux_embeds(2)
        kw = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, guidance_scale=3.0)
        if name == "flux-schnell":  # no guidance embedding; true CFG with a negative prompt
            kw.update(negative_prompt_embeds=ne, negative_pooled_prompt_embeds=npooled, true_cfg_scale=2.0)
        return flux_pipe(guidance_embeds=name == "flux-dev"), kw, 8, {}
    if name in ("pixart-alpha", "pixart-sigma", "sana"):
        pe, m, ne, nm = t5_embeds(2, dim=8 if name == "sana" else 32)
        kw = dict(prompt_embeds=pe, prompt_attention_mask=m, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm, guidance_scale=4.0)
        pipe = sana_pipe() if name == "sana" else pixart_pipe(alpha=name == "pixart-alpha")
        size = {"pixart-alpha": 16, "pixart-sigma": 8, "sana": 32}[name]
        return pipe, kw, size, dict(use_resolution_binning=False, negative_prompt=None)
    if name == "dit":
        return dit_pipe(), dict(class_labels=[1, 2], guidance_scale=3.0), None, {}
    raise KeyError(name)


FAMILIES = ["sd3", "flux-dev", "flux-schnell", "pixart-alpha", "pixart-sigma", "sana", "dit"]


def size_kw(size):
    return {} if size is None else dict(height=size, width=size)


def stock_latents(name, pipe, kw, size, extra, seeds, output_type="latent"):
    if name == "dit":
        return pipe(num_inference_steps=N, generator=gens(seeds), output_type=output_type, **kw).images
    out = pipe(num_inference_steps=N, generator=gens(seeds), output_type=output_type, **size_kw(size), **kw,
               **extra).images
    return out


# ----------------------------------------------------------------------------- (1) stock pipelines
@pytest.mark.parametrize("name", FAMILIES)
def test_sample_trajectory_reproduces_the_stock_pipeline(name):
    pipe, kw, size, extra = family(name)
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]), **size_kw(size),
                                   **kw)
    if name != "dit":  # DiT returns decoded images only
        ref = stock_latents(name, pipe, kw, size, extra, [1, 2])
        got = pack(traj.final) if name.startswith("flux") else traj.final
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        # the grid the pipeline ran (its scheduler keeps it) is the trajectory's
        np.testing.assert_allclose(traj.timesteps, pipe.scheduler.timesteps.double().numpy(), atol=1e-4)
    if name in ("sd3", "flux-dev", "sana", "dit"):  # decoded with each VAE's scaling (and shift)
        ref = stock_latents(name, pipe, kw, size, extra, [1, 2], output_type="pt" if name == "dit" else "np")
        ref = torch.as_tensor(np.asarray(ref))
        ref = ref if name == "dit" else ref.permute(0, 3, 1, 2)
        torch.testing.assert_close(hooks.decode(pipe, traj.final), ref, atol=1e-5, rtol=1e-5)
    # denoise_from the pipeline's own initial noise at the grid's first timestep: the same run
    g = gens([1, 2])
    shape = denoiser(pipe).sample_shape(*(size, size) if size else ())
    x_T = torch.cat([torch.randn(1, *shape, generator=gi) for gi in g])
    out = hooks.denoise_from(pipe, x_T, traj.timesteps[0], num_inference_steps=N, generator=g, **kw)
    torch.testing.assert_close(out, traj.final, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (2) img2img
@pytest.mark.parametrize("name, strength", [("sd3", 0.6), ("flux-dev", 0.7)])
def test_noise_to_and_denoise_from_equal_img2img(name, strength):
    from diffusers import FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

    pipe, kw, size, _ = family(name)
    cls = StableDiffusion3Img2ImgPipeline if name == "sd3" else FluxImg2ImgPipeline
    img2img = cls(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    channels = denoiser(pipe).latent_channels
    x0 = torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(6))  # latents: taken as they are
    ref = img2img(image=x0, strength=strength, num_inference_steps=N, generator=gens([7, 8]), height=8, width=8,
                  output_type="latent", **kw).images
    grid = S.inference_timesteps(pipe.scheduler, N, denoiser(pipe).grid_kwargs(N, (8, 8)))
    t_start = grid[int(N - N * strength)]  # img2img's get_timesteps: strength is a fraction of steps
    g = gens([7, 8])
    noise = torch.cat([torch.randn(1, channels, 8, 8, generator=gi) for gi in g])
    x_t = hooks.noise_to(pipe.scheduler, x0, t_start, noise=noise)
    out = hooks.denoise_from(pipe, x_t, t_start, num_inference_steps=N, generator=g, **kw)
    torch.testing.assert_close(pack(out) if name != "sd3" else out, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (3) off the grid, branching
def _recording(pipe, scale=1.0):
    """Wrap the transformer: record each call's timestep (times ``scale``) and batch rows."""
    calls = []
    forward = pipe.transformer.forward

    def recorded(*args, **kwargs):
        t, x = kwargs.get("timestep"), kwargs.get("hidden_states", args[0] if args else None)
        calls.append((float(t.reshape(-1)[0]) * scale, int(x.shape[0])))
        return forward(*args, **kwargs)

    pipe.transformer.forward = recorded
    return calls


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
def test_a_restart_off_the_grid_runs_the_pipelines_grid_below_it(name):
    pipe, kw, size, _ = family(name)
    den = denoiser(pipe)
    grid = S.inference_timesteps(pipe.scheduler, N, den.grid_kwargs(N, (8, 8)))
    calls = _recording(pipe, scale=1000.0 if name.startswith("flux") else 1.0)
    t = 0.5 * (grid[1] + grid[2]) + 0.3  # strictly between two grid timesteps
    x = torch.randn(2, den.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    hooks.denoise_from(pipe, x, t, num_inference_steps=N, **kw)
    ran = np.array([c[0] for c in calls])
    np.testing.assert_allclose(ran, np.concatenate([[t], grid[grid < t]]), atol=1e-3)


@pytest.mark.parametrize("name", ["sd3", "flux-dev", "pixart-sigma"])
def test_branching_from_a_deterministic_trajectory_reproduces_its_end(name):
    pipe, kw, size, _ = family(name)
    if name == "pixart-sigma":
        pipe.scheduler = S.make_scheduler("ddim", pipe.scheduler)  # history-free, eta = 0
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([3, 4]),
                                   **size_kw(size), **kw)
    for i in (1, N - 1):
        out = hooks.denoise_from(pipe, traj.states[i], traj.timesteps[i], num_inference_steps=N, **kw)
        torch.testing.assert_close(out, traj.final, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (4) staircase, counts
def _groups(pipe, size, times, seed=0):
    den = denoiser(pipe)
    shape = den.sample_shape(*(size, size) if size else ())
    out = []
    for j, t in enumerate(times):
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed + j))
        out.append((x, t, [100 * j, 100 * j + 1]))
    return out


@pytest.mark.parametrize("name, scheduler", [("sd3", "flow-ancestral"), ("flux-dev", None),
                                             ("flux-schnell", "flow-ancestral"), ("pixart-alpha", "ddpm"),
                                             ("pixart-sigma", None), ("sana", None), ("sana", "flow-ancestral"),
                                             ("dit", "ddpm")])
def test_staircase_equals_separate_restarts_and_counts_every_model_row(name, scheduler):
    pipe, kw, size, _ = family(name)
    if scheduler is not None:
        pipe.scheduler = S.make_scheduler(scheduler, pipe.scheduler)
    den = denoiser(pipe)
    hw = den.sample_shape(*(size, size) if size else ())[1:]
    grid = S.inference_timesteps(pipe.scheduler, N, den.grid_kwargs(N, hw))
    off = round(0.5 * float(grid[2] + grid[3])) + (0.3 if S.is_flow(pipe.scheduler) else 0)  # VP: integers only
    times = [float(grid[0]), float(grid[2]), off, 0.0]
    one = {k: (v[:1] if torch.is_tensor(v) else v[:1] if isinstance(v, list) else v) for k, v in kw.items()}
    groups = _groups(pipe, size, times)
    calls = _recording(pipe)
    outs, evals = hooks.denoise_staircase(pipe, [(x, t, gens(s)) for x, t, s in groups], num_inference_steps=N,
                                          max_batch=5, return_evaluations=True, **one)
    assert sum(int(e.sum()) for e in evals) == sum(rows for _, rows in calls)  # counted where they ran
    backend = DiffusionBackend(pipe, types.SimpleNamespace(labels=("a", "b")), (), N, conditioning=one,
                               **size_kw(size))
    for (x, t, seeds), out, e in zip(groups, outs, evals):
        assert (e == backend.cost(S.restart_timestep(pipe.scheduler, t, N, den.grid_kwargs(N, hw)))).all()
        alone = hooks.denoise_from(pipe, x, t, num_inference_steps=N, generator=gens(seeds), **one)
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)
    rows = 2 if kw.get("guidance_scale", 1) > 1 and not name.startswith("flux") or "true_cfg_scale" in kw else 1
    assert backend.rows == rows
    if S.is_flow(pipe.scheduler):  # a flow restart at 0 is x0 itself: no step (VP grids end with a step at 0)
        assert int(evals[-1].sum()) == 0 and outs[-1].equal(groups[-1][0])


# ----------------------------------------------------------------------------- (5) images, refusals
def test_real_images_encode_with_each_vae():
    for name in ("sd3", "flux-dev", "sana"):
        pipe, kw, size, _ = family(name)
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        z = hooks.encode(pipe, images)
        assert tuple(z.shape[1:]) == denoiser(pipe).sample_shape(size, size)
        assert hooks.decode(pipe, z).shape == images.shape


def test_adapters_refuse_bad_conditioning():
    pipe, kw, _, _ = family("sd3")
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        denoiser(pipe).prepare(1, prompt_embeds=kw["prompt_embeds"])
    with pytest.raises(ValueError, match="skip_guidance_layers"):
        denoiser(pipe).prepare(1, skip_guidance_layers=[1], **kw)
    with pytest.raises(ValueError, match="no text encoder"):
        denoiser(pipe).prepare(1, prompt="a cat")
    dit = dit_pipe()
    cond = denoiser(dit).prepare(2, class_labels="goldfish", guidance_scale=4.0)  # a name of its id2label
    assert cond.cond["class_labels"].tolist() == [1, 1] and cond.uncond["class_labels"].tolist() == [1000, 1000]
    with pytest.raises(ValueError, match="outside"):
        denoiser(dit).prepare(1, class_labels=1000)
    with pytest.raises(ValueError, match="needs class_labels"):
        denoiser(dit).prepare(1)
    with pytest.raises(ValueError, match="makes 16x16"):
        denoiser(dit).sample_shape(32, 32)
    x = torch.randn(1, 1, 8, 8)
    assert unpack(pack(x), 8, 8).equal(x)


def test_unsupported_families_are_refused_in_one_line(monkeypatch):
    class AuraFlowTransformer2DModel(torch.nn.Module):
        pass

    fake = types.SimpleNamespace(transformer=AuraFlowTransformer2DModel(), scheduler=sd3_pipe().scheduler)
    with pytest.raises(ValueError, match="AuraFlowTransformer2DModel is not supported; supported families: .*Flux.1"):
        denoiser(fake)
    from diffusers import DiffusionPipeline

    from diffusion_windows.diffusion import models

    class FluxFillPipeline:  # the supported transformer inside a pipeline that feeds it other inputs
        pass

    fill = FluxFillPipeline()
    fill.transformer, fill.scheduler = flux_pipe().transformer, fake.scheduler
    with pytest.raises(ValueError, match="FluxFillPipeline is not supported .*FluxPipeline, FluxImg2ImgPipeline"):
        denoiser(fill)
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", staticmethod(lambda *a, **k: fake))
    with pytest.raises(models.ModelLoadError, match="AuraFlow.*SD3|AuraFlow.*Stable Diffusion 3"):
        models._from_pretrained("some/auraflow", torch.float32, "cpu")
