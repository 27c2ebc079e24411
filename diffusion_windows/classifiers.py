"""Classifiers: callables from images to class probabilities.

A classifier is any callable `images -> probs` where `images` is a float tensor
[N, C, H, W] in [0, 1] (any size, C = 1 or 3) and `probs` a cpu float32 tensor
[N, len(labels)] whose rows sum to 1; it has an attribute `labels: tuple[str, ...]`.
No base class: `clip_zero_shot` builds one from any open_clip model (zero-shot, as in
open_clip's `zero_shot_classifier.py`), `from_callable` and `from_torch_model` wrap
a plain function or a torchvision / timm model.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_TEMPLATES",
    "ARTICLE_TEMPLATES",
    "templates_for",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ZeroShotClassifier",
    "CallableClassifier",
    "clip_zero_shot",
    "zero_shot_from_model",
    "from_callable",
    "from_torch_model",
    "preprocess_images",
    "check_images",
    "format_prompt",
    "parse_templates",
]

# A few of the prompt templates of CLIP's ImageNet zero-shot set (Radford et al. 2021).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "itap of a {}.",
)

# The same prompts for labels that carry their own article ("a red car", "the moon"): CLIP's
# templates put an article (and adjectives) before the label, which would read "a photo of the
# small a red car."
ARTICLE_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a bad photo of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a drawing of {}.",
    "a rendering of {}.",
    "itap of {}.",
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RANGE_TOL = 1e-3  # images outside [0 - tol, 1 + tol] are rejected (model space is [-1, 1])


def check_images(images) -> torch.Tensor:
    """Return `images` as a float tensor [N, C, H, W] in [0, 1], C in (1, 3); else ValueError."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape [N, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return images


def preprocess_images(
    images: torch.Tensor,
    size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels: int = 3,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
) -> torch.Tensor:
    """Tensor version of open_clip's image transform (resize, centre crop, normalise).

    1-channel images are repeated to `channels`. `resize_mode` "shortest" resizes the
    shortest side to `size` then centre-crops (open_clip's default), "squash" resizes
    to `size` directly. Values are clamped to [0, 1] after resizing, as a PIL round trip
    would. Gradients flow through (no PIL).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    x = images.float()
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != channels:
        raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
    h, w = x.shape[-2:]
    if (h, w) != (out_h, out_w):
        if resize_mode == "shortest":
            scale = max(out_h / h, out_w / w)
            new = (max(out_h, round(h * scale)), max(out_w, round(w * scale)))
        elif resize_mode == "squash":
            new = (out_h, out_w)
        else:
            raise ValueError(f"unknown resize_mode {resize_mode!r}; valid: 'shortest', 'squash'")
        mode = interpolation if interpolation in ("bicubic", "bilinear") else "bilinear"
        x = F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=True)
        top, left = (new[0] - out_h) // 2, (new[1] - out_w) // 2
        x = x[..., top : top + out_h, left : left + out_w].clamp(0, 1)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


_ARTICLES = ("a", "an", "the")


def format_prompt(template, label: str) -> str:
    """``template`` (a str with ``"{}"``, or a callable) applied to ``label``.

    A label that carries its own article ("a red car") drops the template's article before
    the placeholder: "a photo of a {}." gives "a photo of a red car.", never "a photo of a a
    red car.".

    Example::

        format_prompt("a photo of a {}.", "an old car")   # "a photo of an old car."
    """
    if callable(template):
        return template(label)
    head, _, tail = template.partition("{}")
    words = head.rstrip().split(" ")
    carries_article = label.split(" ", 1)[0].lower() in _ARTICLES and " " in label.strip()
    if carries_article and head.endswith(" ") and words[-1].lower() in _ARTICLES:
        head = " ".join(words[:-1]) + (" " if len(words) > 1 else "")
    return head + label + tail



def templates_for(labels) -> tuple:
    """`ARTICLE_TEMPLATES` when every label carries its own article ("a red car"), else `DEFAULT_TEMPLATES`."""
    with_article = [str(x).split(" ", 1)[0].lower() in _ARTICLES and " " in str(x).strip() for x in labels]
    return ARTICLE_TEMPLATES if with_article and all(with_article) else DEFAULT_TEMPLATES


def parse_templates(spec) -> tuple | None:
    """``--templates``: ``"plain"`` (the label itself is the prompt), a file with one template per
    line, or templates separated by ``"|"``; each must hold ``"{}"``. ``None`` stays None (the
    classifier picks `templates_for` its labels).

    Example::

        parse_templates("a photo of {}.|a picture of {}.")   # ("a photo of {}.", "a picture of {}.")
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        templates = tuple(spec)
    elif spec == "plain":
        templates = ("{}",)
    elif os.path.isfile(spec):
        with open(spec) as f:
            templates = tuple(line.rstrip("\n") for line in f if line.strip())
    else:
        templates = tuple(t for t in spec.split("|") if t.strip())
    if not templates:
        raise ValueError(f"--templates: {spec!r} holds no template")
    for t in templates:
        if isinstance(t, str) and "{}" not in t:
            raise ValueError(f"--templates: {t!r} has no '{{}}' placeholder for the label")
    return templates


