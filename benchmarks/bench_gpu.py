"""GPU benchmark: the measurement at Stable Diffusion scale, against the bare denoiser's peak throughput.

Builds a pipeline of a real model's shape in code, with random weights and random prompt
embeddings of its text encoders' shapes (no text encoder), and a random open_clip ViT-B-32
zero-shot classifier, and runs the sweep's measurement through the engine (`DiffusionBackend`,
fp16, 8 base samples x 8 restarts x 10 timesteps by default):

- ``--family sd15`` (default): `UNet2DConditionModel` with SD 1.5's config (860 M parameters),
  SD's `AutoencoderKL` (84 M), classifier-free guidance 7.5, 50 DDPM steps;
- ``--family sd3``: `SD3Transformer2DModel` with SD3-medium's config (2 B), a 16-channel VAE,
  guidance 7.0, 28 steps of the stochastic flow sampler (``flow-ancestral``);
- ``--family flux``: `FluxTransformer2DModel` with Flux.1-dev's config (12 B; 24 GB of weights in
  fp16), the guidance embedding instead of guidance batches, 28 flow-ancestral steps;
- ``--family wan``: `WanTransformer3DModel` with Wan 2.1-T2V-1.3B's config, its `AutoencoderKLWan`
  (decoding one clip at a time: ``enable_slicing``), UMT5-shaped prompt embeddings (512 x 4096),
  guidance 5.0 (two calls per step, as Wan makes them), 480 x 832, 33 frames, 50 flow-ancestral
  steps on UniPC's ``flow_shift=3`` grid; the classifier is CLIP on every frame, averaged.
- ``--family qwen-image``: `QwenImageTransformer2DModel` with Qwen-Image's config (60 layers, 24
  heads of 128, 20 B; 41 GB of weights in bfloat16, built directly on the device in that dtype),
  its frame VAE (`AutoencoderKLQwenImage`), true CFG 4.0 with a negative prompt (two model calls
  per step, rescaled to the positive's norm), 1024 px, 28 flow-ancestral steps; bfloat16 by default.

In the same process it times the bare denoiser (the same adapter call, in a tight loop) at the
run's largest batch. Prints one JSON object as its last line:

- ``denoiser_samples_per_s``: denoiser rows evaluated / wall time of the whole measurement
  (base samples, restarts, decode, classification), ``bare_samples_per_s``: the bare UNet at the
  largest batch the run used, ``ratio`` = their quotient (target >= 0.9);
- ``peak_memory_gb`` (``torch.cuda.max_memory_allocated``; target <= 10 GB at ``--batch-size 16``);
- ``shares``: fractions of the measurement's wall time in the denoiser, the VAE decode, the
  classifier, and the rest (scheduler steps, noise, bookkeeping).

    python benchmarks/bench_gpu.py --device cuda --dtype float16 --batch-size 16
    python benchmarks/bench_gpu.py --family sd3 --device cuda --dtype float16 --batch-size 16
    python benchmarks/bench_gpu.py --tiny          # tiny components on the CPU (CI)
    python benchmarks/bench_gpu.py --tiny --family flux
    python benchmarks/bench_gpu.py --family wan --device cuda --dtype bfloat16 --batch-size 2 --samples 2
    python benchmarks/bench_gpu.py --tiny --family wan
    python benchmarks/bench_gpu.py --family qwen-image --device cuda --batch-size 4
    python benchmarks/bench_gpu.py --tiny --family qwen-image

Ratios are what to compare: absolute times drift.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


class Timer:
    """Wall time spent inside ``obj.method`` (synchronising CUDA so that kernels are counted), and rows seen."""

    def __init__(self, obj, method, sync):
        self.sync = sync
        self.reset()
        inner = getattr(obj, method)

        def timed(*a, **k):
            self.sync()
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.sync()
                self.seconds += time.perf_counter() - t
                x = a[0] if a else next((v for v in k.values() if torch.is_tensor(v)), None)
                n = x.shape[0] if hasattr(x, "shape") else len(x)
                self.rows += n
                self.largest = max(self.largest, n)

        setattr(obj, method, timed)

    def reset(self):
        self.seconds, self.rows, self.largest = 0.0, 0, 0


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


def transformer_components(family: str, tiny: bool):
    """Transformer, VAE and the shapes of its prompt embeddings (SD3-medium's or Flux.1-dev's; tiny: a few
    thousand parameters)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(0)
    if tiny:
        vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                            latent_channels=1 if family == "flux" else 4, norm_num_groups=1, use_quant_conv=False,
                            use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
        if family == "sd3":
            model = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=1,
                                          attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                          joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
            return model, vae, {"prompt": (6, 32), "pooled": (64,)}, 8
        model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                       pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
        return model, vae, {"prompt": (6, 32), "pooled": (32,)}, 8
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609 if family == "sd3" else 0.1159,
                        scaling_factor=1.5305 if family == "sd3" else 0.3611)
    if family == "sd3":
        model = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                      attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                      caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                      pos_embed_max_size=192)
        return model, vae, {"prompt": (333, 4096), "pooled": (2048,)}, 1024
    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                   attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                   pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])
    return model, vae, {"prompt": (512, 4096), "pooled": (768,)}, 1024


