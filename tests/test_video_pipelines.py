"""The video adapters on tiny random pipelines (Wan 2.1, CogVideoX): the stock pipeline's output
reproduced from the toolkit's own loop, `noise_to` + `denoise_from` equal to the family's
video-to-video pipeline, branching from the sampler's own states, staircase batching, decoding to
clips ``[N, F, C, H, W]``, and the refusals (LTX, HunyuanVideo, bad sample shapes)."""
import pytest
import torch
from tiny_video import (cogvideox_components, cogvideox_pipe, hunyuan_embeds, hunyuan_pipe, ltx_pipe, video_embeds,
                        wan_components, wan_pipe)

from diffusion_windows.diffusion import hooks
from diffusion_windows.diffusion.denoisers import denoiser

N, FRAMES, SIZE = 4, 9, 16


def gens(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@pytest.fixture(scope="module")
def pipes():
    return {"wan": wan_pipe(), "cogvideox": cogvideox_pipe()}


def kw(name, n=2):
    pe, ne = video_embeds(n, length=8 if name == "wan" else 16)
    return dict(prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=5.0)


def to_stock(name, x):
    """The toolkit's [N, C, F, H, W] in the stock pipeline's latent layout (CogVideoX: [N, F, C, H, W])."""
    return x.permute(0, 2, 1, 3, 4) if name == "cogvideox" else x


@pytest.fixture(scope="module")
def stock(pipes):
    out = {}
    for name, pipe in pipes.items():
        common = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=N, **kw(name))
        out[name] = (pipe(generator=gens([0, 1]), output_type="latent", **common).frames,
                     pipe(generator=gens([0, 1]), output_type="pt", **common).frames)
    return out


@pytest.fixture(scope="module")
def trajectories(pipes):
    return {name: hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([0, 1]),
                                          num_frames=FRAMES, height=SIZE, width=SIZE, **kw(name))
            for name, pipe in pipes.items()}


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_sample_trajectory_reproduces_stock_pipeline(name, pipes, stock, trajectories):
    latents, video = stock[name]
    traj = trajectories[name]
    assert traj.final.ndim == 5 and traj.final.shape[2] == (FRAMES - 1) // 4 + 1
    assert torch.equal(to_stock(name, traj.final), latents)
    clips = hooks.decode(pipes[name], traj.final)
    assert clips.shape == video.shape == (2, FRAMES, 3, SIZE, SIZE)
    assert torch.allclose(clips, video, atol=1e-5)


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_branch_from_own_state_is_exact(name, pipes, stock, trajectories):
    traj = trajectories[name]
    for i in (1, N - 1):
        branch = hooks.denoise_from(pipes[name], traj.states[i], traj.timesteps[i], num_inference_steps=N,
                                    **kw(name))
        assert torch.equal(to_stock(name, branch), stock[name][0])


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_staircase_equals_separate_restarts(name, pipes, trajectories):
    pipe, traj = pipes[name], trajectories[name]
    groups = [(traj.states[1], traj.timesteps[1], None), (traj.states[2], traj.timesteps[2], None)]
    embeds = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in kw(name).items()}
    outs = hooks.denoise_staircase(pipe, groups, num_inference_steps=N, max_batch=3, **embeds)
    for (x, t, _), out in zip(groups, outs):
        ref = hooks.denoise_from(pipe, x, t, num_inference_steps=N, **kw(name))
        assert torch.allclose(out, ref, atol=1e-5)


