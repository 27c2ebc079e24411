"""The options of a run, defined once: `OPTIONS`, one `Option` each (default, type, help, check).

From the table come the CLI's flags (`build_parser`: ``--num-inference-steps`` for
``num_inference_steps``), the keywords of `run_sweep`, and `measure_window`'s defaults (its
own smaller ones, `Option.library`, beside the sweep's). `resolve(options)` fills defaults,
checks every value (one `OptionError` line naming the bad value; the CLI prints ``error: ...``
and exits 2) and returns the plain dict written to ``options.json``, before any model loads.
Options marked ``result=False`` (output folder, device, batch size, number of processes, theory)
may differ when a run resumes into a folder; every other one must match (`check_resume`),
and so must the content fingerprints of the weights and images (`engine.fingerprint`).

Time: every time here is in the model's unit: training timesteps of the scheduler for
diffusion pipelines (an integer in ``[0, num_train_timesteps)``); for flow-matching models
(a ``FlowMatch*`` scheduler or one with ``use_flow_sigmas``, ``--scheduler flow-*``, the
built-in ``gaussian-mixture-flow``) ``1000 sigma``: any number in ``[0, 1000]``, fractions
allowed (`parse_timesteps`). Which unit a model folder uses is read from its
``scheduler/scheduler_config.json`` (no diffusers import here).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_MODEL = "default"           # the bundled digits DDPM (diffusion_windows.diffusion.default)
GAUSSIAN_MIXTURE = "gaussian-mixture"  # exact denoiser of a known mixture (diffusion_windows.diffusion.exact)
GAUSSIAN_MIXTURE_FLOW = "gaussian-mixture-flow"  # the same mixture as a flow-matching model
DEFAULT_TEXT = "default-text"       # the bundled story/addition language model (diffusion_windows.text.default)
BUILTIN_MODELS = (DEFAULT_MODEL, GAUSSIAN_MIXTURE, GAUSSIAN_MIXTURE_FLOW, DEFAULT_TEXT)
TEXT_MODELS = (DEFAULT_TEXT,)
FLOW_SCHEDULERS = ("flow-ancestral", "flow-euler")  # diffusion.schedule.FLOW_SCHEDULERS
# per kind of model: the defaults of the options whose table default is None ("by model")
KIND_DEFAULTS = {
    "diffusion": {"timesteps": "0:1000:50", "samples": 300, "restarts": 4, "edge_precision": 40},
    "text": {"timesteps": "0:1:0.1", "samples": 60, "restarts": 16, "edge_precision": 0.1, "max_new_tokens": 64,
             "temperature": 1.0, "top_p": 1.0, "outcome": "answer"},
}
DIFFUSION_ONLY = ("guidance_scale", "class_label", "height", "width", "num_inference_steps", "scheduler", "eta",
                  "labels", "clip_model", "clip_pretrained", "templates", "images")
TEXT_ONLY = ("prompts", "system", "outcome", "max_new_tokens", "temperature", "top_p")
PROTOCOLS = ("noise", "branch")
DTYPES = ("float32", "float16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class OptionError(ValueError):
    """A bad option value; the message is one line naming the value."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- per-option checks
def _at_least(low):
    def check(name, v):
        if v < low:
            raise OptionError(f"{_flag(name)}: {v} must be at least {low}")
    return check


def _open_unit(name, v):
    if not 0 < v < 1:
        raise OptionError(f"{_flag(name)}: {v} must lie strictly between 0 and 1")


def _positive(name, v):
    if not v > 0:
        raise OptionError(f"{_flag(name)}: {v} must be positive")


def _non_negative(name, v):
    if v < 0:
        raise OptionError(f"{_flag(name)}: {v} must not be negative")


def _non_empty(name, v):
    if not str(v).strip():
        raise OptionError(f"{_flag(name)}: {v!r} is empty")


def _unit_interval(name, v):
    if not 0 <= v <= 1:
        raise OptionError(f"{_flag(name)}: {v} must lie in [0, 1]")


def _one_of(choices):
    def check(name, v):
        if v not in choices():
            raise OptionError(f"{_flag(name)}: {v!r} is not one of {', '.join(choices())}")
    return check


