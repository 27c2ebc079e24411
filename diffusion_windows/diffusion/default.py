"""The bundled default: a DDPM on scikit-learn's handwritten digits and a tiny CLIP.

Both are trained by scripts in `experiments/` (`train_default_model.py`,
`train_default_clip.py`) on the training half of `digits_split()` and shipped as
safetensors in the `diffusion_windows.assets` package (the repository's `assets/`):

- `default_pipeline/`: a diffusers `DDPMPipeline` folder (8x8x1 `UNet2DModel`,
  `DDPMScheduler` with 1,000 training timesteps). Images follow scikit-learn's
  convention, ink bright: pixel value 16 -> 1.0, background 0; model space is
  x = 2 * image - 1.
- `tiny_clip/`: a tiny open_clip CLIP, `dw-digits-clip.json` (its config, registered
  with `open_clip.add_model_config`) and `open_clip_model.safetensors`.

Features of the default (digit, coarse group) live in `features.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..bundled import asset, assets_path  # assets_path re-exported: its old home

__all__ = [
    "DIGIT_LABELS",
    "DIGIT_WORDS",
    "DIGIT_TEMPLATES",
    "CLIP_MODEL_NAME",
    "TEST_FRACTION",
    "SPLIT_SEED",
    "assets_path",
    "digits_split",
    "load_default_pipeline",
    "load_default_classifier",
    "register_tiny_clip",
]

DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGIT_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)


def _word(label: str) -> str:
    """ "7" -> "seven"; any other label is used as it is."""
    return DIGIT_WORDS[int(label)] if label.isdigit() and len(label) == 1 else label


# Prompt templates, label -> text. The tiny CLIP is trained on these (one drawn at random
# per image and step) and its zero-shot class embedding averages over all of them.
DIGIT_TEMPLATES = (
    lambda c: f"a handwritten digit {_word(c)}",
    lambda c: f"the number {c}",
    lambda c: f"the digit {_word(c)}",
    lambda c: f"a photo of the digit {c}",
    lambda c: f"a drawing of the number {_word(c)}",
    lambda c: f"a {_word(c)}",
    lambda c: f"handwritten {c}",
)

CLIP_MODEL_NAME = "dw-digits-clip"
PIPELINE_DIR = "default_pipeline"
CLIP_DIR = "tiny_clip"
CLIP_WEIGHTS = "open_clip_model.safetensors"
DIGITS_FILE = "digits/digits_split.safetensors"

TEST_FRACTION = 0.25  # held-out share of each digit class
SPLIT_SEED = 0


def digits_split():
    """Fixed stratified split of scikit-learn's 1,797 digits (25% held out, seed 0).

    Returns (train_images, train_labels, test_images, test_labels): images float32
    tensors [N, 1, 8, 8] in [0, 1] (pixel / 16, ink bright), labels int64 tensors [N].
    1,347 training and 450 held-out images, read from the bundled ``assets/digits``
    (written by ``experiments/export_digits_split.py``): no scikit-learn needed.
    """
    from safetensors.numpy import load_file

    path = assets_path() / DIGITS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"bundled digits split missing: {path}")
    d = load_file(str(path))
    images = lambda key: torch.from_numpy(d[key].astype("float32")).unsqueeze(1) / 16.0  # noqa: E731
    labels = lambda key: torch.from_numpy(d[key].astype("int64"))  # noqa: E731
    return images("train_pixels"), labels("train_labels"), images("test_pixels"), labels("test_labels")


def load_default_pipeline(device: str = "cpu"):
    """The bundled DDPMPipeline (8x8x1, 1,000 training timesteps), loaded offline.

    `pipe(batch_size=n)` samples with its own DDPMScheduler (1,000 steps); the sweep's
    default is `num_inference_steps=100`. Output images lie in [0, 1], ink bright.

    Example::

        pipe = load_default_pipeline()
        images = pipe(batch_size=16, num_inference_steps=100).images
    """
    from diffusers import DDPMPipeline

    folder = asset(PIPELINE_DIR, "model_index.json", "default pipeline")
    pipe = DDPMPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    return pipe.to(device)


def register_tiny_clip() -> Path:
    """Register the bundled tiny CLIP config with open_clip; returns its weights path."""
    import open_clip

    folder = assets_path() / CLIP_DIR
    config = folder / f"{CLIP_MODEL_NAME}.json"
    if not config.is_file():
        raise FileNotFoundError(f"tiny CLIP config missing: {config}")
    if CLIP_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(config)
    return folder / CLIP_WEIGHTS


def load_default_classifier(device: str = "cpu", batch_size: int = 256, labels=None):
    """`clip_zero_shot` over the bundled tiny CLIP, labels "0".."9" in that order.

    `labels` (None: all ten digits) picks other prompts, e.g. ("3", "8") for a two-way
    classifier; the tiny CLIP only knows digits, written as "7" or "seven".

    Example::

        probs = load_default_classifier()(images)   # images [N, 1, 8, 8] in [0, 1] -> [N, 10]
    """
    from ..classifiers import clip_zero_shot

    weights = register_tiny_clip()
    return clip_zero_shot(
        DIGIT_LABELS if labels is None else labels,
        templates=DIGIT_TEMPLATES,
        model=CLIP_MODEL_NAME,
        pretrained=str(weights),
        device=device,
        batch_size=batch_size,
    )
