"""The newer flow-matching image families (Chroma, Flux Kontext, Qwen-Image, Z-Image) on tiny random
pipelines saved to a folder and loaded as a user loads them: the stock pipeline's latents and images
reproduced by the toolkit's loop, the grid it ran, restarts from on- and off-grid sigmas (each equal
to the stock ``__call__`` started from the same latents at the same sigma), staircase batches equal
to separate restarts with every model row counted, refusals."""
import types

import numpy as np
import pytest
import torch
from tiny_families import PIPES, SIZES, call_kwargs

from diffusion_windows.diffusion import hooks
from diffusion_windows.diffusion import schedule as S
from diffusion_windows.diffusion.backend import DiffusionBackend
from diffusion_windows.diffusion.denoisers import denoiser
from diffusion_windows.diffusion.denoisers.flow import pack, unpack
from diffusion_windows.diffusion.denoisers.flux2 import tokens

N = 4
NAMES = sorted(PIPES)
REVERSED = ("lumina2", "z-image")  # the model takes 1 - s
THOUSANDS = ("hidream",)            # the model takes 1000 s (the others: s)


def gens(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny pipeline, saved and loaded back (``DiffusionPipeline.from_pretrained``; Chroma
    with its tiny T5, the others without text encoders, passed as None as a user drops them)."""
    from diffusers import DiffusionPipeline

    root = tmp_path_factory.mktemp("families")
    out = {}
    for name in NAMES:
        pipe = PIPES[name](text=True) if name == "chroma" else PIPES[name]()
        pipe.save_pretrained(root / name)
        missing = {k: None for k, v in pipe.components.items() if v is None}
        pipe = DiffusionPipeline.from_pretrained(root / name, local_files_only=True, **missing)
        if name == "hidream":
            pipe.default_sample_size = 16  # set small, as tiny_families does (an attribute: not saved)
        pipe.set_progress_bar_config(disable=True)
        out[name] = pipe
    return out


@pytest.fixture(scope="module")
def runs(saved):
    """``name -> (pipe, kw, stock-only kw, size, trajectory)``: one toolkit trajectory per family."""
    out = {}
    for name in NAMES:
        pipe, (kw, extra), size = saved[name], call_kwargs(name), SIZES[name]
        traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]),
                                       height=size, width=size, **kw)
        out[name] = (pipe, kw, extra, size, traj)
    return out


def packed(pipe, x):
    """The toolkit's samples in the layout the stock pipeline returns them."""
    return denoiser(pipe).pipeline_latents(x)


def stock(pipe, kw, extra, size, seeds=(1, 2), output_type="latent", **more):
    return pipe(num_inference_steps=N, generator=gens(seeds), height=size, width=size, output_type=output_type,
                **kw, **extra, **more).images


def base_sigmas(pipe, den, sigmas, hw):
    """The unshifted sigmas the stock ``__call__`` takes that its scheduler shifts to ``sigmas`` (``mu``,
    or a static ``shift``)."""
    s = np.asarray(sigmas, dtype=np.float64)
    cfg = pipe.scheduler.config
    if not cfg.use_dynamic_shifting:
        k = cfg.shift
        return s / (k - (k - 1) * s)
    mu = den.grid_kwargs(N, hw)["mu"]
    e = mu if cfg.time_shift_type == "linear" else np.exp(mu)
    return 1.0 / (1.0 + e * (1.0 / s - 1.0))


# ----------------------------------------------------------------------------- (1) the stock pipelines
@pytest.mark.parametrize("name", NAMES)
def test_the_toolkit_loop_reproduces_the_stock_pipeline(runs, name):
    pipe, kw, extra, size, traj = runs[name]
    ref = stock(pipe, kw, extra, size)
    torch.testing.assert_close(packed(pipe, traj.final), ref, atol=1e-5, rtol=1e-5)
    # the grid the pipeline ran, in noise levels 1000 s (CogView 4's scheduler keeps other timesteps)
    np.testing.assert_allclose(traj.timesteps, 1000 * pipe.scheduler.sigmas[:-1].double().numpy(), atol=1e-3)
    images = torch.as_tensor(np.asarray(stock(pipe, kw, extra, size, output_type="np"))).permute(0, 3, 1, 2)
    torch.testing.assert_close(hooks.decode(pipe, traj.final), images, atol=1e-5, rtol=1e-5)
    assert tuple(images.shape[1:]) == denoiser(pipe).image_shape(size, size)


# ----------------------------------------------------------------------------- (2) restarts
def _recording(pipe):
    """Wrap the transformer: record each call's model timestep and rows (Z-Image takes lists, HiDream
    ``timesteps``)."""
    calls = []
    forward = pipe.transformer.forward

    def recorded(*args, **kwargs):
        x = kwargs.get("hidden_states", args[0] if args else kwargs.get("x"))
        t = next(v for v in (kwargs.get("timestep"), kwargs.get("timesteps"), kwargs.get("t"),
                             args[1] if len(args) > 1 else None) if v is not None)
        calls.append((float(t.reshape(-1)[0]), len(x) if isinstance(x, list) else int(x.shape[0])))
        return forward(*args, **kwargs)

    pipe.transformer.forward = recorded
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_restarts_on_and_off_the_grid_equal_the_stock_call_from_those_latents(runs, name):
    """On the grid, a restart from the trajectory's own state reproduces its end; on and off the grid,
    the stock ``__call__(latents=..., sigmas=...)`` started at that sigma (its sigmas given unshifted,
    as its scheduler shifts them) gives the toolkit's restart; the model saw exactly ``[t] + grid below t``
    in its own time convention (Z-Image, Lumina 2: ``1 - s``; HiDream: ``1000 s``; the others: ``s``)."""
    pipe, kw, extra, size, traj = runs[name]
    den = denoiser(pipe)
    hw = den.sample_shape(size, size)[1:]
    grid = traj.timesteps
    on = hooks.denoise_from(pipe, traj.states[1], grid[1], num_inference_steps=N, **kw)
    torch.testing.assert_close(on, traj.final, atol=1e-5, rtol=1e-5)
    t = 0.5 * (grid[1] + grid[2]) + 0.3  # strictly between two grid timesteps
    x = traj.states[1]
    forward = pipe.transformer.forward
    calls = _recording(pipe)
    try:
        off = hooks.denoise_from(pipe, x, t, num_inference_steps=N, **kw)
    finally:
        pipe.transformer.forward = forward
    ran = np.concatenate([[t], grid[grid < t]]) / 1000
    seen = np.array([c[0] for i, c in enumerate(calls) if i == 0 or c[0] != calls[i - 1][0]])  # one per step
    assert sum(rows for _, rows in calls) == len(ran) * 2 * denoiser(pipe).prepare(2, **kw).rows
    want = 1 - ran if name in REVERSED else 1000 * ran if name in THOUSANDS else ran
    if name == "cogview4":  # the unshifted time: the pipeline's integers on its grid, exact off it
        want = 1000 * base_sigmas(pipe, den, ran, hw)
        assert np.abs(want[1:] - np.round(want[1:])).max() < 1e-3 and abs(want[0] - round(want[0])) > 1e-2
    np.testing.assert_allclose(seen, want, atol=1e-6 * want.max())
    for start, x_t, ref in ((grid[1], traj.states[1], on), (t, x, off)):
        sigmas = base_sigmas(pipe, den, np.concatenate([[start], grid[grid < start]]) / 1000, hw)
        more = dict(sigmas=list(sigmas))
        if name == "cogview4":  # it takes integer timesteps with their sigmas: on the grid only
            if start == t:
                continue
            more["timesteps"] = list(np.round(1000 * sigmas))
        got = stock(pipe, kw, extra, size, latents=den.call_latents(x_t), **more)
        torch.testing.assert_close(got, packed(pipe, ref), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (3) staircase, counts
@pytest.mark.parametrize("name", NAMES)
def test_staircase_equals_separate_restarts_and_counts_every_model_row(runs, name):
    pipe, kw, _, size, _ = runs[name]
    den = denoiser(pipe)
    hw = den.sample_shape(size, size)[1:]
    grid = S.inference_timesteps(pipe.scheduler, N, den.grid_kwargs(N, hw))
    times = [float(grid[0]), float(grid[2]), 0.5 * float(grid[1] + grid[2]) + 0.3, 0.0]
    one = {k: (v[:, :1] if k.endswith("llama3") else v[:1] if torch.is_tensor(v) and k != "image" or isinstance(v, list)
               else v) for k, v in kw.items()}  # one prompt (Llama-3 layers: batch on axis 1)
    groups = []
    for j, t in enumerate(times):
        x = torch.randn(2, *den.sample_shape(size, size), generator=torch.Generator().manual_seed(j))
        groups.append((x, t, [100 * j, 100 * j + 1]))
    forward = pipe.transformer.forward
    calls = _recording(pipe)
    try:
        outs, evals = hooks.denoise_staircase(pipe, [(x, t, gens(s)) for x, t, s in groups], num_inference_steps=N,
                                              max_batch=5, return_evaluations=True, **one)
    finally:
        pipe.transformer.forward = forward
    assert sum(int(e.sum()) for e in evals) == sum(rows for _, rows in calls)  # counted where they ran
    backend = DiffusionBackend(pipe, types.SimpleNamespace(labels=("a", "b")), (), N, conditioning=one,
                               height=size, width=size)
    assert backend.rows == (1 if name in ("flux-kontext", "flux2") else 2)  # guidance embeddings: no second call
    for (x, t, seeds), out, e in zip(groups, outs, evals):
        assert (e == backend.cost(S.restart_timestep(pipe.scheduler, t, N, den.grid_kwargs(N, hw)))).all()
        alone = hooks.denoise_from(pipe, x, t, num_inference_steps=N, generator=gens(seeds), **one)
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)
    assert int(evals[-1].sum()) == 0 and outs[-1].equal(groups[-1][0])  # at 0: x0 itself, no step


# ----------------------------------------------------------------------------- (4) real images, layouts
def test_real_images_encode_as_each_pipeline_encodes_them(saved):
    """Model space is each pipeline's: Flux.2 patchifies and batch-normalises (the posterior's mode, as
    its reference images), Qwen-Image's frame VAE normalises by latents_mean/std (a posterior draw, as
    its img2img pipeline), Kontext shifts and scales (mode)."""
    from diffusers import QwenImageImg2ImgPipeline

    for name in ("flux2", "qwen-image", "flux-kontext"):
        pipe, size = saved[name], SIZES[name]
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        pixels = images * 2 - 1
        if name == "qwen-image":
            z = hooks.encode(pipe, images, generator=torch.Generator().manual_seed(3))
            ref = QwenImageImg2ImgPipeline(**pipe.components)._encode_vae_image(
                pixels[:, :, None], torch.Generator().manual_seed(3))[:, :, 0]
        else:
            z, ref = hooks.encode(pipe, images), pipe._encode_vae_image(pixels, None)
        torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5)
        assert tuple(z.shape[1:]) == denoiser(pipe).sample_shape(size, size)
        assert hooks.decode(pipe, z).shape == images.shape