def _batch_size(name, v):
    if v == "auto":
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise OptionError(f"{_flag(name)}: {v!r} is neither an integer nor 'auto'")
    if v < 1:
        raise OptionError(f"{_flag(name)}: {v} must be at least 1")


def int_or_auto(text):
    """CLI value of --batch-size: 'auto' or an integer."""
    if str(text).strip() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer nor 'auto'") from None


def _schedulers():
    from .diffusion.schedule import SCHEDULERS

    return tuple(SCHEDULERS)


_NOT_LIBRARY = object()   # the option is not an argument of measure_window
_SAME = object()          # measure_window's default is the sweep's


@dataclass(frozen=True)
class Option:
    """One option: its sweep default, type, help line, check, and measure_window's default."""

    name: str
    default: object
    kind: object               # int, float, bool, str, None (a value parsed later) or a CLI parser
    help: str
    result: bool = True        # changes results: must match on a resume into the same folder
    library: object = _SAME    # measure_window's own default (_NOT_LIBRARY: not its argument)
    check: Callable | None = None   # (name, value) -> None; raises OptionError

    @property
    def flag(self) -> str:
        return _flag(self.name)


OPTIONS: tuple = (
    Option("model", DEFAULT_MODEL, str, "'default' (bundled digits DDPM), 'gaussian-mixture' (exact denoiser), "
           "'gaussian-mixture-flow' (its flow-matching twin), 'default-text' (bundled language model), a diffusers "
           "pipeline folder or hub id (UNet pipelines, SD3, Flux.1, PixArt, Sana, DiT), or a causal LM folder",
           library=_NOT_LIBRARY),
    Option("prompt", None, str, "prompt of text pipelines and of language models"),
    Option("guidance_scale", None, float, "guidance scale (classifier-free; Flux dev: its guidance embedding)",
           check=_non_negative),
    Option("class_label", None, str, "class of class-conditional pipelines (DiT): an index or a name of its id2label",
           check=_non_empty),
    Option("height", None, int, "image height in pixels (default: the pipeline's)", check=_at_least(1)),
    Option("width", None, int, "image width in pixels (default: the pipeline's)", check=_at_least(1)),
    Option("num_inference_steps", None, int, "steps of the sampling grid (default: 20 for the built-in models, "
           "else 50)", library=50, check=_at_least(1)),
    Option("scheduler", None, str, "swap the pipeline's scheduler: ddpm, ddim, euler, euler-ancestral, heun, dpm++, "
           "unipc, pndm; flow-matching models: flow-ancestral (samples), flow-euler (the ODE)", library=_NOT_LIBRARY,
           check=_one_of(_schedulers)),
    Option("eta", None, float, "DDIM eta (default 1.0 for DDIM: a stochastic sampler)", check=_unit_interval),
    Option("labels", None, str, "comma-separated CLIP zero-shot labels (default: the model's built-in features)",
           library=_NOT_LIBRARY),
    Option("clip_model", None, str, "open_clip model name (default: the bundled tiny CLIP)", library=_NOT_LIBRARY),
    Option("clip_pretrained", None, str, "open_clip pretrained tag or checkpoint path", library=_NOT_LIBRARY),
    Option("templates", None, str, "CLIP prompt templates: 'plain' (the label is the prompt), a file with one per "
           "line, or 'a photo of {}.|a drawing of {}.' (default: CLIP's, without their article for labels that "
           "have one)", library=_NOT_LIBRARY),
    Option("samples", None, int, "base samples generated by the model, each with its own seed (default: 300; "
           "language models: 60)", library=8, check=_at_least(1)),
    Option("images", None, str, "folder of real images to use as base samples", library=_NOT_LIBRARY),
    Option("protocol", "noise", str, "noise: re-noise x0 each restart; branch: restart from the trajectory's own x_t",
           check=_one_of(lambda: PROTOCOLS)),
    Option("timesteps", None, None, "'auto', 't1,t2,...' or START:STOP:STEP: training timesteps, STOP excluded "
           "(default 0:1000:50; flow-matching models: 1000 sigma in [0, 1000], fractions allowed); language "
           "models: fractions of the response removed, STOP included (default 0:1:0.1)", library="0:1000:100"),
    Option("restarts", None, int, "re-samples per base sample and timestep, with --timesteps auto: at most "
           "(default: 4; language models: 16)", library=8, check=_at_least(1)),
    Option("tolerance", 0.1, float, "retention tolerance delta at both window edges", check=_open_unit),
    Option("edge_precision", None, float, "with --timesteps auto: the bootstrap interval each edge aims at, and "
           "the widest bracket of timesteps left around it (default: 40 timesteps; language models: 0.1 of the "
           "response)", library=40, check=_positive),
    Option("initial_restarts", None, int, "with --timesteps auto: re-samples a new (base sample, timestep) starts "
           "with (default: a quarter of --restarts, at least 1 and at most 2; a timestep inside or below an "
           "edge's bracket starts with one); more are added, up to --restarts, where they move an edge, or narrow "
           "its interval, the most per model evaluation",
           check=_at_least(1)),
    Option("max_evaluations", None, int, "with --timesteps auto: a budget of model evaluations (re-samples, and "
           "base samples made beyond --samples); the search stops when its edges reach --edge-precision or the "
           "budget is spent, and spends what is left on more re-samples and base samples where they narrow an "
           "edge (default: no budget; then no base samples beyond --samples)", check=_at_least(1)),
    Option("out", None, str, "output folder (default: dw_runs/<model>-seed<seed>)", result=False),
    Option("seed", 0, int, "run seed", check=_non_negative),
    Option("device", "cpu", str, "torch device (cpu, cuda, cuda:1, ...)", result=False, library=_NOT_LIBRARY),
    Option("dtype", "float32", str, "model dtype: float32, float16, bfloat16", library=_NOT_LIBRARY,
           check=_one_of(lambda: DTYPES)),
    Option("batch_size", 512, int_or_auto, "largest batch of re-samples per model call (decode and classify too); "
           "'auto' on CUDA: the largest that fits, found once by trial and kept in options.json", result=False,
           check=_batch_size),
    Option("theory", True, bool, "compute the theory beside the measurement (--no-theory: skip it)", result=False),
    # language models
    Option("prompts", None, str, "language models: a JSON-lines file, one {\"prompt\": ..., \"reference\": ...} "
           "per line (the reference answer is optional)", library=_NOT_LIBRARY),
    Option("system", None, str, "language models: a system prompt (with the tokenizer's chat template)",
           library=_NOT_LIBRARY),
    Option("outcome", None, str, "language models: the outcome classified: regex:PATTERN, answer, choices:a,b,c, "
           "correct (against each prompt's reference) (default: answer)", library=_NOT_LIBRARY),
    Option("max_new_tokens", None, int, "language models: most tokens of a response (default 64)",
           library=_NOT_LIBRARY, check=_at_least(1)),
    Option("temperature", None, float, "language models: sampling temperature (default 1; 0: greedy, deterministic)",
           library=_NOT_LIBRARY, check=_non_negative),
    Option("top_p", None, float, "language models: nucleus sampling mass (default 1)", library=_NOT_LIBRARY,
           check=_unit_interval),
)

