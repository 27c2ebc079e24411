"""Quality numbers of the bundled default model and classifier, printed as JSON.

    python experiments/measure_default_quality.py                   # 100-step DDPM (sweep default)
    python experiments/measure_default_quality.py --steps 1000      # the pipeline's own default

- tiny CLIP zero-shot accuracy on the 450 held-out real digits of `digits_split()`;
- n samples of the default DDPMPipeline: class histogram by the classifier, mean top
  probability, share of each coarse group;
- memorisation: Euclidean distance (pixel space, [0, 1], 64 dims) from each sample to
  its nearest training image, against the same for held-out real digits;
- with --grid: the first 100 samples as a 10x10 grid, assets/default_samples.png.
Also written to experiments/out/quality_steps{N}.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from diffusion_windows.diffusion import default  # noqa: E402
from diffusion_windows.features import GROUP_FEATURE, feature_values  # noqa: E402
from train_default_model import save_grid  # noqa: E402


def nearest_distance(x: torch.Tensor, ref: torch.Tensor, exclude_self: bool = False) -> np.ndarray:
    """Distance from each image in x to its nearest image in ref (flattened, Euclidean)."""
    d = torch.cdist(x.flatten(1).double(), ref.flatten(1).double())
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values.numpy()


def summary(d: np.ndarray) -> dict:
    return {"mean": round(float(d.mean()), 4), "median": round(float(np.median(d)), 4),
            "p05": round(float(np.quantile(d, 0.05)), 4), "min": round(float(d.min()), 4)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="DDPM inference steps")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", action="store_true", help="write assets/default_samples.png (first 100 samples)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    train_x, train_y, test_x, test_y = default.digits_split()
    clf = default.load_default_classifier()
    test_probs = clf(test_x)
    acc = float((test_probs.argmax(1) == test_y).float().mean())

    pipe = default.load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    chunks = []
    for i, start in enumerate(range(0, args.n, args.batch_size)):
        n = min(args.batch_size, args.n - start)
        gen = torch.Generator().manual_seed(args.seed * 1000 + i)
        out = pipe(batch_size=n, num_inference_steps=args.steps, generator=gen, output_type="np").images
        chunks.append(torch.from_numpy(out).permute(0, 3, 1, 2).float())
    samples = torch.cat(chunks)
    sample_seconds = time.time() - t0

    probs = clf(samples)
    pred = probs.argmax(1).numpy()
    hist = np.bincount(pred, minlength=10) / len(pred)
    groups = np.bincount(feature_values(GROUP_FEATURE, pred), minlength=len(GROUP_FEATURE.values)) / len(pred)

    d_samples = nearest_distance(samples, train_x)
    d_test = nearest_distance(test_x, train_x)
    d_train = nearest_distance(train_x, train_x, exclude_self=True)
    copy_threshold = float(np.quantile(d_test, 0.05))

    result = {
        "command": "python experiments/measure_default_quality.py " + " ".join(argv or sys.argv[1:]),
        "classifier_heldout_accuracy": round(acc, 4),
        "classifier_heldout_mean_top_prob": round(float(test_probs.max(1).values.mean()), 4),
        "num_samples": args.n,
        "num_inference_steps": args.steps,
        "sampling_seconds": round(sample_seconds, 1),
        "class_fractions": {str(k): round(float(v), 4) for k, v in enumerate(hist)},
        "all_classes_within_4_16_percent": bool(((hist >= 0.04) & (hist <= 0.16)).all()),
        "samples_mean_top_prob": round(float(probs.max(1).values.mean()), 4),
        "group_fractions": {k: round(float(v), 4) for k, v in zip(GROUP_FEATURE.value_names, groups)},
        "nn_distance_to_train": {
            "samples": summary(d_samples),
            "heldout_real": summary(d_test),
            "train_leave_one_out": summary(d_train),
            "share_of_samples_closer_than_heldout_p05": round(float((d_samples < copy_threshold).mean()), 4),
            "share_of_heldout_closer_than_heldout_p05": 0.05,
        },
    }
    if args.grid:
        save_grid(samples[:100], ROOT / "assets" / "default_samples.png", nrow=10, scale=8, pad=6)
        save_grid(test_x[:100], ROOT / "experiments" / "out" / "heldout_real.png", nrow=10, scale=8, pad=6)
        result["grid"] = "assets/default_samples.png"
    out = ROOT / "experiments" / "out" / f"quality_steps{args.steps}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
