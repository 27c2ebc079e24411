"""Shared fixtures: tiny random diffusers pipelines built in code (offline, CPU, milliseconds)."""
import signal
import subprocess
import sys
import time

import pytest
import torch


def make_tiny_unet(sample_size=8, channels=1):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                       layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def make_tiny_ddpm_pipe(scheduler=None):
    """DDPMPipeline with a random 8x8x1 UNet2DModel (1000 training timesteps)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    return DDPMPipeline(unet=make_tiny_unet(), scheduler=scheduler or DDPMScheduler())


def make_tiny_sd_components(cross_attention_dim=16):
    """Random UNet2DConditionModel (4x8x8 latents) and AutoencoderKL (8x8x3 images, factor 1)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), sample_size=8).eval()
    return unet, vae


def make_tiny_sd_pipe(scheduler=None, cls=None):
    """A Stable Diffusion pipeline (class ``cls``) without text encoder or tokenizer: pass
    ``prompt_embeds`` [B, 4, 16] (and ``negative_prompt_embeds`` for guidance)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    cls = cls or StableDiffusionPipeline
    unet, vae = make_tiny_sd_components()
    scheduler = scheduler or DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                           beta_end=0.012, clip_sample=False,
                                           set_alpha_to_one=False, steps_offset=1)
    pipe = cls(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, image_encoder=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_embeds(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 16, generator=g), torch.randn(batch, 4, 16, generator=g)


def count_model_calls(pipe):
    """Wrap ``pipe.unet.forward`` so that ``calls[0]`` counts model calls."""
    calls = [0]
    forward = pipe.unet.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    pipe.unet.forward = counted
    return calls


@pytest.fixture
def tiny_ddpm_pipe():
    pipe = make_tiny_ddpm_pipe()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_sd_pipe():
    return make_tiny_sd_pipe()


def sweep_cli(args, out, timeout=600):
    """``python -m diffusion_windows.sweep ARGS --out OUT`` in a subprocess -> its CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "diffusion_windows.sweep", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout)


def kill_sweep_after(args, out, lines: int, timeout: float = 300) -> int:
    """Start the sweep CLI into ``out``, SIGKILL it once ``results.jsonl`` holds ``lines`` lines (or after
    ``timeout`` seconds) -> the lines it had written (a run killed mid-way, to resume)."""
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_windows.sweep", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= lines:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(results.read_text().splitlines()) if results.exists() else 0