BY_NAME = {o.name: o for o in OPTIONS}
DEFAULTS = {o.name: o.default for o in OPTIONS}
LIBRARY_DEFAULTS = {o.name: (o.default if o.library is _SAME else o.library) for o in OPTIONS
                    if o.library is not _NOT_LIBRARY}
NON_RESULT_OPTIONS = tuple(o.name for o in OPTIONS if not o.result) + ("batch_size_auto",)


# ----------------------------------------------------------------------------- values
def check_values(o: dict, names=None) -> dict:
    """Type, finiteness and the per-option check of each option in ``names`` (default: all of ``o``)."""
    for name in names if names is not None else list(o):
        opt, v = BY_NAME[name], o[name]
        if v is None or opt.kind not in (int, float, bool):
            if v is not None and opt.check is not None:
                opt.check(name, v)
            continue
        if opt.kind is bool:
            if not isinstance(v, bool):
                raise OptionError(f"{opt.flag}: {v!r} is not True or False")
            continue
        if opt.kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise OptionError(f"{opt.flag}: {v!r} is not an integer")
        if opt.kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise OptionError(f"{opt.flag}: {v!r} is not a number")
            if not math.isfinite(v):  # NaN slips through comparisons (nan < 0 is False): refuse it first
                raise OptionError(f"{opt.flag}: {v!r} is not a finite number")
            o[name] = v = float(v) if not isinstance(v, int) else v
        if opt.check is not None:
            opt.check(name, v)
    return o