def test_layouts_invert():
    x = torch.randn(2, 3, 4, 6)
    assert unpack(pack(x), 4, 6).equal(x) and tokens(x).shape == (2, 24, 3)
    assert tokens(x).permute(0, 2, 1).reshape(x.shape).equal(x)


def test_bad_conditioning_is_refused_in_one_line(saved):
    for name in NAMES:
        den = denoiser(saved[name])
        with pytest.raises(ValueError, match="needs prompt or"):
            den.prepare(1)
        with pytest.raises(ValueError, match="restarts take only"):
            den.prepare(1, prompt="a cat", strength=0.5)
        if name != "chroma":  # the others were saved without text encoders
            with pytest.raises(ValueError, match="no text encoder"):
                den.prepare(1, prompt="a cat")
    kw, _ = call_kwargs("z-image")
    with pytest.raises(ValueError, match="cfg_truncation=0.5"):
        denoiser(saved["z-image"]).prepare(2, **{**kw, "cfg_truncation": 0.5})
    from diffusers import QwenImageImg2ImgPipeline  # the same transformer, inputs the adapter does not reproduce

    with pytest.raises(ValueError, match="QwenImageImg2ImgPipeline is not supported .*as QwenImagePipeline call"):
        denoiser(QwenImageImg2ImgPipeline(**saved["qwen-image"].components))
    with pytest.raises(ValueError, match="negative_prompt_embeds"):  # guidance on, no encoder, no negative
        denoiser(saved["cogview4"]).prepare(1, prompt_embeds=call_kwargs("cogview4")[0]["prompt_embeds"])