def test_wan_noise_to_denoise_from_equal_video_to_video():
    from diffusers import WanVideoToVideoPipeline

    comps = wan_components()
    v2v = WanVideoToVideoPipeline(**comps)
    v2v.set_progress_bar_config(disable=True)
    pipe = wan_pipe()
    pipe.transformer, pipe.vae = v2v.transformer, v2v.vae
    clips = torch.rand(2, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    strength = 0.6
    ref = v2v(video=clips, strength=strength, num_inference_steps=N, height=SIZE, width=SIZE, generator=gens([3, 4]),
              output_type="latent", **kw("wan")).frames
    grid = hooks.inference_timesteps(pipe.scheduler, N)
    start = grid[N - int(N * strength)]
    x0 = hooks.encode(pipe, clips)
    x_t = hooks.noise_to(pipe.scheduler, x0, start, generator=gens([3, 4]), num_inference_steps=N)
    ours = hooks.denoise_from(pipe, x_t, start, num_inference_steps=N, **kw("wan"))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_cogvideox_noise_to_denoise_from_equal_video_to_video():
    from diffusers import CogVideoXVideoToVideoPipeline
    from diffusers.utils.torch_utils import randn_tensor

    v2v = CogVideoXVideoToVideoPipeline(**cogvideox_components())
    v2v.set_progress_bar_config(disable=True)
    pipe = cogvideox_pipe()
    pipe.transformer, pipe.vae = v2v.transformer, v2v.vae
    clips = torch.rand(2, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    strength = 0.5
    ref = v2v(video=clips, strength=strength, num_inference_steps=N, height=SIZE, width=SIZE, generator=gens([3, 4]),
              output_type="latent", **kw("cogvideox")).frames
    grid = hooks.inference_timesteps(pipe.scheduler, N)
    start = grid[N - int(N * strength)]
    g = gens([3, 4])  # the stock pipeline draws the posterior sample, then the noise, from each sample's generator
    x0 = torch.cat([hooks.encode(pipe, clips[i:i + 1], generator=g[i]) for i in range(2)])
    noise = randn_tensor((2, x0.shape[2], x0.shape[1], *x0.shape[-2:]), generator=g).permute(0, 2, 1, 3, 4)
    x_t = hooks.noise_to(pipe.scheduler, x0, start, noise=noise, num_inference_steps=N)
    ours = hooks.denoise_from(pipe, x_t, start, num_inference_steps=N, **kw("cogvideox"))
    assert torch.allclose(ours.permute(0, 2, 1, 3, 4), ref, atol=1e-5)


def test_video_shapes_and_refusals(pipes):
    wan, cog = denoiser(pipes["wan"]), denoiser(pipes["cogvideox"])
    assert wan.sample_shape(SIZE, SIZE, num_frames=FRAMES) == (16, 3, 2, 2)
    assert cog.sample_shape() == (4, 3, 2, 2)  # the transformer's sample size and frames
    assert cog.image_shape() == (9, 3, 16, 16)
    with pytest.raises(ValueError, match=r"is not \[N, C, F, H, W\]"):
        hooks.denoise_from(pipes["wan"], torch.zeros(1, 16, 2, 2), 500.0, num_inference_steps=N, **kw("wan", 1))
    with pytest.raises(ValueError, match="takes 16 channels"):
        hooks.denoise_from(pipes["wan"], torch.zeros(1, 4, 3, 2, 2), 500.0, num_inference_steps=N, **kw("wan", 1))
    from conftest import make_tiny_ddpm_pipe

    with pytest.raises(ValueError, match="makes images, not clips"):
        hooks.sample_trajectory(make_tiny_ddpm_pipe(), num_frames=9, num_inference_steps=2)


def test_other_video_pipelines_refused_in_one_line(pipes):
    from diffusers import WanImageToVideoPipeline

    fake = type("WanImageToVideoPipeline", (WanImageToVideoPipeline,), {})
    pipe = object.__new__(fake)
    pipe.__dict__.update(transformer=pipes["wan"].transformer, scheduler=pipes["wan"].scheduler)
    with pytest.raises(ValueError) as e:
        denoiser(pipe)
    msg = str(e.value)
    assert "WanImageToVideoPipeline is not supported" in msg and "HunyuanVideo" in msg and "LTX" in msg
    assert "\n" not in msg


def test_backend_probe_and_chunked_classification(pipes, trajectories):
    """The memory probe runs one model call, one decode and one classification on video; decoding and
    classifying in chunks of the batch size gives the labels of one whole batch."""
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.features import Feature
    from diffusion_windows.video_classifiers import motion_classifier

    clf = motion_classifier()
    feature = Feature("motion", {label: (i,) for i, label in enumerate(clf.labels)})
    embeds = kw("wan", 1)
    backend = DiffusionBackend(pipes["wan"], clf, (feature,), N, conditioning=embeds, height=SIZE, width=SIZE,
                               num_frames=FRAMES)
    assert backend.shape == (16, 3, 2, 2) and backend.time_unit == "1000 sigma"
    backend.probe(2)
    x = torch.cat([trajectories["wan"].final, trajectories["wan"].states[1]])
    assert list(backend.classify(x, batch_size=1)) == list(backend.classify(x))


def _wan_stock_and_ours(pipe, n=N, **extra):
    common = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=n, **kw("wan"), **extra)
    stock = pipe(generator=gens([0, 1]), output_type="latent", **common).frames
    ours = hooks.sample_trajectory(pipe, batch_size=2, generator=gens([0, 1]), **common)
    return stock, ours


def test_wan_under_unipc_flow_shift_reproduces_stock():
    from diffusers import UniPCMultistepScheduler

    pipe = wan_pipe(UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))
    stock, traj = _wan_stock_and_ours(pipe)
    assert torch.allclose(traj.final, stock, atol=1e-6)
    assert hooks.restart_timestep(pipe.scheduler, 700.0, N) in traj.timesteps  # UniPC snaps to its grid


