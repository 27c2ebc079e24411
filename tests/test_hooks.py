"""hooks.py on tiny random pipelines: stock reproduction, img2img equivalence, branching,
noise statistics, batch independence, model-call counts, staircase batching, bad input."""
import copy
import types

import numpy as np
import pytest
import torch
from conftest import count_model_calls, make_tiny_ddpm_pipe, make_tiny_sd_pipe, sd_embeds
from diffusers import (DDIMPipeline, DDIMScheduler, EulerAncestralDiscreteScheduler,
                       StableDiffusionImg2ImgPipeline)

from diffusion_windows.diffusion import hooks
from diffusion_windows.diffusion import schedule as S

NAMES = [n for n in S.SCHEDULERS if n not in S.FLOW_SCHEDULERS]  # flow: tests/test_flow_schedule.py
N = 6  # inference steps in most tests


def gens(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def sd_scheduler(name):
    """A scheduler configured as Stable Diffusion's (scaled_linear betas, steps_offset=1);
    "pndm-prk": PNDM with its Runge-Kutta warm-up."""
    config = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    if name == "ddim":
        config.update(clip_sample=False, set_alpha_to_one=False)
    if name == "pndm":
        config.update(skip_prk_steps=True)
    if name == "ddpm":
        config.update(clip_sample=False)
    return S.make_scheduler(name.replace("-prk", ""), config)


# ----------------------------------------------------------------------------- (1) stock pipelines
def test_reproduces_ddpm_pipeline(tiny_ddpm_pipe):
    ref = tiny_ddpm_pipe(batch_size=2, num_inference_steps=N, generator=gens([1, 2]), output_type="np").images
    g = gens([1, 2])
    x_T = torch.cat([torch.randn(1, 1, 8, 8, generator=gi) for gi in g])
    t0 = S.inference_timesteps(tiny_ddpm_pipe.scheduler, N)[0]
    out = hooks.denoise_from(tiny_ddpm_pipe, x_T, t0, num_inference_steps=N, generator=g, output_type="pt")
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)


def test_reproduces_ddim_pipeline_and_trajectory(tiny_ddpm_pipe):
    pipe = DDIMPipeline(unet=tiny_ddpm_pipe.unet, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(batch_size=2, num_inference_steps=N, generator=gen(3), eta=1.0, output_type="np").images
    g = gen(3)
    x_T = torch.randn(2, 1, 8, 8, generator=g)
    out = hooks.denoise_from(pipe, x_T, 830, num_inference_steps=N, generator=g, eta=1.0, output_type="pt")
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gen(3), eta=1.0)
    np.testing.assert_allclose(hooks.decode(pipe, traj.final).permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)
    np.testing.assert_array_equal(traj.timesteps, S.inference_timesteps(pipe.scheduler, N))
    assert len(traj.states) == N and torch.equal(traj.states[0], x_T)


@pytest.mark.parametrize("name", ["ddim", "euler-ancestral", "heun", "euler", "ddpm", "dpm++", "unipc", "pndm",
                                  "pndm-prk"])