def wan_components(tiny: bool):
    """Wan 2.1-T2V-1.3B's transformer and VAE (tiny: diffusers' test shapes), prompt shape, ``(height, width,
    frames)``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(0)
    if tiny:
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                      in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                      num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                      rope_max_seq_len=32)
        return model, vae, (8, 32), (16, 16, 9)
    vae = AutoencoderKLWan()  # its defaults are Wan 2.1's VAE (base 96, z 16, dims 1, 2, 4, 4)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                                  in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                                  num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                  rope_max_seq_len=1024)
    return model, vae, (512, 4096), (480, 832, 33)


def qwen_components(tiny: bool, device, dtype):
    """Qwen-Image's transformer and frame VAE and its prompt-embedding shape (tiny: a few thousand
    parameters). The full transformer is created on ``device`` in ``dtype`` (41 GB in bfloat16: no
    float32 copy first)."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    torch.manual_seed(0)
    if tiny:
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                            axes_dims_rope=(8, 4, 4))
        vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
        return model, vae, (6, 16), 32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = QwenImageTransformer2DModel()  # its defaults are Qwen-Image's config
    finally:
        torch.set_default_dtype(default)
    return model, AutoencoderKLQwenImage(), (128, 3584), 1024


def build(args):
    """``(pipe, classifier, conditioning, denoising module, image size or None)`` of ``args.family``."""
    import open_clip
    from diffusers import (DDPMScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline,
                           StableDiffusionPipeline)

    from diffusion_windows.classifiers import clip_zero_shot
    from diffusion_windows.diffusion.schedule import make_scheduler

    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    frames = None
    if args.family == "wan":
        from diffusers import UniPCMultistepScheduler, WanPipeline

        model, vae, shape, (height, width, frames) = wan_components(args.tiny)
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            num_train_timesteps=1000, flow_shift=3.0)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=model, vae=vae, scheduler=scheduler)
        pipe.vae.enable_slicing()  # one clip at a time: a batch of 480p clips would not fit
        pe, ne = (torch.randn(1, *shape, generator=g) for _ in range(2))
        cond = dict(prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=5.0)
        size = (height, width)
        pipe.scheduler = make_scheduler("flow-ancestral", pipe.scheduler)
    elif args.family == "sd15":
        unet, vae, width = sd15_components(args.tiny)
        scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  clip_sample=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
        length = 77 if not args.tiny else 4
        pos, neg = (torch.randn(1, length, width, generator=g) for _ in range(2))
        cond = dict(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=7.5)
        size = None
    elif args.family == "qwen-image":
        from diffusers import QwenImagePipeline

        model, vae, shape, size = qwen_components(args.tiny, args.device, dtype)
        # Qwen-Image's scheduler settings: dynamic shift up to 0.9 at 8192 tokens, stretched to end at 0.02
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                    base_image_seq_len=256, max_image_seq_len=8192,
                                                    shift_terminal=0.02)
        pipe = QwenImagePipeline(transformer=model, vae=vae, scheduler=scheduler, text_encoder=None, tokenizer=None)
        pe, ne = (torch.randn(1, *shape, generator=g) for _ in range(2))
        cond = dict(prompt_embeds=pe, negative_prompt_embeds=ne, true_cfg_scale=4.0)
        pipe.scheduler = make_scheduler("flow-ancestral", pipe.scheduler)
    else:
        model, vae, shapes, size = transformer_components(args.family, args.tiny)
        size = (size, size)
        text = {f"{part}{i}": None for part in ("text_encoder", "tokenizer") for i in ("", "_2", "_3")}
        if args.family == "sd3":
            pipe = StableDiffusion3Pipeline(transformer=model, vae=vae,
                                            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **text)
            pe, pooled, ne, npooled = (torch.randn(1, *shapes[k], generator=g)
                                       for k in ("prompt", "pooled", "prompt", "pooled"))
            cond = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, negative_prompt_embeds=ne,
                        negative_pooled_prompt_embeds=npooled, guidance_scale=7.0)
        else:
            scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                        base_image_seq_len=256, max_image_seq_len=4096)
            pipe = FluxPipeline(transformer=model, vae=vae, scheduler=scheduler,
                                **{k: v for k, v in text.items() if not k.endswith("_3")})
            pe, pooled = (torch.randn(1, *shapes[k], generator=g) for k in ("prompt", "pooled"))
            cond = dict(prompt_embeds=pe, pooled_prompt_embeds=pooled, guidance_scale=3.5)
        pipe.scheduler = make_scheduler("flow-ancestral", pipe.scheduler)  # the forward-reverse experiment samples
    pipe.to(args.device, dtype)
    if args.family == "wan":
        pipe.vae.to(torch.float32)  # Wan's pipelines decode in float32
    if args.device.startswith("cuda") and args.family == "sd15":
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    cond = {k: (v.to(args.device, dtype) if torch.is_tensor(v) else v) for k, v in cond.items()}
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
    module = pipe.unet if args.family == "sd15" else pipe.transformer
    return pipe, classifier, cond, module, size, frames


