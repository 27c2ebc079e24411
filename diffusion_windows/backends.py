"""The registry of model kinds: which models each kind takes, its defaults, its resolution and its loader.

Every kind of model registers here, in `KINDS`, and nowhere else; `options.resolve`, the CLI's
help and `load_backend` read the registry and know no model family themselves. The registry
imports no backend: a kind's functions are named by ``"module:function"`` strings, imported
(`importlib.import_module`) only when called.

A new kind registers one `Kind` (one line in `KINDS`), with everything else inside its package:

- ``name``: the kind's name (``"diffusion"``, ``"text"``);
- ``about``: one phrase for ``--help``: its built-ins and what else it loads;
- ``models``: what help calls its models (``"language models"``), ``noun``: one of them
  (``"a language model"``, in errors);
- ``builtins``: the model names it ships (``--model NAME``);
- ``claims``: ``"module:function"``, ``(model: str) -> bool``, whether a folder or hub id is
  one of its models; None for the one kind that takes every model no other kind claims;
- ``defaults``: ``{option: value}`` for the options whose table default is None (by model),
  and ``builtin_defaults``: ``{built-in name: {option: value}}`` where a built-in differs;
- ``options``: the options only this kind takes (set with a model of another kind: an error);
- ``resolve``: ``"module:function"``, ``(o: dict, given: set) -> None``: fills and checks, in
  place, the options of its models (``given``: the names the user set); raises `OptionError`;
- ``fingerprints``: ``"module:function"``, ``(o) -> dict``: content fingerprints of what a run
  reads (weights, checkpoints, data files), recorded in ``options.json`` (`runfolder`);
- ``load``: ``"module:function"``, ``(o) -> Backend``: the engine's backend for resolved
  options ``o``; raises `ModelLoadError` (one line) when the model cannot be loaded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .errors import ModelLoadError, OptionError

__all__ = ["Kind", "KINDS", "ModelLoadError", "OptionError", "kind_of", "model_kind", "defaults_for", "call",
           "load_backend", "builtin_models"]


@dataclass(frozen=True)
class Kind:
    """One kind of model (module docstring: what each field holds)."""

    name: str
    models: str
    noun: str
    builtins: tuple
    claims: str | None
    resolve: str
    fingerprints: str
    load: str
    defaults: dict = field(default_factory=dict)
    builtin_defaults: dict = field(default_factory=dict)
    options: tuple = ()
    about: str = ""      # for --help: its built-ins and the folders it takes


_STEPS_20 = {"num_inference_steps": 20}  # the bundled models sample well in 20 steps (grid spacing 50)

KINDS: tuple = (
    Kind("diffusion", "diffusion models", "a diffusion model",
         ("default", "gaussian-mixture", "gaussian-mixture-flow"), None,
         "diffusion_windows.diffusion.resolve:resolve", "diffusion_windows.diffusion.resolve:fingerprints",
         "diffusion_windows.diffusion.models:load_backend",
         {"timesteps": "0:1000:50", "samples": 300, "restarts": 4, "edge_precision": 40, "num_inference_steps": 50},
         {"default": _STEPS_20, "gaussian-mixture": _STEPS_20, "gaussian-mixture-flow": _STEPS_20},
         ("guidance_scale", "class_label", "height", "width", "num_inference_steps", "scheduler", "eta", "labels",
          "clip_model", "clip_pretrained", "templates", "images"),
         "'default' (bundled digits DDPM), 'gaussian-mixture' (exact denoiser), 'gaussian-mixture-flow' (its "
         "flow-matching twin), a diffusers pipeline folder or a hub id in the local Hugging Face cache (UNet "
         "pipelines, SD3, Flux.1, PixArt, Sana, DiT)"),
    Kind("text", "language models", "a language model", ("default-text",), "diffusion_windows.text.resolve:claims",
         "diffusion_windows.text.resolve:resolve", "diffusion_windows.text.resolve:fingerprints",
         "diffusion_windows.text.models:load_backend",
         {"timesteps": "0:1:0.1", "samples": 60, "restarts": 16, "edge_precision": 0.1, "max_new_tokens": 64,
          "temperature": 1.0, "top_p": 1.0, "outcome": "answer"},
         # one story token (of 25) per grid step: the theory's thresholds are in tokens
         {"default-text": {"timesteps": "0:1:0.04"}},
         ("prompts", "system", "outcome", "max_new_tokens", "temperature", "top_p"),
         "'default-text' (bundled language model), a causal LM folder"),
)


def call(target: str, *args):
    """Call the function named ``"module:function"`` (imported now, not when the registry is)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def builtin_models() -> tuple:
    """Every built-in model name, of every kind."""
    return tuple(m for k in KINDS for m in k.builtins)


def kind_of(model: str) -> Kind:
    """The kind of ``model``: the one that ships it, else the first that claims it, else the catch-all."""
    for kind in KINDS:
        if model in kind.builtins:
            return kind
    for kind in KINDS:
        if kind.claims is not None and call(kind.claims, model):
            return kind
    return next(k for k in KINDS if k.claims is None)


def model_kind(model: str) -> str:
    """The name of ``model``'s kind (``"diffusion"``, ``"text"``)."""
    return kind_of(model).name


def defaults_for(model: str) -> dict:
    """The by-model defaults ``model`` runs with (its kind's, and its own where it is a built-in)."""
    kind = kind_of(model)
    return {**kind.defaults, **kind.builtin_defaults.get(model, {})}


def load_backend(o: dict):
    """The backend a run with resolved options ``o`` runs on."""
    return call(kind_of(o["model"]).load, o)