def test_reproduces_stable_diffusion_pipeline(name):
    """Stock: the hooks' own loop over every scheduler (and PNDM's rebuilt schedule) is the pipeline's."""
    pipe = make_tiny_sd_pipe(sd_scheduler(name))
    pe, ne = sd_embeds()
    ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=N, guidance_scale=5.0,
               generator=gens([4, 5]), num_images_per_prompt=2, output_type="latent").images
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([4, 5]),
                                   prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=5.0)
    torch.testing.assert_close(traj.final, ref, atol=1e-5, rtol=1e-5)
    # the same from the noise the pipeline draws (times init_noise_sigma), via denoise_from
    g = gens([4, 5])
    x_T = torch.cat([torch.randn(1, 4, 8, 8, generator=gi) for gi in g])
    x_T = x_T * S.make_scheduler(name.replace("-prk", ""), pipe.scheduler).init_noise_sigma
    out = hooks.denoise_from(pipe, x_T, traj.timesteps[0], num_inference_steps=N, generator=g,
                             prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=5.0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (2) img2img
@pytest.mark.parametrize("name, strength", [("ddim", 0.6), ("euler-ancestral", 0.5)])
def test_restart_equals_img2img(name, strength):
    pipe = make_tiny_sd_pipe(sd_scheduler(name))
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    pe, ne = sd_embeds()
    x0 = torch.randn(1, 4, 8, 8, generator=gen(6))  # 4 channels: img2img takes them as latents
    ref = img2img(image=x0, strength=strength, prompt_embeds=pe, negative_prompt_embeds=ne,
                  num_inference_steps=N, guidance_scale=4.0, generator=gen(7), output_type="latent").images
    grid = S.inference_timesteps(pipe.scheduler, N)
    t_start = grid[N - int(N * strength)]  # StableDiffusionImg2ImgPipeline.get_timesteps
    g = gen(7)
    noise = torch.randn(1, 4, 8, 8, generator=g)
    x_t = hooks.noise_to(pipe.scheduler, x0, t_start, noise=noise)
    out = hooks.denoise_from(pipe, x_t, t_start, num_inference_steps=N, generator=g,
                             prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=4.0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- (3) branching
def test_branching_deterministic_ddim_reproduces_its_end():
    pipe = make_tiny_sd_pipe()  # DDIM, eta = 0
    pe, ne = sd_embeds(2)
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([8, 9]),
                                   prompt_embeds=pe, negative_prompt_embeds=ne)
    for i in (1, N - 1):
        out = hooks.denoise_from(pipe, traj.states[i], traj.timesteps[i], num_inference_steps=N,
                                 prompt_embeds=pe, negative_prompt_embeds=ne)
        torch.testing.assert_close(out, traj.final, atol=1e-6, rtol=1e-6)
    images = hooks.denoise_from(pipe, traj.states[2], traj.timesteps[2], num_inference_steps=N,
                                prompt_embeds=pe, negative_prompt_embeds=ne, output_type="pt")
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, hooks.decode(pipe, traj.final))


# ----------------------------------------------------------------------------- (4) noise_to
@pytest.mark.parametrize("name", NAMES)
def test_noise_to_statistics(name):
    s = S.make_scheduler(name)
    t = 600
    x0 = torch.full((2000, 1, 4, 4), 0.7)
    x = hooks.noise_to(s, x0, t, generator=gen(10)).double()
    a = float(S.alpha_bar(s, t))
    if name in ("euler", "euler-ancestral", "heun"):  # VE scale: x0 + sigma noise
        mean, var = 0.7, (1 - a) / a
    else:
        mean, var = 0.7 * a ** 0.5, 1 - a
    se = (var / x.numel()) ** 0.5
    assert abs(x.mean().item() - mean) < 5 * se
    assert abs(x.var().item() / var - 1) < 0.05


def test_noise_to_per_sample_timesteps_and_generators():
    s = S.make_scheduler("ddpm")
    x0 = torch.randn(3, 1, 8, 8, generator=gen(11))
    t = torch.tensor([10, 500, 999])
    batch = hooks.noise_to(s, x0, t, generator=gens([1, 2, 3]))
    for i in range(3):
        one = hooks.noise_to(s, x0[i:i + 1], int(t[i]), generator=gens([i + 1]))
        torch.testing.assert_close(batch[i:i + 1], one)
    euler = S.make_scheduler("euler")
    t_frac = S.inference_timesteps(euler, 7)[2]
    noise = torch.randn_like(x0)
    out = hooks.noise_to(euler, x0, t_frac, noise=noise)
    torch.testing.assert_close(out, x0 + float(S.sigma(euler, t_frac)) * noise)


