"""Figure: the same story features decided by two generative processes of one language.

    python experiments/figure_ar_vs_masked.py RUN_TEXT RUN_MASKED [--out assets/ar_vs_masked.png]

RUN_TEXT is a ``--model default-text`` run folder (truncation: time = fraction of the response
removed), RUN_MASKED a ``--model default-masked`` one (re-masking: fraction masked). For the
genre and the world (values pooled: each value's curve weighted by its base responses), each
panel shows both runs' measured retention with 95% bands and each process's exact curve
(`theory.text.retention`, `theory.story_mask.retention_masked`, on a fine grid). Under
truncation the genre is decided at the last token (the ending); under masking the ending
survives with probability 1 - t, so the genre is decided gradually over the whole process.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.text.tasks import DEFAULT_STORY  # noqa: E402
from diffusion_windows.theory.story import story_features  # noqa: E402
from diffusion_windows.theory.story_mask import retention_masked  # noqa: E402
from diffusion_windows.theory.text import kept_tokens, retention  # noqa: E402


def pooled(folder, feature):
    """(times, retention, low, high) of a feature, its values' curves weighted by their base responses."""
    recs = [r for r in json.loads((Path(folder) / "windows.json").read_text())["features"]
            if r["feature"] == feature and r["parent"] is None and r["retention"]]
    w = np.array([r["n_base"] for r in recs], float)
    arr = {k: np.array([r[k] for r in recs], float) for k in ("retention", "ci_low", "ci_high")}
    return (np.array(recs[0]["timesteps"]),) + tuple((w @ arr[k]) / w.sum() for k in ("retention", "ci_low",
                                                                                       "ci_high"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text_run")
    p.add_argument("masked_run")
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "ar_vs_masked.png")
    args = p.parse_args(argv)
    from matplotlib.figure import Figure

    feats = {f["name"]: f["values"] for f in story_features(DEFAULT_STORY)}
    fine = np.linspace(0, 1, 201)
    length = DEFAULT_STORY.length              # M cues and the ending (end-of-sequence not counted)
    fig = Figure(figsize=(9, 3.4), dpi=110)
    for i, name in enumerate(("genre", "world")):
        ax = fig.add_subplot(1, 2, i + 1)
        values = list(feats[name].values())
        weights = [DEFAULT_STORY.weights[list(v)].sum() for v in values]
        ideal_ar = sum(w * retention(DEFAULT_STORY, v, kept_tokens(fine, length), length=length)
                       for w, v in zip(weights, values))
        ideal_mask = sum(w * retention_masked(DEFAULT_STORY, v, fine) for w, v in zip(weights, values))
        for folder, ideal, colour, label in ((args.text_run, ideal_ar, "#2b8cbe", "truncation (default-text)"),
                                             (args.masked_run, ideal_mask, "#d95f0e", "re-masking (default-masked)")):
            t, r, lo, hi = pooled(folder, name)
            ax.fill_between(t, lo, hi, color=colour, alpha=0.2, lw=0)
            ax.plot(t, r, "o-", color=colour, ms=3, lw=1.2, label=f"{label}: measured")
            ax.plot(fine, ideal, "--", color=colour, lw=1, label="exact curve")
        ax.set_title(f"{name}: retention of the base response's value")
        ax.set_xlabel("fraction removed (truncation) / masked (re-masking)")
        ax.set_ylim(-0.02, 1.02)
        if i == 0:
            ax.set_ylabel("retention")
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
