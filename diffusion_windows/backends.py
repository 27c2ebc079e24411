"""The registry of model kinds: which models each kind takes, its defaults, its resolution and its loader.

Every kind of model registers here, in `KINDS`, and nowhere else; `options.resolve`, the CLI's
help and `load_backend` read the registry and know no model family themselves. The registry
imports no backend: a kind names its modules by path (strings), imported with
`importlib.import_module` only when a model is resolved or loaded.

A new kind is a change inside its own package plus one `Kind` line in `KINDS`:
``Kind(name, resolution, load, catch_all=False)`` where

- ``name`` is the kind's name (``"diffusion"``, ``"text"``);
- ``load`` is ``"module:function"``, ``(o: dict) -> Backend``: the engine's backend for resolved
  options ``o``; it raises `ModelLoadError` (one line) when the model cannot be loaded;
- ``catch_all``: the kind takes every model no other kind claims (exactly one kind);
- ``resolution`` is the path of the package's resolution module, which defines
  - ``BUILTINS``: the model names the kind ships (``--model NAME``);
  - ``MODELS``: what help calls its models (``"language models"``); ``NOUN``: one of them, for
    errors (``"a language model"``); ``ABOUT``: one phrase for ``--help`` naming its built-ins
    and what else it loads;
  - ``OPTIONS``: the options only this kind takes (set with a model of another kind: an error);
  - ``DEFAULTS``: ``{option: value}`` for the options whose table default is None (set by the
    model), and ``BUILTIN_DEFAULTS``: ``{built-in name: {option: value}}`` where a built-in differs;
  - ``claims(model: str) -> bool``: whether a folder or hub id is one of its models (only read
    for kinds that are not the catch-all);
  - ``resolve(o: dict, given: set) -> None``: fills and checks, in place, the options of its
    models (``given``: the names the user set); raises `OptionError` (one line);
  - ``fingerprints(o: dict) -> dict``: content fingerprints of what a run reads (weights,
    checkpoints, data files), recorded in ``options.json`` and checked on a resume (`runfolder`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import ModelLoadError, OptionError

__all__ = ["Kind", "KINDS", "ModelLoadError", "OptionError", "kind_of", "model_kind", "defaults_for",
           "load_backend", "builtin_models"]


def _target(path: str):
    """The object named ``"module:name"`` (or the module ``"module"``), imported now."""
    module, _, name = path.partition(":")
    m = importlib.import_module(module)
    return getattr(m, name) if name else m


@dataclass(frozen=True)
class Kind:
    """One kind of model (module docstring: what it registers)."""

    name: str
    resolution: str        # module path of the kind's resolution module
    load: str              # "module:function" (o) -> Backend
    catch_all: bool = False

    @property
    def spec(self):
        """The resolution module (imported on first use): ``kind.spec.BUILTINS``, ``kind.spec.resolve(o, given)``."""
        return _target(self.resolution)

    def backend(self, o: dict):
        """The backend of resolved options ``o`` (the kind's loader)."""
        return _target(self.load)(o)


KINDS: tuple = (
    Kind("diffusion", "diffusion_windows.diffusion.resolve", "diffusion_windows.diffusion.models:load_backend",
         catch_all=True),
    Kind("masked", "diffusion_windows.masked.resolve", "diffusion_windows.masked.models:load_backend"),
    Kind("text", "diffusion_windows.text.resolve", "diffusion_windows.text.models:load_backend"),
)


def builtin_models() -> tuple:
    """Every built-in model name, of every kind."""
    return tuple(m for k in KINDS for m in k.spec.BUILTINS)


def kind_of(model: str) -> Kind:
    """The kind of ``model``: the one that ships it, else the first that claims it, else the catch-all."""
    for kind in KINDS:
        if model in kind.spec.BUILTINS:
            return kind
    for kind in KINDS:
        if not kind.catch_all and kind.spec.claims(model):
            return kind
    return next(k for k in KINDS if k.catch_all)


def model_kind(model: str) -> str:
    """The name of ``model``'s kind (``"diffusion"``, ``"text"``)."""
    return kind_of(model).name


def defaults_for(model: str) -> dict:
    """The by-model defaults ``model`` runs with (its kind's, and its own where it is a built-in)."""
    kind = kind_of(model)
    return {**kind.spec.DEFAULTS, **kind.spec.BUILTIN_DEFAULTS.get(model, {})}


def load_backend(o: dict):
    """The backend a run with resolved options ``o`` runs on."""
    return kind_of(o["model"]).backend(o)