# ----------------------------------------------------------------------------- (5) batch independence
@pytest.mark.parametrize("name", ["ddpm", "euler-ancestral"])
def test_batch_size_independence(name):
    pipe = make_tiny_ddpm_pipe(S.make_scheduler(name))
    x = torch.randn(4, 1, 8, 8, generator=gen(12))
    t = S.inference_timesteps(pipe.scheduler, N)[1]
    batch = hooks.denoise_from(pipe, x, t, num_inference_steps=N, generator=gens(range(4)))
    for i in (0, 3):
        one = hooks.denoise_from(pipe, x[i:i + 1], t, num_inference_steps=N, generator=gens([i]))
        torch.testing.assert_close(batch[i:i + 1], one, atol=1e-4, rtol=1e-4)  # float noise
    other = hooks.denoise_from(pipe, x, t, num_inference_steps=N, generator=gens(range(10, 14)))
    assert (other - batch).abs().max() > 1e-2  # the generators matter: the sampler is stochastic


# ----------------------------------------------------------------------------- (6) model calls
@pytest.mark.parametrize("name", NAMES)
def test_runs_without_touching_the_pipeline_scheduler(name):
    pipe = make_tiny_ddpm_pipe(S.make_scheduler(name))
    before = copy.deepcopy(pipe.scheduler.__dict__)
    calls = count_model_calls(pipe)
    grid = S.inference_timesteps(pipe.scheduler, N)
    x = hooks.noise_to(pipe.scheduler, torch.zeros(2, 1, 8, 8), grid[2], generator=gens([1, 2]))
    out = hooks.denoise_from(pipe, x, grid[2], num_inference_steps=N, generator=gens([3, 4]))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    k = N - 2  # grid steps at or below grid[2]
    expected = {"heun": 2 * k - 1, "pndm": k + 9}.get(name, k)  # PNDM: Runge-Kutta warm-up
    assert calls[0] == expected
    assert repr(pipe.scheduler.__dict__) == repr(before)
    again = hooks.denoise_from(pipe, x, grid[2], num_inference_steps=N, generator=gens([3, 4]))
    torch.testing.assert_close(again, out, atol=0, rtol=0)  # no state leaks between restarts


def test_model_calls_heun_and_pndm_plms():
    for name, per in [("heun", lambda k: 2 * k - 1), ("pndm", lambda k: k + 1 if k > 1 else 1)]:
        pipe = make_tiny_sd_pipe(sd_scheduler(name))
        pe, ne = sd_embeds()
        calls = count_model_calls(pipe)
        grid = S.inference_timesteps(pipe.scheduler, N)
        for i in (0, 3, N - 1):
            calls[0] = 0
            hooks.denoise_from(pipe, torch.zeros(1, 4, 8, 8), grid[i], num_inference_steps=N,
                               prompt_embeds=pe, negative_prompt_embeds=ne)
            assert calls[0] == per(N - i), (name, i)  # guidance batched: one call per evaluation


# ----------------------------------------------------------------------------- staircase
def _staircase_groups(grid, extra):
    groups = []
    for k, t in enumerate([grid[0], grid[3], extra, grid[-1], grid[3]]):
        x = 2 * torch.randn(2, 1, 8, 8, generator=gen(20 + k))
        groups.append((x, t, gens([100 * k, 100 * k + 1])))
    return groups


