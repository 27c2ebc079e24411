"""Train the bundled video default: a DDPM on digits moving in four directions (8 frames, 16x16).

    python experiments/train_default_video.py          # ~8 min on 1 shared core

The data are `default_video.training_clips()`: 40 training digits of each class, each moving one
pixel per frame up, down, left and right (1,600 clips ``[8, 1, 16, 16]``), in model space
``2 x - 1``. The model is a diffusers ``UNet2DModel`` whose 8 input channels are the frames (blocks
32, 64, 64, no attention; 1.07 M parameters), trained as the digits default is (1,000
timesteps, linear betas; AdamW, warm-up, cosine decay, EMA weights shipped) but predicting the
clean clip (``prediction_type="sample"``, MSE), for ``--steps`` steps or ``--minutes`` of wall
time, whichever ends first. The EMA weights are saved in float16 (2.1 MB; they load as float32) as a
`VideoDDPMPipeline` folder in assets/default_video/, with a sample grid and the share of samples
whose motion classifier reads one of the four directions in experiments/out/video/.
Deterministic from --seed (data order, timesteps and noise from one seeded generator) up to where
the wall-time limit stops it.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from diffusion_windows.diffusion import default_video as dv  # noqa: E402
from train_default_model import SCHEDULER_CONFIG, save_grid  # noqa: E402

PREDICTION = "sample"  # the UNet predicts the clean clip: on 1,000 steps it learns the dark, still background
                       # at once (epsilon prediction left grey frames that flicker from frame to frame)

UNET_CONFIG = dict(sample_size=dv.SIZE, in_channels=dv.FRAMES, out_channels=dv.FRAMES, layers_per_block=1,
                   block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D",) * 3,
                   up_block_types=("UpBlock2D",) * 3, norm_num_groups=16)


def train_step(unet, ema, opt, lr_sched, x0, alpha_bar, g, step: int, ema_decay: float) -> float:
    """One step of clean-sample prediction (MSE to ``x0`` of ``q(x_t | x_0)``, Ho et al. eq. 4), then the EMA update."""
    t = torch.randint(0, len(alpha_bar), (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    loss = F.mse_loss(unet(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t).sample, x0)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=8.0, help="stop after this much wall time")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--assets", type=Path, default=ROOT / "assets" / dv.VIDEO_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "out" / "video")
    args = p.parse_args(argv)

    from diffusers import DDPMScheduler, UNet2DModel

    from diffusion_windows.video_classifiers import motion_classifier

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    clips, _, _ = dv.training_clips()
    data = (2 * clips - 1).reshape(len(clips), dv.FRAMES, dv.SIZE, dv.SIZE)  # frames as channels
    unet = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG, prediction_type=PREDICTION)
    alpha_bar = scheduler.alphas_cumprod.float()
    print(f"unet params: {sum(q.numel() for q in unet.parameters()) / 1e6:.2f} M, clips {len(data)}", flush=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    def lr_at(step):  # linear warm-up, then cosine decay to 5% of the peak
        if step < args.warmup:
            return (step + 1) / args.warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(args.seed)
    order, pos, started, losses = torch.randperm(len(data), generator=g), 0, time.time(), []
    for step in range(args.steps):
        if pos + args.batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=g), 0
        losses.append(train_step(unet, ema, opt, lr_sched, data[order[pos:pos + args.batch_size]], alpha_bar, g, step,
                                 args.ema_decay))
        pos += args.batch_size
        if step % 100 == 0:
            print(f"step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} "
                  f"{time.time() - started:.0f}s", flush=True)
        if time.time() - started > args.minutes * 60:
            print(f"stopped by the wall-time limit at step {step + 1}", flush=True)
            break
    pipe = dv.VideoDDPMPipeline(unet=ema.to(torch.float16), scheduler=scheduler)
    pipe.save_pretrained(args.assets, safe_serialization=True)
    pipe = dv.VideoDDPMPipeline.from_pretrained(args.assets, dtype=torch.float32)
    samples = pipe(batch_size=32, num_inference_steps=20, generator=torch.Generator().manual_seed(args.seed))
    read = motion_classifier("directions")(samples).argmax(1)
    moving = float((read > 0).float().mean())
    save_grid(samples[:16].permute(0, 2, 1, 3, 4).reshape(16 * dv.FRAMES, 1, dv.SIZE, dv.SIZE),
              args.out / "samples.png", nrow=dv.FRAMES, scale=4)
    summary = {"steps": len(losses), "seconds": round(time.time() - started, 1),
               "final_loss": sum(losses[-100:]) / len(losses[-100:]), "samples_moving_share": moving,
               "directions_read": [int((read == k).sum()) for k in range(5)]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