def parse_timesteps(spec, num_train_timesteps: int, flow: bool = False):
    """Parse ``--timesteps``: "auto", "50,100,400" or "START:STOP:STEP" -> "auto" or sorted ints.

    Values are training timesteps in ``[0, num_train_timesteps)``. With ``flow`` (flow-matching
    models) they are ``1000 sigma``: numbers in ``[0, num_train_timesteps]``, fractions allowed
    (a range steps by any positive number; whole values stay ints).
    """
    T = num_train_timesteps
    auto = _auto(spec, lambda grid: parse_timesteps(grid, T, flow))  # "auto" or "auto:START:STOP:STEP"
    if auto is not None:
        return auto
    parts = _spec_parts(spec, _flow_number if flow else _int)
    if parts == "auto":
        return "auto"
    if isinstance(parts, tuple):
        start, stop, step = parts
        if flow:
            if stop > T + step:
                raise OptionError(f"--timesteps: stop {stop} in {spec!r} is above {T} (1000 sigma)")
            values, k = [], 0
            while start + k * step < stop - 1e-9:
                values.append(_flow_number(start + k * step, spec))
                k += 1
        else:
            for v in (start, stop):
                if v < 0:
                    raise OptionError(f"--timesteps: {v} in {spec!r} is negative")
            if start >= T:
                raise OptionError(f"--timesteps: start {start} in {spec!r} is not below {T}")
            if stop > T:
                raise OptionError(f"--timesteps: stop {stop} in {spec!r} is above {T}")
            values = list(range(start, stop, step))
        if not values:
            raise OptionError(f"--timesteps: range {spec!r} is empty")
    else:
        values = parts
    for v in values:
        if flow and (v < 0 or v > T):
            raise OptionError(f"--timesteps: {v} is outside [0, {T}] (flow matching: 1000 sigma)")
        if not flow and v < 0:
            raise OptionError(f"--timesteps: {v} is negative; timesteps lie in [0, {T})")
        if not flow and v >= T:
            raise OptionError(f"--timesteps: {v} is not below num_train_timesteps={T}")
    return sorted(set(values))


def _auto(spec, parse_grid):
    """``--timesteps auto[:GRID]`` -> "auto" or "auto:t1,t2,..." (GRID read by ``parse_grid``); None: not auto."""
    from .engine.adaptive import auto_spec, parse_auto_spec

    try:
        grid = parse_auto_spec(spec)
    except ValueError as e:
        raise OptionError(str(e)) from None
    return grid if grid in (None, "auto") else auto_spec(parse_grid(grid))


def _spec_parts(spec, number):
    """A ``--timesteps`` value -> "auto", ``(start, stop, step)`` (step checked positive) or a
    list of numbers, each read by ``number(text, spec)``."""
    if isinstance(spec, (list, tuple)):
        return [number(v, spec) for v in spec]
    spec = str(spec).strip()
    if spec == "auto":
        return "auto"
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise OptionError(f"--timesteps: {spec!r} is not START:STOP:STEP")
        start, stop, step = (number(p, spec) for p in parts)
        if step <= 0:
            raise OptionError(f"--timesteps: step {step} in {spec!r} must be positive")
        return start, stop, step
    values = [number(p, spec) for p in spec.split(",") if p.strip() != ""]
    if not values:
        raise OptionError(f"--timesteps: {spec!r} holds no timestep")
    return values


def _finite(text, spec) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise OptionError(f"--timesteps: {str(text).strip()!r} in {spec!r} is not a number") from None
    if not math.isfinite(value):
        raise OptionError(f"--timesteps: {str(text).strip()!r} in {spec!r} is not a finite number")
    return value