@pytest.mark.parametrize("name", NAMES)
def test_staircase_equals_separate_restarts(name):
    pipe = make_tiny_ddpm_pipe(S.make_scheduler(name))
    grid = S.inference_timesteps(pipe.scheduler, N)
    groups = _staircase_groups(grid, 505)  # 505: off the grid
    outs = hooks.denoise_staircase(pipe, groups, num_inference_steps=N, max_batch=3)
    for (x, t, g), out in zip(groups, outs):
        ref = hooks.denoise_from(pipe, x, t, num_inference_steps=N,
                                 generator=gens([gi.initial_seed() for gi in g]))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_staircase_model_calls():
    pipe = make_tiny_ddpm_pipe(S.make_scheduler("ddpm"))
    grid = S.inference_timesteps(pipe.scheduler, N)
    calls = count_model_calls(pipe)
    groups = [(torch.zeros(2, 1, 8, 8), t, gens([1, 2])) for t in (grid[0], grid[3], grid[5])]
    hooks.denoise_staircase(pipe, groups, num_inference_steps=N)
    assert calls[0] == N  # one loop: every step one batched call
    calls[0] = 0
    hooks.denoise_staircase(pipe, groups + [(torch.zeros(1, 1, 8, 8), 505, gens([3]))], num_inference_steps=N)
    assert calls[0] == N + 1  # the off-grid custom start takes its own first step
    calls[0] = 0
    hooks.denoise_staircase(pipe, groups, num_inference_steps=N, max_batch=2)
    assert calls[0] == N + 3 + 1  # fixed chunks of 2, ordered by start
    ddim = make_tiny_ddpm_pipe(sd_scheduler("ddim"))  # grid ends at 1: timestep 0 runs no step
    calls = count_model_calls(ddim)
    x = torch.randn(2, 1, 8, 8, generator=gen(60))
    out = hooks.denoise_staircase(ddim, [(x, 0, None), (x, 1, None)], num_inference_steps=N)
    assert calls[0] == 1 and torch.equal(out[0], x) and not torch.equal(out[1], x)
    pndm = make_tiny_ddpm_pipe(S.make_scheduler("pndm", {"skip_prk_steps": True}))
    calls = count_model_calls(pndm)
    hooks.denoise_staircase(pndm, groups, num_inference_steps=N)
    assert calls[0] == (N + 1) + (N - 3 + 1) + 1  # one loop per distinct start


def test_staircase_text_conditioning_per_sample():
    pipe = make_tiny_sd_pipe(sd_scheduler("euler-ancestral"))
    pe, ne = sd_embeds(5)
    grid = S.inference_timesteps(pipe.scheduler, N)
    sizes, starts = [2, 3], [grid[4], grid[1]]
    groups = [(torch.randn(n, 4, 8, 8, generator=gen(30 + n)), t, gens(range(10 * n, 11 * n)))
              for n, t in zip(sizes, starts)]
    calls = count_model_calls(pipe)
    outs = hooks.denoise_staircase(pipe, groups, num_inference_steps=N, prompt_embeds=pe,
                                   negative_prompt_embeds=ne, guidance_scale=3.0)
    assert calls[0] == N - 1
    rows = [slice(0, 2), slice(2, 5)]
    for (x, t, _), n, r, out in zip(groups, sizes, rows, outs):
        ref = hooks.denoise_from(pipe, x, t, num_inference_steps=N, generator=gens(range(10 * n, 11 * n)),
                                 prompt_embeds=pe[r], negative_prompt_embeds=ne[r], guidance_scale=3.0)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- encode / decode
def test_encode_decode(tiny_ddpm_pipe, tiny_sd_pipe):
    images = torch.rand(2, 1, 8, 8, generator=gen(40))
    x = hooks.encode(tiny_ddpm_pipe, images)
    torch.testing.assert_close(x, images * 2 - 1)
    torch.testing.assert_close(hooks.decode(tiny_ddpm_pipe, x), images)
    rgb = torch.rand(2, 3, 8, 8, generator=gen(41))
    z = hooks.encode(tiny_sd_pipe, rgb)
    vae = tiny_sd_pipe.vae
    with torch.no_grad():
        mode = vae.encode(rgb * 2 - 1).latent_dist.mode()
        torch.testing.assert_close(z, mode * vae.config.scaling_factor)
        ref = (vae.decode(mode).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(hooks.decode(tiny_sd_pipe, z), ref)


# ----------------------------------------------------------------------------- (7) bad input
@pytest.mark.parametrize("timestep, match", [(-1, "-1"), (1000, "1000"), (2.5, "2.5"), ("abc", "abc")])
def test_bad_timestep(tiny_ddpm_pipe, timestep, match):
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        hooks.denoise_from(tiny_ddpm_pipe, x, timestep, num_inference_steps=N)
    with pytest.raises(ValueError, match=match):
        hooks.noise_to(tiny_ddpm_pipe.scheduler, x, timestep)


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 1, 16, 16), (1, 8, 8)])
def test_bad_shape(tiny_ddpm_pipe, shape):
    with pytest.raises(ValueError, match=r"shape \(" + ", ".join(map(str, shape))):
        hooks.denoise_from(tiny_ddpm_pipe, torch.zeros(shape), 500, num_inference_steps=N)


