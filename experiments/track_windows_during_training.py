"""Track the digit and group windows while the default digits DDPM trains from scratch.

    nice python experiments/track_windows_during_training.py \\
        --steps 4000 --every 500 --samples 20 --restarts 4 --timesteps 0:1000:100 \\
        --figure assets/windows_during_training.png          # ~20 min on 2 shared cores
    python experiments/track_windows_during_training.py --tiny --steps 4 --every 2 \\
        --samples 2 --restarts 2                              # the CI smoke run, seconds

Trains the bundled model's `UNet2DModel` (config and DDPM recipe of
`train_default_model.py`: epsilon prediction, AdamW with warm-up and cosine decay, EMA
weights) on `default.digits_split()`, and at step 0 and every ``--every`` steps measures
the windows of the default features (`features.DEFAULT_FEATURES`: digit and coarse group)
on the EMA weights with `measure_window`, classified by the bundled tiny CLIP.

The theory (`library.theory_predictions`, computed once and passed to every measurement: T_after, T_before of each value against the whole data,
THEORY.md "Empirical window edges"; the speciation time of Biroli et al.) depends on the
data only, so it is computed once, on the training split (``--tiny``: on 100 of its points),
and written beside every checkpoint's records.

Writes to ``--out``: ``tracked.jsonl`` (one line per checkpoint and top-level feature value:
step, feature, value, start_timestep, end_timestep, t_after_timestep, t_before_timestep,
speciation_timestep, loss, ...; all times in training timesteps), ``theory.json``,
``options.json`` and the figure (``--figure``). Deterministic from ``--seed``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from diffusion_windows.diffusion import default  # noqa: E402
from train_default_model import SCHEDULER_CONFIG, UNET_CONFIG, train_step  # noqa: E402

# --tiny: a UNet of the same shape with narrow blocks (CI smoke runs only).
TINY_UNET_CONFIG = {**UNET_CONFIG, "block_out_channels": (8, 16), "norm_num_groups": 4}
TINY_THEORY_POINTS = 100


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--every", type=int, default=500, help="measure every this many steps (and at step 0)")
    p.add_argument("--samples", type=int, default=20, help="base samples per measurement")
    p.add_argument("--restarts", type=int, default=4, help="re-samples per base sample and timestep")
    p.add_argument("--timesteps", default="0:1000:100", help="measured grid (training timesteps)")
    p.add_argument("--num-inference-steps", type=int, default=None, help="sampling grid (default 50; --tiny 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="training batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--tiny", action="store_true", help="narrow UNet, theory on 100 points: a smoke test")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "out" / "track_training")
    p.add_argument("--figure", type=Path, default=None, help="PNG path (default: OUT/windows_during_training.png)")
    p.add_argument("--replot", action="store_true", help="only redraw the figure from OUT/tracked.jsonl")
    args = p.parse_args(argv)
    for name in ("steps", "every", "samples", "restarts", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: {getattr(args, name)} must be >= 1")
    if args.num_inference_steps is None:
        args.num_inference_steps = 10 if args.tiny else 50
    if args.figure is None:
        args.figure = args.out / "windows_during_training.png"
    return args


def checkpoints(steps: int, every: int) -> list[int]:
    """Training steps at which to measure: 0, every, 2*every, ..., and the last step."""
    return sorted(set(range(0, steps + 1, every)) | {steps})


# ---------------------------------------------------------------- measurement


def measure(pipe, classifier, args, predictions) -> list:
    """`measure_window` on the default features with the theory computed once -> top-level WindowRecords."""
    from diffusion_windows import measure_window
    from diffusion_windows.features import DEFAULT_FEATURES

    records = measure_window(pipe, classifier, features=DEFAULT_FEATURES, samples=args.samples,
                             restarts=args.restarts, timesteps=args.timesteps,
                             num_inference_steps=args.num_inference_steps, seed=args.seed, theory=predictions)
    return [r for r in records if r.parent is None]


def theory_mixture(tiny: bool, seed: int):
    """The training split as an `EmpiricalMixture` in model space (tiny: 100 points of it)."""
    from diffusion_windows.diffusion.theory import default_mixture
    from diffusion_windows.theory import EmpiricalMixture

    mix = default_mixture()
    if not tiny:
        return mix
    idx = np.sort(np.random.default_rng(seed).choice(len(mix.labels), TINY_THEORY_POINTS, replace=False))
    return EmpiricalMixture(mix.means[idx], mix.labels[idx])


def compute_theory(pipe, classifier, args):
    """The theory on the training split, once: it depends on the data only, never on the model being
    trained. Passed to every `measure_window` call as ``theory=`` (`library.theory_predictions`)."""
    from diffusion_windows import theory_predictions
    from diffusion_windows.features import DEFAULT_FEATURES

    return theory_predictions(pipe, classifier, timesteps=args.timesteps, features=DEFAULT_FEATURES,
                              mixture=theory_mixture(args.tiny, args.seed), num_inference_steps=args.num_inference_steps)


THEORY_KEYS = ("t_after_timestep", "t_before_timestep", "speciation_timestep", "t_after_ou", "t_before_ou",
               "speciation_ou", "eps_after", "eps_before", "window_exists")


# ---------------------------------------------------------------- training


def train_and_track(args) -> list[dict]:
    """Train (DDPM, Ho et al. 2020 Alg. 1) and measure at every checkpoint -> tracked rows."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from diffusion_windows.diffusion.default import load_default_classifier

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, _, _, _ = default.digits_split()
    data = 2 * train_x - 1  # model space, ink bright -> +1
    unet = UNet2DModel(**(TINY_UNET_CONFIG if args.tiny else UNET_CONFIG))
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    alpha_bar = scheduler.alphas_cumprod.float()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    def lr_at(step):  # linear warm-up, then cosine decay to 5% of the peak (as train_default_model)
        if step < args.warmup:
            return (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    classifier = load_default_classifier()
    pipe = DDPMPipeline(unet=ema, scheduler=scheduler)  # the EMA weights are what gets shipped
    pipe.set_progress_bar_config(disable=True)

    g = torch.Generator().manual_seed(args.seed)
    order, pos = torch.randperm(len(data), generator=g), 0
    todo, rows, losses = checkpoints(args.steps, args.every), [], []
    predictions = compute_theory(pipe, classifier, args)
    started = time.time()
    for step in range(args.steps + 1):
        if step in todo:
            ema.eval()
            t0 = time.time()
            records = measure(pipe, classifier, args, predictions)
            if step == 0:
                values = {f"{r.feature}/{r.value}": {k: getattr(r, k) for k in THEORY_KEYS} for r in records}
                (args.out / "theory.json").write_text(
                    json.dumps({"summary": predictions.summary, "values": values}, indent=1) + "\n")
            loss = float(np.mean(losses)) if losses else None
            new = [row_of(step, r, loss) for r in records]
            with open(args.out / "tracked.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
            rows += new
            losses = []
            print(f"step {step}: loss {loss if loss is None else round(loss, 4)}, "
                  f"measured in {time.time() - t0:.0f} s, {time.time() - started:.0f} s so far", flush=True)
        if step == args.steps:
            break
        # Deterministic epochs: a fresh permutation whenever the previous one is used up.
        if pos + args.batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=g), 0
        x0 = data[order[pos: pos + args.batch_size]]
        pos += args.batch_size
        unet.train()
        losses.append(train_step(unet, ema, opt, lr_sched, x0, alpha_bar, g, step, args.ema_decay))
    return rows


def row_of(step: int, r, loss) -> dict:
    """One line of tracked.jsonl (training timesteps; None where an edge is not crossed)."""
    return {"step": step, "feature": r.feature, "value": r.value, "n_base": r.n_base,
            "base_rate": r.base_rate, "start_timestep": r.start_timestep, "end_timestep": r.end_timestep,
            "t_after_timestep": r.t_after_timestep, "t_before_timestep": r.t_before_timestep,
            "speciation_timestep": r.speciation_timestep, "loss": loss}


# ---------------------------------------------------------------- figure


def _stats(rows, feature, key, steps):
    """Per step: mean, 25% and 75% quantile of ``key`` over the feature's values (nan: none)."""
    out = np.full((3, len(steps)), np.nan)
    for j, s in enumerate(steps):
        v = [r[key] for r in rows if r["step"] == s and r["feature"] == feature and r[key] is not None]
        if v:
            out[:, j] = np.mean(v), np.quantile(v, 0.25), np.quantile(v, 0.75)
    return out


def plot_tracked(rows: list[dict], path: Path, *, title: str = "") -> Path:
    """Windows against training step: measured edges (mean over values, band = IQR), theory lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({r["step"] for r in rows})
    fig, (ax, lax) = plt.subplots(2, 1, figsize=(8.4, 5.4), sharex=True, height_ratios=(3, 1),
                                  constrained_layout=True)
    colours = {"digit": "tab:blue", "group": "tab:orange"}
    for feature, colour in colours.items():
        for key, style, edge in (("start_timestep", "-", "start"), ("end_timestep", "--", "end")):
            mean, lo, hi = _stats(rows, feature, key, steps)
            ax.plot(steps, mean, style, color=colour, marker="o", ms=3, label=f"{feature} window {edge} (measured)")
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.15, lw=0)
        theory = {k: [r[k] for r in rows if r["feature"] == feature and r["step"] == steps[0] and r[k] is not None]
                  for k in ("t_after_timestep", "t_before_timestep")}
        for k, style, name in (("t_after_timestep", ":", "T_after"), ("t_before_timestep", "-.", "T_before")):
            if theory[k]:
                ax.axhline(np.mean(theory[k]), color=colour, ls=style, lw=1.2, label=f"{feature} {name} (theory)")
    ts = [r["speciation_timestep"] for r in rows if r["speciation_timestep"] is not None]
    if ts:
        ax.axhline(ts[0], color="black", lw=1, alpha=0.7, label="speciation time (Biroli et al.)")
    ax.set_ylabel("timestep (training)")
    ax.set_ylim(0, 1000)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "Critical windows while the digits DDPM trains", fontsize=10)
    loss = [(r["step"], r["loss"]) for r in rows if r["loss"] is not None]
    if loss:
        ls, lv = zip(*sorted(set(loss)))
        lax.plot(ls, lv, color="gray", marker="o", ms=3)
    lax.set_ylabel("train loss")
    lax.set_xlabel("training step")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    title = (f"Windows while the digits DDPM trains: mean over values, band = IQR "
             f"(samples={args.samples}, restarts={args.restarts})")
    if args.replot:
        rows = [json.loads(line) for line in (args.out / "tracked.jsonl").read_text().splitlines()]
        print(f"wrote {plot_tracked(rows, args.figure, title=title)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracked.jsonl").write_text("")  # a rerun starts over (the run is deterministic)
    (args.out / "options.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    t0 = time.time()
    rows = train_and_track(args)
    plot_tracked(rows, args.figure, title=title)
    print(f"wrote {args.out / 'tracked.jsonl'} and {args.figure} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
