"""Train the bundled tiny CLIP on scikit-learn's digits paired with text prompts.

    python experiments/train_default_clip.py            # ~2-4 min on 1 core

A custom open_clip config (`dw-digits-clip`: 16 px images, patch 4, 2-layer towers of
width 64, 64-d embedding) is registered with `open_clip.add_model_config` and trained
contrastively (CLIP's symmetric InfoNCE, Radford et al. 2021) on the training split of
`default.digits_split()`: each image is paired with a prompt from one of the
`default.DIGIT_TEMPLATES` chosen at random ("a handwritten digit seven", "the number 7",
...). Since a batch holds many images of the same digit, every caption of the same digit
counts as a positive (targets spread uniformly over them). Light augmentation (1 px
shifts, ink gain, pixel noise) makes the classifier robust to generated samples.

Writes config + weights (float16 safetensors) to assets/tiny_clip/ and the loss /
accuracy log to experiments/out/clip/. Deterministic from --seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.diffusion import default  # noqa: E402
from diffusion_windows.classifiers import preprocess_images, zero_shot_from_model  # noqa: E402

CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 1 px shifts (zero padding), ink gain in [0.8, 1.1], small pixel noise; in [0, 1]."""
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8)[None]).view(n, 1, 8, 1).expand(n, 1, 8, 10)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(8)[None]).view(n, 1, 1, 8).expand(n, 1, 8, 8)
    shifted = shifted.gather(3, cols)
    gain = 0.8 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = 0.05 * torch.randn(shifted.shape, generator=generator)
    return (shifted * gain + noise).clamp(0, 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--assets", type=Path, default=ROOT / "assets" / default.CLIP_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "out" / "clip")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.assets.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.assets / f"{default.CLIP_MODEL_NAME}.json"
    config_path.write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")

    import open_clip
    from safetensors.torch import save_file

    open_clip.add_model_config(config_path)
    model = open_clip.create_model(default.CLIP_MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(default.CLIP_MODEL_NAME)
    pp = open_clip.get_model_preprocess_cfg(model)
    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M; preprocess {pp}")

    train_x, train_y, test_x, test_y = default.digits_split()
    # tokens[c, k]: prompt of template k for digit c
    templates = default.DIGIT_TEMPLATES
    tokens = torch.stack([tokenizer([t(label) for t in templates]) for label in default.DIGIT_LABELS])

    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(s / args.steps * 3.14159265)).item())
    )

    def evaluate():
        model.eval()
        clf = zero_shot_from_model(model, tokenizer, default.DIGIT_LABELS, templates=templates)
        probs = clf(test_x)
        model.train()
        return float((probs.argmax(1) == test_y).float().mean()), float(probs.max(1).values.mean())

    log_path = args.out / "clip_log.csv"
    t0 = time.time()
    with open(log_path, "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "logit_scale", "test_acc", "test_mean_top_prob", "seconds"])
        model.train()
        for step in range(args.steps):
            idx = torch.randint(0, len(train_y), (args.batch_size,), generator=g)
            y = train_y[idx]
            x = preprocess_images(augment(train_x[idx], g), pp["size"], pp["mean"], pp["std"],
                                  interpolation=pp["interpolation"], resize_mode=pp["resize_mode"])
            k = torch.randint(0, len(templates), (args.batch_size,), generator=g)
            img = F.normalize(model.encode_image(x), dim=-1)
            txt = F.normalize(model.encode_text(tokens[y, k]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.T
            same = (y[:, None] == y[None, :]).float()
            target = same / same.sum(1, keepdim=True)  # symmetric: same digit = positive
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # CLIP caps the scale at 100
            if step % 250 == 0 or step == args.steps - 1:
                acc, top = evaluate() if (step % 500 == 0 or step == args.steps - 1) else (float("nan"),) * 2
                row = [step, f"{loss.item():.4f}", f"{model.logit_scale.exp().item():.2f}",
                       f"{acc:.4f}", f"{top:.4f}", f"{time.time() - t0:.1f}"]
                log.writerow(row)
                f.flush()
                print(*row, flush=True)

    model.eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.assets / default.CLIP_WEIGHTS), metadata={"format": "pt"})
    # Re-load exactly as users do (float16 weights -> float32 model) and measure.
    from diffusion_windows.classifiers import clip_zero_shot

    clf = clip_zero_shot(default.DIGIT_LABELS, templates=templates, model=default.CLIP_MODEL_NAME,
                         pretrained=str(args.assets / default.CLIP_WEIGHTS))
    probs = clf(test_x)
    summary = {
        "test_accuracy": float((probs.argmax(1) == test_y).float().mean()),
        "test_mean_top_prob": float(probs.max(1).values.mean()),
        "train_seconds": round(time.time() - t0, 1),
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
    }
    (args.out / "clip_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