def test_bad_pipelines_and_conditioning(tiny_ddpm_pipe, tiny_sd_pipe):
    pe, ne = sd_embeds()
    z = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="prompt or prompt_embeds"):
        hooks.denoise_from(tiny_sd_pipe, z, 501, num_inference_steps=N)
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        hooks.denoise_from(tiny_sd_pipe, z, 501, num_inference_steps=N, prompt_embeds=pe)
    with pytest.raises(ValueError, match="'a cat'"):
        hooks.denoise_from(tiny_sd_pipe, z, 501, num_inference_steps=N, prompt="a cat")
    with pytest.raises(ValueError, match="prompt='a cat'"):
        hooks.denoise_from(tiny_ddpm_pipe, torch.zeros(1, 1, 8, 8), 500, prompt="a cat")
    with pytest.raises(ValueError, match="unet"):
        hooks.denoise_from(types.SimpleNamespace(unet=None, scheduler=tiny_ddpm_pipe.scheduler), z, 500)
    with pytest.raises(ValueError, match="scheduler"):
        hooks.sample_trajectory(types.SimpleNamespace(unet=tiny_ddpm_pipe.unet, scheduler=None))
    with pytest.raises(ValueError, match="length 3"):
        hooks.denoise_from(tiny_ddpm_pipe, torch.zeros(2, 1, 8, 8), 500, generator=gens([1, 2, 3]))
    with pytest.raises(ValueError, match="output_type 'np'"):
        hooks.denoise_from(tiny_ddpm_pipe, torch.zeros(1, 1, 8, 8), 500, output_type="np")