def test_wan22_two_experts_reproduce_stock():
    """Wan 2.2: ``transformer`` above ``boundary_ratio * T`` with ``guidance_scale``, ``transformer_2`` below with
    ``guidance_scale_2``."""
    from diffusers import WanPipeline

    comps = wan_components()
    second = wan_components()["transformer"]
    torch.manual_seed(1)
    for p in second.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    pipe = WanPipeline(**comps, transformer_2=second, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    stock, traj = _wan_stock_and_ours(pipe, guidance_scale_2=3.0)
    assert torch.equal(traj.final, stock)
    assert not torch.allclose(_wan_stock_and_ours(wan_pipe())[1].final, stock, atol=1e-4)  # the expert matters
    with pytest.raises(ValueError, match="guidance_scale_2=3.0 needs Wan 2.2's second transformer"):
        denoiser(wan_pipe()).prepare(1, None, guidance_scale_2=3.0, **kw("wan", 1))


def test_cogvideox_dpm_sampler_reproduces_stock():
    """CogVideoX-5b's stochastic second-order sampler: the toolkit's loop (`CogVideoXDPMLoop`) draws the same noise
    and keeps the same history as the stock pipeline; a restart from a grid state starts first-order."""
    from diffusers import CogVideoXDPMScheduler

    from diffusion_windows.diffusion.cogvideox_dpm import CogVideoXDPMLoop, loop_scheduler
    from diffusion_windows.diffusion.noise import is_stochastic

    dpm = CogVideoXDPMScheduler(prediction_type="v_prediction", snr_shift_scale=1.0, timestep_spacing="trailing",
                                beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True,
                                rescale_betas_zero_snr=True)
    pipe = cogvideox_pipe(dpm)
    common = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=N, **kw("cogvideox"))
    stock = pipe(generator=gens([0, 1]), output_type="latent", **common).frames
    pipe.scheduler = loop_scheduler(pipe.scheduler)
    assert isinstance(pipe.scheduler, CogVideoXDPMLoop) and is_stochastic(pipe.scheduler)
    traj = hooks.sample_trajectory(pipe, batch_size=2, generator=gens([0, 1]), **common)
    assert torch.allclose(to_stock("cogvideox", traj.final), stock, atol=1e-5)
    again = hooks.denoise_from(pipe, traj.states[2], traj.timesteps[2], num_inference_steps=N, generator=gens([7, 8]),
                               **kw("cogvideox"))
    assert again.shape == traj.final.shape and torch.isfinite(again).all()


@pytest.mark.parametrize("true_cfg", [1.0, 2.5])
def test_hunyuan_video_reproduces_stock_and_restarts_off_grid(true_cfg):
    """HunyuanVideo: guidance embedding, true CFG as a second call, the pipeline's sigma grid (shift 7)."""
    pipe = hunyuan_pipe()
    embeds = dict(hunyuan_embeds(2), guidance_scale=4.5, true_cfg_scale=true_cfg)
    common = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=N, **embeds)
    stock = pipe(generator=gens([0, 1]), output_type="latent", **common).frames
    traj = hooks.sample_trajectory(pipe, batch_size=2, generator=gens([0, 1]), **common)
    assert torch.equal(traj.final, stock)
    video = pipe(generator=gens([0, 1]), output_type="pt", **common).frames
    assert torch.allclose(hooks.decode(pipe, traj.final), video, atol=1e-5)
    branch = hooks.denoise_from(pipe, traj.states[2], traj.timesteps[2], num_inference_steps=N,
                                **{k: v for k, v in common.items() if k not in ("num_frames", "height", "width",
                                                                                "num_inference_steps")})
    assert torch.equal(branch, stock)


@pytest.mark.slow
def test_ltx_reproduces_stock_packed_inside():
    """LTX-Video: packed tokens inside the call, its sigma grid with mu from the clip's token count, latent statistics
    from the VAE's buffers."""
    pipe = ltx_pipe()
    pe = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(4))
    ne = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 6)
    embeds = dict(prompt_embeds=pe, prompt_attention_mask=mask, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=mask, guidance_scale=3.0)
    common = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=N, **embeds)
    stock = pipe(generator=gens([0, 1]), output_type="latent", **common).frames  # packed [N, tokens, C]
    traj = hooks.sample_trajectory(pipe, batch_size=2, generator=gens([0, 1]), **common)
    assert traj.final.ndim == 5 and traj.final.shape[1] == 8
    assert torch.equal(pipe._pack_latents(traj.final, 1, 1), stock)
    one = {k: v[:1] if torch.is_tensor(v) else v for k, v in common.items()}  # one clip: LTX's VAE is slow on the CPU
    video = pipe(generator=gens([0]), output_type="pt", **one).frames
    assert torch.allclose(hooks.decode(pipe, traj.final[:1]), video, atol=1e-5)
    branch = hooks.denoise_from(pipe, traj.states[1], traj.timesteps[1], num_inference_steps=N, **embeds)
    assert torch.equal(pipe._pack_latents(branch, 1, 1), stock)
