"""Resolve a sweep's ``model``/``scheduler``/``labels``/``clip_*`` options into a `measure.Model`.

- ``"default"``: the bundled digits DDPM and tiny CLIP (`diffusion_windows.default`), the digit
  and coarse features; theory mixture = the training split (`theory.EmpiricalMixture`).
- ``"gaussian-mixture"``: the exact denoiser of a built-in hierarchical Gaussian mixture
  (`diffusion_windows.exact_denoiser`), classified by the mixture's own posterior.
- a local diffusers pipeline folder or a hub id: `DiffusionPipeline.from_pretrained`;
  classifier `clip_zero_shot(labels, model=clip_model, pretrained=clip_pretrained)`.
A failure to load raises `ModelLoadError` with one line (the CLI exits 2).
"""
from __future__ import annotations

import torch

from .measure import Model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BUILTIN_STEPS = 20  # the bundled models sample well in 20 DDPM steps (grid spacing 50 timesteps)
DEFAULT_STEPS = 50


class ModelLoadError(ValueError):
    """The model or classifier could not be loaded; one-line message."""


def load_model(o: dict) -> Model:
    """Build the `Model` a sweep with resolved options ``o`` runs on."""
    device, dtype = o["device"], DTYPES[o["dtype"]]
    mixture = None
    if o["model"] == "default":
        from . import default
        from .features import DEFAULT_FEATURES, labels_feature

        pipe = default.load_default_pipeline(device=device)
        if o["labels"] is None and o["clip_model"] is None:
            classifier = default.load_default_classifier(device=device)
            features = tuple(DEFAULT_FEATURES)
            mixture = "default"
        else:
            classifier = _clip(o, device)
            features = (labels_feature(classifier.labels),)
    elif o["model"] == "gaussian-mixture":
        from .exact_denoiser import gaussian_mixture_model

        gm = gaussian_mixture_model(device=device)
        pipe, classifier, features, mixture = gm.pipe, gm.classifier, tuple(gm.features), gm.mixture
    else:
        from .features import labels_feature

        pipe = _from_pretrained(o["model"], dtype, device)
        if o["labels"] is None:
            raise ModelLoadError(f"--labels: the pipeline {o['model']!r} needs feature labels (e.g. --labels 'a cat,a dog')")
        classifier = _clip(o, device)
        features = (labels_feature(classifier.labels),)
    if o["dtype"] != "float32" and o["model"] in ("default", "gaussian-mixture"):
        pipe.unet.to(dtype=dtype)
    if o["scheduler"] is not None:
        from .schedule import make_scheduler

        pipe.scheduler = make_scheduler(o["scheduler"], pipe.scheduler)
    if device.startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    conditioning = {}
    if o["prompt"]:
        conditioning["prompt"] = o["prompt"]
        if o["guidance_scale"] is not None:
            conditioning["guidance_scale"] = float(o["guidance_scale"])
    eta = o["eta"]
    if eta is None and type(pipe.scheduler).__name__.startswith("DDIM"):
        eta = 1.0  # DDIM with eta=1 samples the reverse process (THEORY.md, samplers)
    return Model(pipe=pipe, classifier=classifier, features=features,
                 num_inference_steps=o["num_inference_steps"] or (
                     BUILTIN_STEPS if o["model"] in ("default", "gaussian-mixture") else DEFAULT_STEPS),
                 name=o["model"], eta=eta,
                 conditioning=conditioning, mixture=mixture)


def _from_pretrained(name: str, dtype, device):
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(name, torch_dtype=dtype)
    except Exception as e:  # diffusers raises many kinds; the user needs one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"--model: cannot load {name!r}: {msg}") from None
    if not hasattr(pipe, "unet") or not hasattr(pipe, "scheduler"):
        raise ModelLoadError(f"--model: {name!r} has no unet and scheduler (not a UNet diffusion pipeline)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _clip(o: dict, device):
    from .classifiers import clip_zero_shot

    labels = o["labels"]
    if o["clip_model"] is None:
        from . import default

        return default.load_default_classifier(device=device, labels=labels)
    try:
        return clip_zero_shot(labels, model=o["clip_model"], pretrained=o["clip_pretrained"], device=device,
                              templates=o.get("templates"))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"--clip-model: cannot load {o['clip_model']!r} ({o['clip_pretrained']}): {msg}") from None
