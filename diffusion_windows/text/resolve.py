"""What the text kind knows of its models before any loads: the bundled model and causal LM folders.

Registered in `diffusion_windows.backends` (the kind ``"text"``), with its built-in, defaults and
options below: `claims` says which models are
language models (a folder with a ``config.json`` and no diffusers ``model_index.json``),
`resolve` fills and checks the options only a language model has (the grid of fractions,
prompts, outcome), `fingerprints` records the content of its weights and prompts file.

Time: the fraction of a response's tokens removed before a restart, in ``[0, 1]``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..options import parse_auto

__all__ = ["BUILTINS", "MODELS", "NOUN", "ABOUT", "OPTIONS", "DEFAULTS", "BUILTIN_DEFAULTS", "claims", "resolve",
           "fingerprints", "parse_fractions", "read_prompts", "check_prompts", "default_lm_folder"]

# ----------------------------------------------------------------------------- the registration (backends.py)
DEFAULT_TEXT = "default-text"   # the bundled story/addition language model (text.default)
BUILTINS = (DEFAULT_TEXT,)
MODELS, NOUN = "language models", "a language model"
ABOUT = "'default-text' (bundled language model), a causal LM folder"
OPTIONS = ("prompts", "system", "outcome", "max_new_tokens", "temperature", "top_p")
DEFAULTS = {"timesteps": "0:1:0.1", "samples": 60, "restarts": 16, "edge_precision": 0.1, "max_new_tokens": 64,
            "temperature": 1.0, "top_p": 1.0, "outcome": "answer"}
# one story token (of 25) per grid step: the theory's thresholds are in tokens
BUILTIN_DEFAULTS = {DEFAULT_TEXT: {"timesteps": "0:1:0.04"}}


def claims(model: str) -> bool:
    """A folder holding a model ``config.json`` and no diffusers ``model_index.json`` is a language model."""
    p = Path(model)
    return p.is_dir() and not (p / "model_index.json").is_file() and (p / "config.json").is_file()


def default_lm_folder() -> Path:
    """``assets/default_lm``: the bundled language model's folder."""
    from ..bundled import asset

    return asset("default_lm", "config.json", "default language model")


def resolve(o: dict, given: set):
    """Fill and check, in place, the options of a language model (``given``: the names set by the user)."""
    o["timesteps"] = parse_fractions(o["timesteps"])
    if o["protocol"] != "noise":
        raise OptionError(f"--protocol: {o['protocol']!r}: a language model restarts from its response's prefixes")
    if o["model"] in BUILTINS:
        for name in ("prompt", "prompts", "outcome", "system"):
            if name in given:
                raise OptionError(f"--{name}: the built-in model {o['model']!r} has its own tasks and outcomes")
        o["outcome"] = "default"
        return
    check_prompts(o, "language model")


def check_prompts(o: dict, noun: str) -> None:
    """The prompts and outcome of a language model folder (causal or masked, ``noun``): one prompt source,
    none empty, an outcome that exists and has the references it needs (one-line `OptionError`)."""
    if o["prompt"] is None and o["prompts"] is None:
        raise OptionError(f"--prompt: the {noun} {o['model']!r} needs --prompt or --prompts")
    if o["prompt"] is not None and o["prompts"] is not None:
        raise OptionError("--prompts: give --prompt or --prompts, not both")
    if not o["prompt"] and o["prompt"] is not None:
        raise OptionError("--prompt: '' is empty")
    if o["prompts"] is not None:
        read_prompts(o["prompts"])
        o["prompts"] = str(Path(o["prompts"]).resolve())
    from .outcomes import make_outcome

    try:
        outcome = make_outcome(o["outcome"])
    except ValueError as e:
        raise OptionError(f"--outcome: {e}") from None
    if outcome.needs_reference and (o["prompts"] is None or any(r is None for _, r in read_prompts(o["prompts"]))):
        raise OptionError(f"--outcome: {o['outcome']!r} needs a reference answer for every prompt (--prompts FILE "
                          "with a \"reference\" on every line)")

def fingerprints(o: dict) -> dict:
    """Content fingerprints of the model folder and the prompts file (`engine.fingerprint`)."""
    from ..engine import fingerprint as fp

    folder = default_lm_folder() if o["model"] in BUILTINS else Path(o["model"])
    out = {"model": fp.folder_fingerprint(folder), "model_revision": None, "clip": None, "images": None}
    if o.get("prompts") is not None:
        out["prompts"] = fp.images_fingerprint([o["prompts"]])
    return out


def parse_fractions(spec):
    """``--timesteps`` of a language model: "auto", "0,0.5,1" or "START:STOP:STEP" (STOP included) ->
    "auto" or sorted fractions of the response removed, in [0, 1]."""
    if isinstance(spec, (list, tuple)):
        values = [float(v) for v in spec]
    else:
        spec = str(spec).strip()
        auto = parse_auto(spec, parse_fractions)  # "auto" or "auto:START:STOP:STEP"
        if auto is not None:
            return auto
        try:
            if ":" in spec:
                start, stop, step = (float(p) for p in spec.split(":"))
                if not all(math.isfinite(v) for v in (start, stop, step)):
                    raise OptionError(f"--timesteps: {spec!r} is not a finite range")
                if step <= 0:
                    raise OptionError(f"--timesteps: step {step:g} in {spec!r} must be positive")
                values = list(np.arange(start, stop + step * 1e-6, step)) if stop >= start else []
            else:
                values = [float(p) for p in spec.split(",") if p.strip()]
        except ValueError:
            raise OptionError(f"--timesteps: {spec!r} is not fractions: 'auto', 'a,b,c' or START:STOP:STEP") from None
    if not values:
        raise OptionError(f"--timesteps: {spec!r} holds no fraction")
    for v in values:
        if not math.isfinite(v) or not 0 <= v <= 1 + 1e-9:
            raise OptionError(f"--timesteps: {v!r} is not a fraction of the response in [0, 1]")
    return sorted({round(min(float(v), 1.0), 6) for v in values})


def read_prompts(path) -> list:
    """``[(prompt, reference or None)]`` from a JSON-lines file (``{"prompt": ..., "reference": ...}`` per line)."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"--prompts: {str(path)!r} is not a file")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise OptionError(f"--prompts: line {i} of {str(path)!r} is not JSON ({e.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not d["prompt"].strip():
            raise OptionError(f"--prompts: line {i} of {str(path)!r} has no \"prompt\" text")
        out.append((d["prompt"], d.get("reference")))
    if not out:
        raise OptionError(f"--prompts: {str(path)!r} holds no prompt")
    return out
