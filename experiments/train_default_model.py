"""Train the bundled default DDPM on scikit-learn's handwritten digits (8x8x1).

    python experiments/train_default_model.py          # ~15-20 min on 1 shared core

DDPM (Ho et al. 2020, Algorithm 1): epsilon prediction, MSE loss, 1,000 training
timesteps with the linear beta schedule, on the training split of
`default.digits_split()` in model space x = 2 * image - 1 (ink bright). A small
`UNet2DModel` (blocks 32, 64, one ResNet layer each, no attention; 0.65 M
parameters, cheap for the sweep), AdamW with warm-up and cosine
decay, and an exponential moving average of the weights (the EMA weights are shipped).

Writes the loss log (CSV) and sample grids (100-step DDPM) to experiments/out/ddpm/
as it goes, and the final pipeline (`DDPMPipeline.save_pretrained`, safetensors) to
assets/default_pipeline/. Deterministic from --seed: data order, timesteps and noise
come from one seeded generator.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.diffusion import default  # noqa: E402

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)


def train_step(unet, ema, opt, lr_sched, x0, alpha_bar, g, step: int, ema_decay: float) -> float:
    """One epsilon-prediction step (Ho et al. eq. 14) on the batch ``x0``, then the EMA update; returns the loss."""
    t = torch.randint(0, len(alpha_bar), (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # q(x_t | x_0), Ho et al. eq. 4
    loss = F.mse_loss(unet(x_t, t).sample, eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    lr_sched.step()
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), unet.parameters()):
            pe.lerp_(pm, 1 - decay)
    return loss.item()


def save_grid(images: torch.Tensor, path: Path, nrow: int = 10, scale: int = 8, pad: int = 2) -> None:
    """Save images [N, 1, H, W] in [0, 1] as a PNG grid, each pixel a `scale` x `scale` block."""
    from PIL import Image

    n, _, h, w = images.shape
    ncol = math.ceil(n / nrow)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((ncol * cell_h + pad, nrow * cell_w + pad), 96, dtype=np.uint8)  # grey frame
    big = images[:, 0].clamp(0, 1).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    big = (big * 255).round().to(torch.uint8).numpy()
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[pad + r * cell_h: pad + r * cell_h + h * scale, pad + c * cell_w: pad + c * cell_w + w * scale] = big[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, mode="L").save(path)


@torch.no_grad()
def sample(unet, scheduler, n: int, num_inference_steps: int, seed: int) -> torch.Tensor:
    """n images in [0, 1] from DDPM ancestral sampling with `num_inference_steps` steps."""
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline(unet=unet, scheduler=copy.deepcopy(scheduler))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=n, num_inference_steps=num_inference_steps,
               generator=torch.Generator().manual_seed(seed), output_type="np").images
    return torch.from_numpy(out).permute(0, 3, 1, 2).float()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--assets", type=Path, default=ROOT / "assets" / default.PIPELINE_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "out" / "ddpm")
    args = p.parse_args(argv)

    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "options.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    train_x, _, _, _ = default.digits_split()
    data = 2 * train_x - 1  # model space, ink bright -> +1
    unet = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    alpha_bar = scheduler.alphas_cumprod.float()
    print(f"unet params: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M", flush=True)

    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    def lr_at(step):  # linear warm-up, then cosine decay to 5% of the peak
        if step < args.warmup:
            return (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(args.seed)
    order, pos = torch.randperm(len(data), generator=g), 0
    t0 = time.time()
    running = []
    with open(args.out / "loss.csv", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "lr", "seconds"])
        for step in range(args.steps):
            # Deterministic epochs: a fresh permutation whenever the previous one is used up.
            if pos + args.batch_size > len(order):
                order, pos = torch.randperm(len(data), generator=g), 0
            x0 = data[order[pos: pos + args.batch_size]]
            pos += args.batch_size
            loss = train_step(unet, ema, opt, lr_sched, x0, alpha_bar, g, step, args.ema_decay)
            running.append(loss)
            if (step + 1) % 50 == 0:
                row = [step + 1, f"{np.mean(running):.5f}", f"{lr_sched.get_last_lr()[0]:.2e}", f"{time.time() - t0:.1f}"]
                log.writerow(row)
                f.flush()
                running = []
                if (step + 1) % 500 == 0:
                    print(*row, flush=True)
            if (step + 1) % args.sample_every == 0 or step + 1 == args.steps:
                ema.eval()
                imgs = sample(ema, scheduler, 100, 100, seed=1234)
                save_grid(imgs, args.out / f"samples_step{step + 1:06d}.png")

    train_seconds = time.time() - t0
    args.assets.mkdir(parents=True, exist_ok=True)
    pipe = DDPMPipeline(unet=ema.eval(), scheduler=scheduler)
    pipe.save_pretrained(args.assets, safe_serialization=True)
    summary = {"train_seconds": round(train_seconds, 1), "steps": args.steps,
               "batch_size": args.batch_size, "seed": args.seed,
               "params_M": round(sum(p.numel() for p in ema.parameters()) / 1e6, 3)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