class ZeroShotClassifier:
    """CLIP zero-shot classifier: softmax(logit_scale * cos(image, class text embedding)).

    The class embeddings (`text_features`, [K, D], one row per label: the normalised
    mean of the normalised template embeddings) are computed once, at construction.
    """

    def __init__(self, model, tokenizer, labels, templates, *, device="cpu", batch_size=256):
        labels = tuple(str(label) for label in labels)
        if not labels:
            raise ValueError("labels must not be empty")
        if len(set(labels)) != len(labels):
            dup = next(label for label in labels if labels.count(label) > 1)
            raise ValueError(f"duplicate label {dup!r}")
        templates = (templates,) if isinstance(templates, str) or callable(templates) else tuple(templates)
        if not templates:
            raise ValueError("templates must not be empty")
        for t in templates:
            if isinstance(t, str) and "{}" not in t:
                raise ValueError(f"template {t!r} has no '{{}}' placeholder for the label")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import open_clip

        self.labels = labels
        self.templates = templates
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = model.to(self.device).eval()
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        self.image_size = cfg.get("size", 224)
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.resize_mode = cfg.get("resize_mode", "shortest")
        with torch.inference_mode():
            self.logit_scale = float(self.model.logit_scale.exp())
            rows = []
            for label in labels:
                tokens = tokenizer([format_prompt(t, label) for t in templates]).to(self.device)
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1).mean(0)
                rows.append(F.normalize(emb, dim=-1))
            self.text_features = torch.stack(rows)  # [K, D]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Model input for `images` [N, C, H, W] in [0, 1] (the model's resize and normalisation)."""
        return preprocess_images(
            images, self.image_size, self.mean, self.std,
            interpolation=self.interpolation, resize_mode=self.resize_mode,
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities [N, K] (cpu float32), batched by `batch_size`."""
        images = check_images(images)
        out = []
        with torch.inference_mode():
            for chunk in images.split(self.batch_size):
                x = self.preprocess(chunk.to(self.device))
                feats = F.normalize(self.model.encode_image(x).float(), dim=-1)
                out.append((self.logit_scale * feats @ self.text_features.T).cpu())
        if not out:
            return torch.zeros(0, len(self.labels))
        return torch.cat(out).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).softmax(dim=-1)

    def __repr__(self):
        return f"ZeroShotClassifier(labels={self.labels!r}, image_size={self.image_size})"


def zero_shot_from_model(model, tokenizer, labels, *, templates=None,
                         device="cpu", batch_size=256) -> ZeroShotClassifier:
    """Zero-shot classifier from an already built open_clip model and its tokenizer
    (``templates=None``: `templates_for` the labels)."""
    templates = templates_for(labels) if templates is None else templates
    return ZeroShotClassifier(model, tokenizer, labels, templates, device=device, batch_size=batch_size)


def clip_zero_shot(
    labels: Sequence[str],
    *,
    templates=None,                 # str with "{}" or callable label -> prompt, or a sequence; None: templates_for(labels)
    model: str = "ViT-B-32",        # open_clip model name, "hf-hub:org/repo" or "local-dir:/path"
    pretrained: str | None = "laion2b_s34b_b79k",  # open_clip tag, a local checkpoint path, or None (random init)
    device: str = "cpu",
    batch_size: int = 256,          # images per forward pass
) -> ZeroShotClassifier:
    """Zero-shot CLIP classifier over `labels` for any open_clip model and weights.

    A pretrained tag downloads weights unless open_clip finds them in its cache; a path
    to a local checkpoint (.safetensors, .bin, .pt) loads that file; `pretrained=None`
    gives a randomly initialised model (tests). Prompts are `format_prompt(template, label)`;
    labels that carry their own article ("a red car") get `ARTICLE_TEMPLATES` by default.

    Example::

        clf = clip_zero_shot(["a red car", "a blue car"], model="ViT-B-32", pretrained="/models/vit_b32.bin")
        probs = clf(images)   # [N, 2]
    """
    import open_clip

    if pretrained is not None and os.path.sep in str(pretrained) and not os.path.isfile(pretrained):
        raise ValueError(f"pretrained checkpoint {pretrained!r} does not exist")
    name = model.replace("/", "-") if not model.startswith(("hf-hub:", "local-dir:")) else model
    if ":" not in name and name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    clip_model = open_clip.create_model(model, pretrained=pretrained, device=device)
    tokenizer = open_clip.get_tokenizer(model)
    templates = templates_for(labels) if templates is None else templates
    return ZeroShotClassifier(clip_model, tokenizer, labels, templates, device=device, batch_size=batch_size)


class CallableClassifier:
    """A classifier around `fn(images) -> scores [N, K]`; see `from_callable`."""

    def __init__(self, fn: Callable, labels, *, logits: bool = False, batch_size: int | None = None):
        labels = tuple(str(label) for label in labels)
        if not labels:
            raise ValueError("labels must not be empty")
        self.fn = fn
        self.labels = labels
        self.outputs_logits = bool(logits)
        self.batch_size = batch_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images)
        chunks = images.split(self.batch_size) if self.batch_size else (images,)
        out = []
        with torch.inference_mode():
            for chunk in chunks:
                scores = torch.as_tensor(self.fn(chunk)).detach().float().cpu()
                if scores.shape != (chunk.shape[0], len(self.labels)):
                    raise ValueError(
                        f"classifier returned shape {tuple(scores.shape)}, "
                        f"expected {(chunk.shape[0], len(self.labels))}"
                    )
                out.append(scores)
        scores = torch.cat(out) if out else torch.zeros(0, len(self.labels))
        if self.outputs_logits:
            return scores.softmax(dim=-1)
        if scores.numel() and (scores.min() < -1e-4 or (scores.sum(-1) - 1).abs().max() > 1e-3):
            raise ValueError("classifier returned rows that are not probabilities; pass logits=True")
        return scores

    def __repr__(self):
        return f"CallableClassifier(labels={self.labels!r}, fn={self.fn!r})"


def from_callable(fn: Callable, labels, *, logits: bool = False, batch_size: int | None = None):
    """Classifier from a plain function `images [N, C, H, W] in [0, 1] -> [N, len(labels)]`.

    `fn` returns probabilities (checked) or, with `logits=True`, scores to softmax.

    Example::

        clf = from_callable(lambda im: my_net(im).softmax(-1), ["cat", "dog"])
    """
    return CallableClassifier(fn, labels, logits=logits, batch_size=batch_size)


def from_torch_model(
    model: torch.nn.Module,
    labels,
    *,
    output_indices: Sequence[int] | None = None,  # logit columns for the labels (e.g. ImageNet classes); None: all
    image_size: int | tuple[int, int] = 224,      # input resolution of the model
    mean: Sequence[float] = IMAGENET_MEAN,        # normalisation, torchvision / timm convention
    std: Sequence[float] = IMAGENET_STD,
    channels: int = 3,
    interpolation: str = "bilinear",
    resize_mode: str = "shortest",
    device: str = "cpu",
    batch_size: int = 256,
):
    """Classifier from a torchvision / timm model that maps normalised images to logits.

    Probabilities are the softmax over the selected logit columns `output_indices`
    (one per label, in label order), i.e. conditioned on the image being one of `labels`.
    """
    labels = tuple(str(label) for label in labels)
    if output_indices is not None:
        output_indices = [int(i) for i in output_indices]
        if len(output_indices) != len(labels):
            raise ValueError(f"output_indices has {len(output_indices)} entries for {len(labels)} labels")
    dev = torch.device(device)
    model = model.to(dev).eval()

    def fn(images):
        x = preprocess_images(images.to(dev), image_size, mean, std, channels=channels,
                              interpolation=interpolation, resize_mode=resize_mode)
        out = model(x)
        return out[:, output_indices] if output_indices is not None else out

    return CallableClassifier(fn, labels, logits=True, batch_size=batch_size)