def _int(text, spec):
    value = _finite(text, spec)
    if value != int(value):
        raise OptionError(f"--timesteps: {text!r} is not an integer training timestep")
    return int(value)


def _flow_number(text, spec):
    value = round(_finite(text, spec), 6)  # ranges with fractional steps: no 0.30000000000000004
    return int(value) if value == int(value) else value


def parse_labels(labels):
    """``"a,b,c"`` or a sequence -> tuple of at least two distinct non-empty labels."""
    if labels is None:
        return None
    items = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s).strip() for s in labels]
    items = [s for s in items if s]
    if len(items) < 2:
        raise OptionError(f"--labels: {labels!r} needs at least two labels separated by commas")
    if len(set(items)) != len(items):
        raise OptionError(f"--labels: {labels!r} repeats a label")
    return tuple(items)


def list_images(folder) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise OptionError(f"--images: {str(folder)!r} is not a folder")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise OptionError(f"--images: {str(folder)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


# ----------------------------------------------------------------------------- the model
def model_index(model: str) -> dict | None:
    """The ``model_index.json`` of a local pipeline folder; None for hub ids and built-ins."""
    if model in BUILTIN_MODELS:
        return None
    p = Path(model)
    # "org/name" that is not a local folder is a hub id: checked when it loads (offline, it fails there)
    looks_local = p.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1
    if not looks_local:
        return None
    if not p.is_dir():
        raise OptionError(f"--model: {model!r} does not exist")
    index = p / "model_index.json"
    if not index.is_file():
        raise OptionError(f"--model: {model!r} is not a diffusers pipeline folder (no model_index.json)")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise OptionError(f"--model: {index} is not valid JSON ({e.msg})") from None


def _num_train_timesteps(model: str, info: dict | None) -> int:
    if info is None:  # built-in models, and hub ids (every Stable Diffusion-family scheduler uses 1000)
        return 1000
    cfg = Path(model) / "scheduler" / "scheduler_config.json"
    if cfg.is_file():
        try:
            return int(json.loads(cfg.read_text()).get("num_train_timesteps", 1000))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise OptionError(f"--model: {cfg} is not a valid scheduler config") from None
    raise OptionError(f"--model: {model!r} has no scheduler/scheduler_config.json")


def is_text_model(info: dict | None) -> bool:
    """Whether a pipeline folder's components make it a text-conditioned pipeline."""
    return bool(info) and any(k in info for k in ("text_encoder", "tokenizer", "text_encoder_2", "text_encoder_3",
                                                  "tokenizer_2", "tokenizer_3"))


def is_class_model(info: dict | None) -> bool:
    """Whether a pipeline folder holds a class-conditional pipeline (DiT)."""
    if not info:
        return False
    transformer = info.get("transformer") or [None, None]
    return info.get("_class_name") == "DiTPipeline" or (isinstance(transformer, list)
                                                       and transformer[-1] == "DiTTransformer2DModel")


def is_flow_model(model: str, info: dict | None, scheduler: str | None = None) -> bool | None:
    """Whether the run's times are ``1000 sigma`` (flow matching): a ``--scheduler flow-*``, the built-in
    flow model, or a folder whose scheduler is a ``FlowMatch*`` one or has ``use_flow_sigmas``;
    None when unknown before loading (a hub id)."""
    if scheduler is not None:
        return scheduler in FLOW_SCHEDULERS
    if model == GAUSSIAN_MIXTURE_FLOW:
        return True
    if model in BUILTIN_MODELS:
        return False
    if info is None:
        return None
    cfg = Path(model) / "scheduler" / "scheduler_config.json"
    try:
        c = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return str(c.get("_class_name", "")).startswith("FlowMatch") or bool(c.get("use_flow_sigmas", False))


def _check_device(device: str):
    import torch  # torch is imported, no model is loaded

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError(f"--device: {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device: {device!r} is not available (no CUDA device here)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OptionError(f"--device: {device!r} is not available ({torch.cuda.device_count()} CUDA devices)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"--device: {device!r} is not available")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise OptionError(f"--device: {device!r} is not supported (cpu, cuda, mps)")


# ----------------------------------------------------------------------------- resolve
def model_kind(model: str) -> str:
    """"text" for the bundled language model and folders holding a model config but no diffusers
    ``model_index.json``; "diffusion" otherwise (built-ins, pipeline folders, hub ids)."""
    if model in TEXT_MODELS:
        return "text"
    p = Path(model)
    if p.is_dir() and not (p / "model_index.json").is_file() and (p / "config.json").is_file():
        return "text"
    return "diffusion"


def resolve(options: dict) -> dict:
    """Fill defaults and validate; returns the resolved options (JSON-ready). Raises OptionError."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r}; valid: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    o["model"] = str(o["model"])
    check_values(o)
    given = {k for k, v in options.items() if v is not None}
    kind = model_kind(o["model"])
    for name, default in KIND_DEFAULTS[kind].items():
        if o[name] is None:
            o[name] = default
    other = TEXT_ONLY if kind == "diffusion" else DIFFUSION_ONLY
    wrong = [k for k in other if o[k] is not None]
    if wrong:
        what = "a language model" if kind == "text" else "a diffusion model"
        raise OptionError(f"{_flag(wrong[0])}: {_show(o[wrong[0]])} does not apply to {what} ({o['model']!r})")
    if kind == "text":
        _resolve_text(o, given)
    else:
        _resolve_diffusion(o)
    if o["initial_restarts"] is not None and o["initial_restarts"] > o["restarts"]:
        raise OptionError(f"--initial-restarts: {o['initial_restarts']} must not exceed --restarts {o['restarts']}")
    if o["out"] is None:
        o["out"] = str(Path("dw_runs") / f"{Path(o['model']).name or 'model'}-seed{o['seed']}")
    out = Path(o["out"])
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out: {str(out)!r} is a file, not a folder")
    _check_device(o["device"])
    o["out"] = str(out)
    o["fingerprints"] = fingerprints(o)
    return o


def _resolve_diffusion(o: dict):
    info = model_index(o["model"])
    T = _num_train_timesteps(o["model"], info)
    flow = is_flow_model(o["model"], info, o["scheduler"])
    _check_scheduler_family(o, info)
    o["timesteps"] = parse_timesteps(o["timesteps"], T, flow=bool(flow))
    o["labels"] = parse_labels(o["labels"])
    if is_text_model(info) and not o["prompt"]:
        raise OptionError(f"--prompt: the text pipeline {o['model']!r} needs a prompt")
    if o["model"] in BUILTIN_MODELS and o["prompt"]:
        raise OptionError(f"--prompt: the built-in model {o['model']!r} takes no prompt")
    if is_class_model(info) and o["class_label"] is None:
        raise OptionError(f"--class-label: the class-conditional pipeline {o['model']!r} needs a class label")
    if o["class_label"] is not None and (o["model"] in BUILTIN_MODELS or (info and not is_class_model(info))):
        raise OptionError(f"--class-label: {o['model']!r} is not a class-conditional pipeline")
    if (o["height"] is not None or o["width"] is not None) and o["model"] in BUILTIN_MODELS:
        raise OptionError(f"--height/--width: the built-in model {o['model']!r} has one size")
    if o["model"] not in BUILTIN_MODELS and o["labels"] is not None and o["clip_model"] is None:
        # the bundled tiny CLIP knows 8x8 digits only: it would label photos at random, silently
        raise OptionError(f"--labels: the pipeline {o['model']!r} needs a CLIP to classify them; "
                          "pass --clip-model (and --clip-pretrained)")
    if o["images"] is not None:
        files = list_images(o["images"])
        o["images"] = str(Path(o["images"]).resolve())
        o["samples"] = len(files)
        if o["protocol"] == "branch":
            raise OptionError("--protocol: 'branch' restarts from a generation's own states; real --images have none")
    if o["clip_model"] is not None:
        import open_clip

        if o["clip_model"] not in open_clip.list_models() and not Path(o["clip_model"]).exists():
            raise OptionError(f"--clip-model: {o['clip_model']!r} is not an open_clip model")
    if o["templates"] is not None:
        from .classifiers import parse_templates

        try:
            o["templates"] = list(parse_templates(o["templates"]))
        except ValueError as e:
            raise OptionError(str(e)) from None
        if o["clip_model"] is None:
            raise OptionError(f"--templates: {o['templates']!r} needs --clip-model (the bundled CLIP has its own)")
    if o["clip_pretrained"] is not None and o["clip_model"] is None:
        raise OptionError(f"--clip-pretrained: {o['clip_pretrained']!r} needs --clip-model")
    if o["model"] in (GAUSSIAN_MIXTURE, GAUSSIAN_MIXTURE_FLOW) and (o["labels"] or o["clip_model"]):
        raise OptionError(f"--labels: the {o['model']} model is classified by its own posterior")
    o["num_train_timesteps"] = T


def _resolve_text(o: dict, given):
    if o["model"] in TEXT_MODELS and "timesteps" not in given:
        o["timesteps"] = "0:1:0.04"  # one story token (of 25) per grid step: the theory's thresholds are in tokens
    o["timesteps"] = parse_fractions(o["timesteps"])
    if o["protocol"] != "noise":
        raise OptionError(f"--protocol: {o['protocol']!r}: a language model restarts from its response's prefixes")
    if o["model"] in TEXT_MODELS:
        for name in ("prompt", "prompts", "outcome", "system"):
            if name in given:
                raise OptionError(f"{_flag(name)}: the built-in model {o['model']!r} has its own tasks and outcomes")
        o["outcome"] = "default"
        return
    if o["prompt"] is None and o["prompts"] is None:
        raise OptionError(f"--prompt: the language model {o['model']!r} needs --prompt or --prompts")
    if o["prompt"] is not None and o["prompts"] is not None:
        raise OptionError("--prompts: give --prompt or --prompts, not both")
    if not o["prompt"] and o["prompt"] is not None:
        raise OptionError("--prompt: '' is empty")
    if o["prompts"] is not None:
        read_prompts(o["prompts"])
        o["prompts"] = str(Path(o["prompts"]).resolve())
    from .text.outcomes import make_outcome

    try:
        outcome = make_outcome(o["outcome"])
    except ValueError as e:
        raise OptionError(f"--outcome: {e}") from None
    if outcome.needs_reference and (o["prompts"] is None or any(r is None for _, r in read_prompts(o["prompts"]))):
        raise OptionError(f"--outcome: {o['outcome']!r} needs a reference answer for every prompt (--prompts FILE "
                          "with a \"reference\" on every line)")


def parse_fractions(spec):
    """``--timesteps`` of a language model: "auto", "0,0.5,1" or "START:STOP:STEP" (STOP included) ->
    "auto" or sorted fractions of the response removed, in [0, 1]."""
    if isinstance(spec, (list, tuple)):
        values = [float(v) for v in spec]
    else:
        spec = str(spec).strip()
        auto = _auto(spec, parse_fractions)  # "auto" or "auto:START:STOP:STEP"
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


def _check_scheduler_family(o: dict, info):
    """A flow-matching model takes flow schedulers only, any other model the others (when known)."""
    name = o["scheduler"]
    if name is None:
        return
    model_flow = is_flow_model(o["model"], info)
    if model_flow is None:
        return  # a hub id: checked when it loads
    if model_flow != (name in FLOW_SCHEDULERS):
        kind = "flow-matching" if model_flow else "VP/VE diffusion"
        valid = FLOW_SCHEDULERS if model_flow else tuple(n for n in _schedulers() if n not in FLOW_SCHEDULERS)
        raise OptionError(f"--scheduler: {name!r} cannot drive the {kind} model {o['model']!r}; valid: "
                          f"{', '.join(valid)}")


def fingerprints(o: dict) -> dict:
    """Content fingerprints of the model, the CLIP checkpoint and the images (`engine.fingerprint`)."""
    from .engine import fingerprint as fp

    out = {"model": None, "model_revision": None, "clip": None, "images": None}
    model = o["model"]
    if model == DEFAULT_MODEL:
        from .diffusion.default import PIPELINE_DIR, assets_path

        out["model"] = fp.folder_fingerprint(assets_path() / PIPELINE_DIR)
    elif model == DEFAULT_TEXT:
        from .diffusion.default import assets_path

        out["model"] = fp.folder_fingerprint(assets_path() / "default_lm")
    elif model not in BUILTIN_MODELS:
        if Path(model).is_dir():
            out["model"] = fp.folder_fingerprint(model)
        else:
            snap = fp.hub_snapshot(model)
            if snap is not None:
                out["model_revision"], folder = snap
                out["model"] = fp.folder_fingerprint(folder)
    if o["clip_model"] is None and model == DEFAULT_MODEL:
        from .diffusion.default import CLIP_DIR, assets_path

        out["clip"] = fp.folder_fingerprint(assets_path() / CLIP_DIR)
    elif o["clip_pretrained"] is not None and Path(o["clip_pretrained"]).is_file():
        out["clip"] = fp.file_fingerprint(o["clip_pretrained"])
    if o["images"] is not None:
        out["images"] = fp.images_fingerprint(list_images(o["images"]))
    if o.get("prompts") is not None:
        out["prompts"] = fp.images_fingerprint([o["prompts"]])
    return out


# ----------------------------------------------------------------------------- resume
def result_options(o: dict) -> dict:
    """The options that change results (compared when resuming into an existing folder)."""
    return {k: v for k, v in o.items() if k not in NON_RESULT_OPTIONS}


_FINGERPRINT_FLAGS = {"model": ("--model", "model"), "model_revision": ("--model", "model"),
                      "clip": ("--clip-pretrained", "clip_pretrained"), "images": ("--images", "images"),
                      "prompts": ("--prompts", "prompts")}


def check_resume(out: Path, o: dict):
    """Refuse to reuse a folder made with options, or weights and images, that change results."""
    path = Path(out) / "options.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise OptionError(f"--out: {str(path)!r} is not valid JSON; choose another --out") from None
    new = json.loads(json.dumps(result_options(o)))
    old = result_options(old)
    for k, v in new.get("fingerprints", {}).items():
        was = (old.get("fingerprints") or {}).get(k)
        if v != was:
            flag, option = _FINGERPRINT_FLAGS[k]
            what = "the hub revision" if k == "model_revision" else "the content"
            raise OptionError(f"{flag}: {what} of {_show(o.get(option))} changed since the run in {str(out)!r} "
                              f"began ({_show(was)} -> {_show(v)}); use another --out")
    for k in sorted(set(new) | set(old)):
        if new.get(k) != old.get(k):
            raise OptionError(f"--out: {str(out)!r} holds a run with {_flag(k)} {_show(old.get(k))}, "
                              f"not {_show(new.get(k))}; use another --out")


def _show(v):
    s = json.dumps(v)
    return s if len(s) < 60 else s[:57] + "..."


# ----------------------------------------------------------------------------- the CLI's parser
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage block
        raise OptionError(message)


def _number(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value
    return parse


def build_parser(prog: str = "python -m diffusion_windows.sweep", description: str = "") -> argparse.ArgumentParser:
    """argparse from `OPTIONS`: one flag per option (a boolean option ``x`` with default True is ``--no-x``)."""
    p = _Parser(prog=prog, allow_abbrev=False, description=description,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for opt in OPTIONS:
        if opt.kind is bool:
            name = ("--no-" if opt.default else "--") + opt.name.replace("_", "-")
            p.add_argument(name, dest=opt.name, action="store_false" if opt.default else "store_true",
                           default=opt.default, help=opt.help)
            continue
        kind = _number(opt.kind) if opt.kind in (int, float) else opt.kind if callable(opt.kind) else str
        p.add_argument(opt.flag, dest=opt.name, default=opt.default, help=opt.help, metavar=opt.name.upper(),
                       type=kind)
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars, loading messages or summary")
    return p


def join_values(argv, parser):
    """``--timesteps -10,100`` -> ``--timesteps=-10,100`` so values starting with '-' reach validation."""
    takes_value = {a for act in parser._actions if act.nargs is None and act.option_strings
                   and not isinstance(act, (argparse._StoreTrueAction, argparse._StoreFalseAction))
                   for a in act.option_strings}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] not in takes_value:
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out