def test_default_sizes_are_the_pipelines(saved):
    """Without height and width each adapter makes the pipeline's default image size."""
    f = {name: saved[name].vae_scale_factor for name in NAMES}
    assert denoiser(saved["z-image"]).image_shape() == (3, 1024, 1024)  # ZImagePipeline: 1024 whatever the VAE
    assert denoiser(saved["qwen-image"]).image_shape() == (3, 128 * f["qwen-image"], 128 * f["qwen-image"])
    assert denoiser(saved["cogview4"]).image_shape() == (3, 16, 16)  # the transformer's sample_size, factor 1
    assert denoiser(saved["flux2"]).sample_shape() == (4, 64, 64)  # 128 px, patchified


def test_flux2_with_reference_images_reproduces_the_stock_pipeline(saved):
    """Flux.2's reference images (PIL, prepared by the pipeline's own steps) are tokens after the latents'."""
    from PIL import Image

    pipe = saved["flux2"]
    rng = np.random.default_rng(0)
    refs = [Image.fromarray(rng.integers(0, 255, (72, 64, 3), dtype=np.uint8)) for _ in range(2)]  # >= 64 px
    kw, _ = call_kwargs("flux2")
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]), height=16,
                                   width=16, image=refs, **kw)
    ref = stock(pipe, kw, {}, 16, image=refs)
    torch.testing.assert_close(denoiser(pipe).pipeline_latents(traj.final), ref, atol=1e-5, rtol=1e-5)
    plain = stock(pipe, kw, {}, 16)
    assert (ref - plain).abs().max() > 1e-3  # the references do condition the run


def test_hidream_under_unipc_with_flow_sigmas_reproduces_the_stock_pipeline(saved):
    """HiDream's pipeline also runs UniPC with flow sigmas (no ``mu``): the same loop, the same latents."""
    import copy

    from diffusers import UniPCMultistepScheduler

    pipe = copy.copy(saved["hidream"])
    pipe.scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    kw, _ = call_kwargs("hidream")
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]), height=16,
                                   width=16, **kw)
    torch.testing.assert_close(traj.final, stock(pipe, kw, {}, 16), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(traj.timesteps, pipe.scheduler.timesteps.double().numpy())
