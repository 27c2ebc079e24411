"""GPU benchmark: the measurement at Stable Diffusion scale, against the bare denoiser's peak throughput.

Builds an SD-1.5-shaped pipeline in code (random weights: `UNet2DConditionModel` with SD 1.5's
config, 860 M parameters; SD's `AutoencoderKL`, 84 M; prompt embeddings of CLIP's shape, no text
encoder) and a random open_clip ViT-B-32 zero-shot classifier, and runs the sweep's measurement
through the engine (`DiffusionBackend`, fp16, classifier-free guidance 7.5, 50 DDPM steps, 8 base
samples x 8 restarts x 10 timesteps by default). In the same process it times the bare UNet in a
tight loop at the run's largest batch. Prints one JSON object as its last line:

- ``denoiser_samples_per_s``: denoiser rows evaluated / wall time of the whole measurement
  (base samples, restarts, decode, classification), ``bare_samples_per_s``: the bare UNet at the
  largest batch the run used, ``ratio`` = their quotient (target >= 0.9);
- ``peak_memory_gb`` (``torch.cuda.max_memory_allocated``; target <= 10 GB at ``--batch-size 16``);
- ``shares``: fractions of the measurement's wall time in the denoiser, the VAE decode, the
  classifier, and the rest (scheduler steps, noise, bookkeeping).

    python benchmarks/bench_gpu.py --device cuda --dtype float16 --batch-size 16
    python benchmarks/bench_gpu.py --tiny          # tiny components on the CPU (CI)

Ratios are what to compare: absolute times drift.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


class Timer:
    """Wall time spent inside ``obj.method`` (synchronising CUDA so that kernels are counted), and rows seen."""

    def __init__(self, obj, method, sync):
        self.seconds, self.rows, self.largest, self.sync = 0.0, 0, 0, sync
        inner = getattr(obj, method)

        def timed(x, *a, **k):
            self.sync()
            t = time.perf_counter()
            try:
                return inner(x, *a, **k)
            finally:
                self.sync()
                self.seconds += time.perf_counter() - t
                n = x.shape[0] if hasattr(x, "shape") else len(x)
                self.rows += n
                self.largest = max(self.largest, n)

        setattr(obj, method, timed)


def sd15_components(tiny: bool):
    """UNet, VAE and prompt-embedding width of Stable Diffusion 1.5's shape (tiny: a few thousand parameters)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    if tiny:
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4, block_out_channels=(8,),
                            down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8)
        return unet, vae, 16
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512, scaling_factor=0.18215)
    return unet, vae, 768


def build(args):
    """The pipeline, the classifier and the conditioning (prompt embeddings with a negative, CFG 7.5)."""
    import open_clip
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from diffusion_windows.classifiers import clip_zero_shot

    unet, vae, width = sd15_components(args.tiny)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)
    dtype = getattr(torch, args.dtype)
    pipe.to(args.device, dtype)
    if args.device.startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    if args.tiny:
        cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 32, "head_width": 16,
                                               "layers": 1},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
        if "dw-bench-tiny-clip" not in open_clip.list_models():
            import pathlib
            import tempfile

            path = pathlib.Path(tempfile.mkdtemp()) / "dw-bench-tiny-clip.json"
            path.write_text(json.dumps(cfg))
            open_clip.add_model_config(path)
        clip_name = "dw-bench-tiny-clip"
    else:
        clip_name = "ViT-B-32"
    classifier = clip_zero_shot(["a cat", "a dog", "a car"], model=clip_name, pretrained=None, device=args.device)
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 77 if not args.tiny else 4, width, generator=g)
    neg = torch.randn(1, 77 if not args.tiny else 4, width, generator=g)
    cond = dict(prompt_embeds=pos.to(args.device, dtype), negative_prompt_embeds=neg.to(args.device, dtype),
                guidance_scale=7.5)
    return pipe, classifier, cond


def bare_throughput(unet, forward, batch: int, cond, sync, repeats: int) -> float:
    """Rows per second of the bare UNet (``forward``, untimed) on ``batch`` samples with guidance's
    doubled rows, in a tight loop."""
    inner = forward
    p = next(unet.parameters())
    x = torch.randn(2 * batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                    device=p.device, dtype=p.dtype)
    enc = torch.cat([cond["negative_prompt_embeds"], cond["prompt_embeds"]]).repeat_interleave(batch, 0)
    t = torch.tensor(500, device=p.device)
    with torch.inference_mode():
        inner(x, t, encoder_hidden_states=enc)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            inner(x, t, encoder_hidden_states=enc)
        sync()
    return repeats * x.shape[0] / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny components on the CPU (for CI)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default: float16 on cuda, float32 on cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=10, help="evenly spaced restart timesteps")
    p.add_argument("--steps", type=int, default=50, help="DDPM inference steps")
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("float16" if a.device.startswith("cuda") else "float32")
    if a.tiny:
        a.samples, a.restarts, a.timesteps, a.steps = 2, 2, 4, 10
    cuda = a.device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(a.device)) if cuda else (lambda: None)

    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.features import labels_feature

    pipe, classifier, cond = build(a)
    bare_forward = pipe.unet.forward
    timers = {"denoiser": Timer(pipe.unet, "forward", sync), "vae_decode": Timer(pipe.vae, "decode", sync)}
    clf_timer = Timer(classifier, "logits", sync)
    backend = DiffusionBackend(pipe, classifier, (labels_feature(classifier.labels),), a.steps, conditioning=cond)
    spacing = 1000 // a.timesteps
    settings = Settings(samples=a.samples, restarts=a.restarts, timesteps=list(range(0, 1000, spacing)),
                        batch_size=a.batch_size)
    if cuda:
        torch.cuda.reset_peak_memory_stats(a.device)
    sync()
    start = time.perf_counter()
    engine = Engine(backend, settings, MemoryStore(), quiet=True).run()
    sync()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(a.device) / 2 ** 30 if cuda else None
    den = timers["denoiser"]
    achieved = den.rows / wall
    bare = bare_throughput(pipe.unet, bare_forward, den.largest // 2, cond, sync, repeats=3 if a.tiny else 10)
    shares = {"denoiser": den.seconds / wall, "vae_decode": timers["vae_decode"].seconds / wall,
              "classifier": clf_timer.seconds / wall}
    shares["rest"] = max(0.0, 1.0 - sum(shares.values()))
    result = {
        "family": "sd15-shaped", "tiny": a.tiny, "device": a.device, "dtype": a.dtype,
        "gpu": torch.cuda.get_device_name(a.device) if cuda else None,
        "unet_params_m": round(sum(q.numel() for q in pipe.unet.parameters()) / 1e6, 1),
        "vae_params_m": round(sum(q.numel() for q in pipe.vae.parameters()) / 1e6, 1),
        "samples": a.samples, "restarts": a.restarts, "timesteps": len(settings.timesteps), "steps": a.steps,
        "batch_size": a.batch_size, "largest_model_batch": den.largest, "nfe": engine.nfe(),
        "denoiser_rows": den.rows, "wall_s": round(wall, 3),
        "denoiser_samples_per_s": round(achieved, 1), "bare_samples_per_s": round(bare, 1),
        "ratio": round(achieved / bare, 3), "peak_memory_gb": None if peak is None else round(peak, 2),
        "shares": {k: round(v, 3) for k, v in shares.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
