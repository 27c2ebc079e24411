"""Diffusion models by name: a sweep's ``model``/``scheduler``/``labels``/``clip_*`` options -> a `DiffusionBackend`.

`BUILTIN_MODELS` maps a name to a loader ``(device, dtype) -> Builtin`` (pipeline, classifier,
features, theory data); any other name is a local diffusers pipeline folder or a hub id
(`DiffusionPipeline.from_pretrained`) of a supported family (`denoisers.FAMILIES`: UNet
pipelines, SD3/3.5, Flux.1, PixArt-α/Σ, Sana, DiT; any other fails at load with one line),
classified by `clip_zero_shot` over ``--labels``. Its conditioning comes from ``--prompt``,
``--guidance-scale`` and ``--class-label`` (`conditioning`), its size from ``--height``/``--width``.

- ``"default"``: the bundled digits DDPM and tiny CLIP (`diffusion.default`), the digit and
  coarse features; theory data = the training split.
- ``"gaussian-mixture"``: the exact denoiser of a built-in hierarchical Gaussian mixture
  (`diffusion.exact`), classified by the mixture's own posterior.
- ``"default-video"``: the bundled moving digits (`diffusion.default_video`): motion direction and
  digit; theory data = the training clips.
- ``"gaussian-mixture-flow"``: the same mixture as a flow-matching model (its exact velocity)
  under the flow-ancestral sampler (``--scheduler flow-euler``: the ODE).

A failure to load raises `ModelLoadError` with one line (the CLI exits 2).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["BUILTIN_MODELS", "BUILTIN_STEPS", "DEFAULT_STEPS", "DTYPES", "ModelLoadError", "load_backend",
           "conditioning"]

from ..errors import ModelLoadError  # one error for every kind of model
from .resolve import BUILTIN_STEPS, DEFAULT_STEPS  # noqa: F401 - the by-model steps (resolve.DEFAULTS)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Builtin:
    """A built-in model: what a sweep needs besides the options."""

    pipe: object
    classifier: object
    features: tuple
    mixture: object          # theory data: "default" (the digits split), a mixture, or None


def _default(device, dtype) -> Builtin:
    from ..features import DEFAULT_FEATURES
    from . import default

    pipe = default.load_default_pipeline(device=device)
    return Builtin(pipe, default.load_default_classifier(device=device), tuple(DEFAULT_FEATURES), "default")


def _gaussian_mixture(device, dtype) -> Builtin:
    from .exact import gaussian_mixture_model

    gm = gaussian_mixture_model(device=device)
    return Builtin(gm.pipe, gm.classifier, tuple(gm.features), gm.mixture)


def _gaussian_mixture_flow(device, dtype) -> Builtin:
    from .exact import gaussian_mixture_flow_model

    gm = gaussian_mixture_flow_model(device=device)
    return Builtin(gm.pipe, gm.classifier, tuple(gm.features), gm.mixture)


def _default_video(device, dtype) -> Builtin:
    from . import default_video as dv

    classifier = dv.load_default_video_classifier(device=device)
    return Builtin(dv.load_default_video_pipeline(device=device), classifier, dv.default_video_features(classifier),
                   dv.default_video_mixture())


BUILTIN_MODELS = {"default": _default, "gaussian-mixture": _gaussian_mixture,
                  "gaussian-mixture-flow": _gaussian_mixture_flow, "default-video": _default_video}


def conditioning(prompt=None, guidance_scale=None, class_label=None, negative_prompt=None, true_cfg_scale=None,
                 image=None) -> dict:
    """The pipeline ``__call__`` keywords of a run: ``prompt`` (text pipelines) with
    ``negative_prompt`` and ``true_cfg_scale``, ``class_labels`` (class-conditional ones: an
    index, or a name of the pipeline's ``id2label``) and, with either, ``guidance_scale``;
    ``image``: a reference image (a file name is opened as RGB, as ``load_image`` does)."""
    out = {}
    if prompt:
        out["prompt"] = prompt
        if negative_prompt is not None:
            out["negative_prompt"] = negative_prompt
        if true_cfg_scale is not None:
            out["true_cfg_scale"] = float(true_cfg_scale)
    if image is not None:
        from diffusers.utils import load_image

        out["image"] = load_image(str(image)) if isinstance(image, (str, Path)) else image
    if class_label is not None:
        text = str(class_label).strip()
        out["class_labels"] = int(text) if text.lstrip("-").isdigit() else text
    if out and guidance_scale is not None:
        out["guidance_scale"] = float(guidance_scale)
    return out


def load_backend(o: dict):
    """The `DiffusionBackend` a sweep with resolved options ``o`` runs on."""
    from ..features import labels_feature
    from .backend import DiffusionBackend

    device, dtype = o["device"], DTYPES[o["dtype"]]
    if o["model"] in BUILTIN_MODELS:
        built = BUILTIN_MODELS[o["model"]](device, dtype)
        pipe, classifier, features, mixture = built.pipe, built.classifier, built.features, built.mixture
        if o["labels"] is not None or o["clip_model"] is not None:  # other labels over the bundled CLIP
            classifier, features, mixture = _clip(o, device), None, None
        if o["dtype"] != "float32":
            _quiet_cast(pipe.unet, dtype)
    else:
        pipe = _from_pretrained(o["model"], dtype, device)
        video = _is_video(pipe)
        if o["labels"] is None and not (video and o.get("motion")):
            raise ModelLoadError(f"--labels: the pipeline {o['model']!r} needs feature labels "
                                 "(e.g. --labels 'a cat,a dog')")
        if video:
            _check_frames(pipe, o.get("num_frames"))
            from .cogvideox_dpm import loop_scheduler

            pipe.scheduler = loop_scheduler(pipe.scheduler)  # CogVideoX-5b's DPM sampler, its history kept inside
            if getattr(pipe, "vae", None) is not None and hasattr(pipe.vae, "enable_slicing"):
                pipe.vae.enable_slicing()  # a chunk of clips decodes one clip at a time (a 480p clip is large)
            classifier, features = clip_classifier(o, device)
        else:
            classifier, features = _clip(o, device), None
        mixture = None
    if features is None:
        features = (labels_feature(classifier.labels),)
    if o["scheduler"] is not None:
        from .schedule import make_scheduler

        try:
            pipe.scheduler = make_scheduler(o["scheduler"], pipe.scheduler)
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
    if device.startswith("cuda") and getattr(pipe, "unet", None) is not None:
        pipe.unet.to(memory_format=torch.channels_last)
    cond = conditioning(o["prompt"], o["guidance_scale"], o.get("class_label"), o.get("negative_prompt"),
                        o.get("true_cfg_scale"), o.get("image"))
    height, width = o.get("height"), o.get("width")
    images = None
    if o["images"]:
        from .images import load_images

        images = load_images(o["images"], pipe, height, width)[:o["samples"]]  # the first --samples, by name
    steps = o["num_inference_steps"]  # resolved by the kind (`resolve.resolve`)
    try:
        backend = DiffusionBackend(pipe, classifier, features, steps, eta=o["eta"], conditioning=cond,
                                   mixture=mixture, protocol=o["protocol"], images=images, name=o["model"],
                                   height=height, width=width, num_frames=o.get("num_frames"))
        backend.rows  # the conditioning is checked (prompt encoded) before any unit runs
    except ValueError as e:
        raise ModelLoadError(f"--model {o['model']!r}: {e}") from None
    return backend


def _is_video(pipe) -> bool:
    from .denoisers import denoiser
    from .denoisers.video import VideoDenoiser

    return isinstance(denoiser(pipe), VideoDenoiser)


def _check_frames(pipe, num_frames) -> None:
    """``--num-frames`` a video pipeline's VAE encodes: ``1 + k * temporal factor`` (else one line)."""
    from .denoisers import denoiser

    if num_frames is None:
        return
    k = denoiser(pipe).temporal_factor
    if (int(num_frames) - 1) % k:
        lo = (int(num_frames) - 1) // k * k + 1
        raise ModelLoadError(f"--num-frames: {num_frames} does not match the model: its VAE encodes 1 + {k}k frames "
                             f"({lo} or {lo + k})")


def clip_classifier(o: dict, device) -> tuple:
    """``(classifier, features)`` of clips for a video run: ``--motion`` (`video_classifiers.motion_classifier`),
    ``--labels`` (CLIP on frames: averaged, or ``--clip-frame``), or both as one joint classifier with a
    "motion" and an "appearance" feature."""
    from ..features import Feature, labels_feature
    from ..video_classifiers import frames_classifier, joint_classifier, joint_features, motion_classifier

    motion = motion_classifier(o["motion"]) if o.get("motion") else None
    frames = frames_classifier(_clip(o, device), o.get("clip_frame")) if o["labels"] is not None else None
    if motion is not None and frames is not None:
        joint = joint_classifier(motion, frames)
        return joint, joint_features(joint)
    if motion is not None:
        return motion, (Feature("motion", {label: (i,) for i, label in enumerate(motion.labels)}),)
    return frames, (labels_feature(frames.labels),)


def _quiet_cast(module, dtype):
    """``module.to(dtype)`` without diffusers' warning about modules it would keep in float32."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module.to(dtype=dtype)
    finally:
        logging.set_verbosity(level)


def _from_pretrained(name: str, dtype, device):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()  # no "Loading pipeline components" chatter
    try:
        pipe = DiffusionPipeline.from_pretrained(name, torch_dtype=dtype, local_files_only=True)  # resolved: local
    except Exception as e:  # diffusers raises many kinds; the user needs one line, and the cause kept
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"--model: cannot load {name!r}: {type(e).__name__}: {msg}".rstrip(": ")) from e
    finally:
        logging.set_verbosity(level)
    from .denoisers import denoiser

    try:
        denoiser(pipe)  # a family the toolkit restarts, else one line naming it and the supported ones
        from .noise import scheduler_kind

        scheduler_kind(pipe.scheduler)
    except ValueError as e:
        raise ModelLoadError(f"--model: {name!r}: {e}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _clip(o: dict, device):
    from ..classifiers import clip_zero_shot

    labels = o["labels"]
    if o["clip_model"] is None:
        from . import default

        return default.load_default_classifier(device=device, labels=labels)
    try:
        return clip_zero_shot(labels, model=o["clip_model"], pretrained=o["clip_pretrained"], device=device,
                              templates=o.get("templates"))
    except Exception as e:  # open_clip raises many kinds: one line naming the error, and the cause kept
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"--clip-model: cannot load {o['clip_model']!r} ({o['clip_pretrained']}): "
                             f"{type(e).__name__}: {msg}".rstrip(": ")) from e