def bare_throughput(backend, batch: int, sync, repeats: int) -> float:
    """Rows per second of the bare denoiser (the adapter call the measurement makes, guidance's rows
    included) on ``batch`` samples at the middle of the grid, in a tight loop."""
    from diffusion_windows.diffusion.hooks import _model_input
    from diffusion_windows.diffusion.schedule import restart_plan

    den = backend.den
    x = torch.randn(batch, *backend.shape, device=den.device, dtype=den.dtype)
    cond = den.prepare(batch, x.shape[-2:], **backend.conditioning)
    scheduler, seq, _ = restart_plan(backend.pipe.scheduler, backend.grid[len(backend.grid) // 2],
                                     backend.num_inference_steps, den.device, grid_kwargs=backend.grid_kwargs)
    t = seq[0]
    rows = batch * (1 if cond is None else cond.rows)
    with torch.inference_mode():
        den(_model_input(scheduler, x, t), t, cond)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            den(_model_input(scheduler, x, t), t, cond)
        sync()
    return repeats * rows / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="sd15", choices=["sd15", "sd3", "flux", "wan", "qwen-image"],
                   help="the denoiser's shape")
    p.add_argument("--tiny", action="store_true", help="tiny components on the CPU (for CI)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default: float16 on cuda, float32 on cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=10, help="evenly spaced restart times")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: 50 for sd15 and wan, else 28)")
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("float32" if not a.device.startswith("cuda") else
                          "bfloat16" if a.family == "qwen-image" else "float16")
    a.steps = a.steps or (50 if a.family in ("sd15", "wan") else 28)
    if a.tiny:
        a.samples, a.restarts, a.timesteps, a.steps = 2, 2, 4, 10
    cuda = a.device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(a.device)) if cuda else (lambda: None)

    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.features import labels_feature

    pipe, classifier, cond, module, size, frames = build(a)
    timers = {"denoiser": Timer(module, "forward", sync), "vae_decode": Timer(pipe.vae, "decode", sync)}
    clf_timer = Timer(classifier, "logits", sync)
    if frames is not None:  # clips: CLIP on every frame, probabilities averaged
        from diffusion_windows.video_classifiers import frames_classifier

        classifier = frames_classifier(classifier)
    height, width = size if size is not None else (None, None)
    backend = DiffusionBackend(pipe, classifier, (labels_feature(classifier.labels),), a.steps, conditioning=cond,
                               height=height, width=width, num_frames=frames)
    grid = np.asarray(backend.grid)
    settings = Settings(samples=a.samples, restarts=a.restarts, batch_size=a.batch_size,
                        timesteps=sorted({float(grid[i]) for i in np.linspace(0, len(grid) - 1, a.timesteps).astype(int)}))
    if cuda:
        torch.cuda.reset_peak_memory_stats(a.device)
    for timer in (*timers.values(), clf_timer):
        timer.reset()
    sync()
    start = time.perf_counter()
    engine = Engine(backend, settings, MemoryStore(), quiet=True).run()
    sync()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(a.device) / 2 ** 30 if cuda else None
    den = timers["denoiser"]
    seconds = {k: t.seconds for k, t in timers.items()} | {"classifier": clf_timer.seconds}
    rows, largest = den.rows, den.largest
    shares = {k: v / wall for k, v in seconds.items()}  # before the bare loop, which the denoiser's timer also sees
    shares["rest"] = max(0.0, 1.0 - sum(shares.values()))
    achieved = rows / wall
    # guidance as one batch of both branches (Wan and Qwen-Image call their branches one after the other)
    batched = a.family in ("sd15", "sd3")
    bare = bare_throughput(backend, max(1, largest // (2 if batched and "negative_prompt_embeds" in cond else 1)),
                           sync, repeats=3 if a.tiny else 10)
    result = {
        "family": f"{a.family}-shaped", "tiny": a.tiny, "device": a.device, "dtype": a.dtype,
        "gpu": torch.cuda.get_device_name(a.device) if cuda else None, "sampler": type(pipe.scheduler).__name__,
        "denoiser_params_m": round(sum(q.numel() for q in module.parameters()) / 1e6, 1),
        "vae_params_m": round(sum(q.numel() for q in pipe.vae.parameters()) / 1e6, 1),
        "frames": frames, "size": size,
        "samples": a.samples, "restarts": a.restarts, "timesteps": len(settings.timesteps), "steps": a.steps,
        "batch_size": a.batch_size, "largest_model_batch": largest, "nfe": engine.nfe(),
        "denoiser_rows": rows, "wall_s": round(wall, 3),
        "denoiser_samples_per_s": round(achieved, 1), "bare_samples_per_s": round(bare, 1),
        "ratio": round(achieved / bare, 3), "peak_memory_gb": None if peak is None else round(peak, 2),
        "shares": {k: round(v, 3) for k, v in shares.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