# ----------------------------------------------------------------------------- text encoders, SDXL
def _tiny_tokenizer_and_encoder(tmp_path):
    """A CLIP tokenizer over a few words and letters, written here, and a random CLIPTextModel."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in ["a</w>", "cat</w>"] + [c + e for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>")]:
        vocab.setdefault(piece, len(vocab))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                           pad_token_id=1)).eval()
    return tokenizer, encoder


def test_prompt_strings_through_the_text_encoder(tmp_path):
    from diffusers import StableDiffusionPipeline

    tokenizer, encoder = _tiny_tokenizer_and_encoder(tmp_path)
    bare = make_tiny_sd_pipe()
    pipe = StableDiffusionPipeline(**{**bare.components, "tokenizer": tokenizer, "text_encoder": encoder})
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=["a cat", "a dog"], num_inference_steps=N, generator=gens([1, 2]),
               output_type="latent").images
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]),
                                   prompt=["a cat", "a dog"])
    torch.testing.assert_close(traj.final, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prompt_embeds batch 3"):
        hooks.denoise_from(pipe, traj.states[1], traj.timesteps[1], num_inference_steps=N,
                           prompt=["a", "b", "c"])


def test_reproduces_sdxl_pipeline():
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    _, vae = __import__("conftest").make_tiny_sd_components()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, attention_head_dim=2, cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 * 4 + 8).eval()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=sd_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    g = gen(50)
    cond = dict(prompt_embeds=torch.randn(1, 4, 16, generator=g),
                negative_prompt_embeds=torch.randn(1, 4, 16, generator=g),
                pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                negative_pooled_prompt_embeds=torch.randn(1, 8, generator=g))
    ref = pipe(**cond, num_inference_steps=N, generator=gen(51), output_type="latent").images
    traj = hooks.sample_trajectory(pipe, num_inference_steps=N, generator=gen(51), **cond)
    torch.testing.assert_close(traj.final, ref, atol=1e-5, rtol=1e-5)
    out = hooks.denoise_from(pipe, traj.states[2], traj.timesteps[2], num_inference_steps=N, **cond)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)  # Euler (s_churn = 0): deterministic


def test_euler_on_a_ddpm_pipeline_runs_the_scaled_loop():
    """DDPMPipeline never calls scale_model_input; the hooks do: the model sees VP-scale input."""
    pipe = make_tiny_ddpm_pipe(S.make_scheduler("euler"))
    inputs = []
    forward = pipe.unet.forward
    pipe.unet.forward = lambda x, t, *a, **k: (inputs.append(x), forward(x, t, *a, **k))[1]
    traj = hooks.sample_trajectory(pipe, batch_size=2, num_inference_steps=N, generator=gens([1, 2]))
    assert traj.states[0].std() > 10  # pure noise at VE scale, times init_noise_sigma
    for i, t in enumerate(traj.timesteps):
        torch.testing.assert_close(inputs[i], traj.states[i] * float(np.sqrt(S.alpha_bar(pipe.scheduler, t))),
                                   atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- counts and custom sigmas
@pytest.mark.parametrize("name", NAMES + ["pndm-prk"])
def test_evaluations_counted_in_the_loop_equal_model_rows_and_the_cost_model(name):
    """What a unit records as its model evaluations is what the model was called with (CFG: two rows
    per sample), and the cost model of the adaptive search (one call per restart-plan entry:
    Heun's second stages, PNDM's warm-up, an off-grid start's own step) agrees with it."""
    from diffusion_windows.diffusion.backend import staircase_nfe

    pipe = make_tiny_sd_pipe(sd_scheduler(name))
    pe, ne = sd_embeds()
    rows = [0]
    forward = pipe.unet.forward

    def counted(x, *a, **k):
        rows[0] += x.shape[0]
        return forward(x, *a, **k)

    pipe.unet.forward = counted
    grid = S.inference_timesteps(pipe.scheduler, N)
    starts = [grid[0], grid[3], 505, grid[-1]]
    groups = [(torch.randn(2, 4, 8, 8, generator=gen(k)), t, gens([2 * k, 2 * k + 1])) for k, t in enumerate(starts)]
    _, evals = hooks.denoise_staircase(pipe, groups, num_inference_steps=N, max_batch=3, prompt_embeds=pe,
                                       negative_prompt_embeds=ne, guidance_scale=3.0, return_evaluations=True)
    assert sum(int(e.sum()) for e in evals) == rows[0]
    for t, e in zip(starts, evals):
        assert e.tolist() == [staircase_nfe(grid, [t], 1, pipe.scheduler, N, rows=2)] * 2, (name, t)
    if name == "pndm-prk":  # Runge-Kutta warm-up: 4 grid steps cost 4 + 9 calls
        assert staircase_nfe(grid, [grid[-4]], 1, pipe.scheduler, N) == 13


@pytest.mark.parametrize("name", ["dpm++", "euler"])
def test_noise_to_uses_the_schedulers_own_karras_sigmas_on_its_grid(name):
    s = S.make_scheduler(name, {"use_karras_sigmas": True})
    stock = copy.deepcopy(s)
    stock.set_timesteps(N)
    x0, noise = torch.randn(1, 1, 4, 4, generator=gen(1)), torch.randn(1, 1, 4, 4, generator=gen(2))
    table_off = []
    for t in stock.timesteps:
        ours = hooks.noise_to(s, x0, t, noise=noise, num_inference_steps=N)
        torch.testing.assert_close(ours, stock.add_noise(x0, noise, t.reshape(1)), atol=1e-5, rtol=1e-5)
        table = hooks.noise_to(s, x0, t, noise=noise)
        table_off.append(float((table - ours).abs().max()))
    if name == "dpm++":  # its grid timesteps are rounded to integers, where the table is off the Karras sigma
        assert max(table_off) > 1e-3
