"""The options of a run, defined once: `OPTIONS`, one `Option` each, and the generic value checks.

Each `Option` holds a name, its default (None: set by the model's kind, `backends.KINDS`, or
described by ``shown``), its type, help line, check, whether it changes results, and
`measure_window`'s own default (``library``). From the table come the CLI's flags
(`diffusion_windows.cli`), the keywords of `run_sweep` and `measure_window` (a test checks both
signatures against it). `resolve(options)` fills defaults (the table's, then the model's kind),
checks every value (one `OptionError` line naming the bad value; the CLI prints ``error: ...``
and exits 2), lets the model's kind resolve its own options (`backends`: a pipeline's
scheduler, a language model's prompts), records the content fingerprints of what the run reads,
and returns the plain dict written to ``options.json``, before any model loads. Options marked
``result=False`` (output folder, device, batch size, number of processes, theory) may differ
when a run resumes into a folder; every other one must match (`runfolder.check_resume`).

Time: every time here is in the model's unit (`parse_timesteps`): training timesteps for
diffusion pipelines (integers in ``[0, num_train_timesteps)``), ``1000 sigma`` for
flow-matching models (any number in ``[0, 1000]``), fractions of the response for language
models (`text.resolve.parse_fractions`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import backends
from ._aliases import moved_names
from .errors import OptionError

__all__ = ["Option", "OPTIONS", "BY_NAME", "DEFAULTS", "LIBRARY_DEFAULTS", "NON_RESULT_OPTIONS", "OptionError",
           "check_values", "parse_timesteps", "parse_labels", "list_images", "resolve", "show", "int_or_auto", "parse_auto"]

PROTOCOLS = ("noise", "branch")
DTYPES = ("float32", "float16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


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


def _aims():
    from .engine.allocation import AIMS  # the policy owns what it can aim at

    return AIMS


def _batch_size(name, v):
    if v == "auto":
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise OptionError(f"{_flag(name)}: {v!r} is neither an integer nor 'auto'")
    if v < 1:
        raise OptionError(f"{_flag(name)}: {v} must be at least 1")


def int_or_auto(text):
    """A value of --batch-size: 'auto' or an integer (ValueError otherwise)."""
    if str(text).strip() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an integer nor 'auto'") from None


_NOT_LIBRARY = object()   # the option is not an argument of measure_window
_SAME = object()          # measure_window's default is the sweep's


@dataclass(frozen=True)
class Option:
    """One option: its sweep default, type, help line, check, and measure_window's default."""

    name: str
    default: object
    kind: object               # int, float, bool, str, None (a value parsed later) or a parser text -> value
    help: str                  # what it is; the CLI adds its default once (below)
    result: bool = True        # changes results: must match on a resume into the same folder
    library: object = _SAME    # measure_window's own default (_NOT_LIBRARY: not its argument)
    check: Callable | None = None   # (name, value) -> None; raises OptionError
    shown: str | None = None   # the default in words, when it is None and no kind of model sets it

    @property
    def flag(self) -> str:
        return _flag(self.name)


OPTIONS: tuple = (
    Option("model", "default", str, "the model (the kinds of model and their built-ins: `backends.KINDS`)",
           library=_NOT_LIBRARY),
    Option("prompt", None, str, "prompt of text pipelines and of language models", shown="none"),
    Option("guidance_scale", None, float, "guidance scale (classifier-free; Flux dev: its guidance embedding)",
           check=_non_negative, shown="the pipeline's"),
    Option("negative_prompt", None, str, "negative prompt of text pipelines: classifier-free guidance's other branch "
           "(Flux, Flux Kontext, Qwen-Image: with --true-cfg-scale)", shown="the pipeline's"),
    Option("true_cfg_scale", None, float, "true classifier-free guidance scale of Flux, Flux Kontext and Qwen-Image "
           "(above 1 with --negative-prompt: a second model call per step)", check=_non_negative,
           shown="the pipeline's"),
    Option("image", None, str, "reference image file of image-conditioned pipelines (Flux Kontext, Flux.2)", shown="none"),
    Option("class_label", None, str, "class of class-conditional pipelines (DiT): an index or a name of its id2label",
           check=_non_empty, shown="none"),
    Option("height", None, int, "image height in pixels", check=_at_least(1), shown="the pipeline's"),
    Option("width", None, int, "image width in pixels", check=_at_least(1), shown="the pipeline's"),
    Option("num_frames", None, int, "video models: frames of a clip (decoded frames: 1 + 4k for Wan and CogVideoX)",
           check=_at_least(1), shown="the pipeline's"),
    Option("num_inference_steps", None, int, "steps of the sampling grid", library=50, check=_at_least(1)),
    Option("scheduler", None, str, "swap the pipeline's scheduler: ddpm, ddim, euler, euler-ancestral, heun, dpm++, "
           "unipc, pndm; flow-matching models: flow-ancestral (samples), flow-euler (the ODE)", library=_NOT_LIBRARY,
           shown="the pipeline's"),
    Option("eta", None, float, "DDIM eta", check=_unit_interval,
           shown="1.0 for DDIM: a stochastic sampler; the scheduler's otherwise"),
    Option("labels", None, str, "comma-separated CLIP zero-shot labels", library=_NOT_LIBRARY,
           shown="the model's built-in features"),
    Option("motion", None, str, "video models: a motion feature from the clips' global motion (frame-to-frame "
           "correlation): directions (static, up, down, left, right), moving (static, moving) or speed (static, slow, "
           "fast from 1.5 pixels per frame); with --labels both features in one run", library=_NOT_LIBRARY,
           check=_one_of(lambda: ("directions", "moving", "speed")),
           shown="none"),
    Option("clip_frame", None, int, "video models: the one frame CLIP classifies for --labels (negative: from the "
           "end)", library=_NOT_LIBRARY, shown="every frame, probabilities averaged"),
    Option("clip_model", None, str, "open_clip model name", library=_NOT_LIBRARY, shown="the bundled tiny CLIP"),
    Option("clip_pretrained", None, str, "open_clip pretrained tag or checkpoint path", library=_NOT_LIBRARY,
           shown="none"),
    Option("templates", None, str, "CLIP prompt templates: 'plain' (the label is the prompt), a file with one per "
           "line, or 'a photo of {}.|a drawing of {}.'", library=_NOT_LIBRARY,
           shown="CLIP's, without their article for labels that have one"),
    Option("samples", None, int, "base samples generated by the model, each with its own seed; with --images: the "
           "first SAMPLES images by name (without --samples: all of them)", library=8, check=_at_least(1)),
    Option("images", None, str, "folder of real images to use as base samples", library=_NOT_LIBRARY,
           shown="none: the model's own samples"),
    Option("protocol", "noise", str, "noise: re-noise x0 each restart; branch: restart from the trajectory's own x_t",
           check=_one_of(lambda: PROTOCOLS)),
    Option("timesteps", None, None, "'auto', 'auto:START:STOP:STEP' (auto on that grid), 't1,t2,...' or "
           "START:STOP:STEP: training timesteps, STOP excluded "
           "(flow-matching models: 1000 sigma in [0, 1000], fractions allowed); language models: fractions of the "
           "response removed, STOP included", library="0:1000:100"),
    Option("restarts", None, int, "re-samples per base sample and timestep, with --timesteps auto: at most",
           library=8, check=_at_least(1)),
    Option("tolerance", 0.1, float, "retention tolerance delta at both window edges", check=_open_unit),
    Option("edge_precision", None, float, "with --timesteps auto: the bootstrap interval each edge aims at, and "
           "the widest bracket of timesteps left around it (diffusion models: timesteps; language models: a "
           "fraction of the response)", library=40, check=_positive),
    Option("initial_restarts", None, int, "with --timesteps auto: re-samples a new (base sample, timestep) starts "
           "with; more are added, up to --restarts, where the sequential test of a grid point against its edge's "
           "threshold is not yet decided", check=_at_least(1), shown="1"),
    Option("auto_aim", "edge", str, "with --timesteps auto: 'edge' settles each edge (within --edge-precision of "
           "the edge the full grid would read, with probability 1 - miss); 'interval' also narrows each edge's "
           "interval as the full grid would (every measured point inside it whose bootstrap draws cross the "
           "threshold gets --restarts re-samples): the uniform grid's widths for fewer evaluations than it, more "
           "than 'edge'", check=_one_of(_aims)),
    Option("max_evaluations", None, int, "with --timesteps auto: a budget of model evaluations (re-samples, and "
           "base samples made beyond --samples); the search stops when its edges reach --edge-precision or the "
           "budget is spent, and spends what is left on more re-samples and base samples where they narrow an "
           "edge", check=_at_least(1), shown="no budget; then no base samples beyond --samples"),
    Option("out", None, str, "output folder; one sweep at a time holds it", result=False,
           shown="dw_runs/<model>-seed<seed>"),
    Option("seed", 0, int, "run seed", check=_non_negative),
    Option("device", "cpu", str, "torch device (cpu, cuda, cuda:1, ...)", result=False, library=_NOT_LIBRARY),
    Option("dtype", "float32", str, "model dtype: float32, float16, bfloat16", library=_NOT_LIBRARY,
           check=_one_of(lambda: DTYPES)),
    Option("batch_size", 512, int_or_auto, "largest batch of re-samples per model call (decode and classify too); "
           "'auto' on CUDA: the largest that fits, found once by trial and kept in options.json", result=False,
           check=_batch_size),
    Option("theory", True, bool, "compute the theory beside the measurement (--no-theory: skip it)", result=False,
           shown="computed"),
    # language models
    Option("prompts", None, str, "language models: a JSON-lines file, one {\"prompt\": ..., \"reference\": ...} "
           "per line (the reference answer is optional)", library=_NOT_LIBRARY, shown="none"),
    Option("system", None, str, "language models: a system prompt (with the tokenizer's chat template)",
           library=_NOT_LIBRARY, shown="none"),
    Option("outcome", None, str, "language models: the outcome classified: regex:PATTERN, answer, choices:a,b,c, "
           "correct (against each prompt's reference)", library=_NOT_LIBRARY),
    Option("max_new_tokens", None, int, "language models: most tokens of a response", library=_NOT_LIBRARY,
           check=_at_least(1)),
    Option("temperature", None, float, "language models: sampling temperature (0: greedy, deterministic)",
           library=_NOT_LIBRARY, check=_non_negative),
    Option("top_p", None, float, "language models: nucleus sampling mass", library=_NOT_LIBRARY,
           check=_unit_interval),
    Option("trust_remote_code", None, bool, "masked-diffusion models: load a folder that ships its own modeling code "
           "(config.json auto_map: LLaDA2 checkpoints); this runs that code", library=_NOT_LIBRARY, shown="off"),
    Option("mask_token", None, str, "masked-diffusion models: the mask token when the tokenizer declares none: a token "
           "of its vocabulary or an integer id", library=_NOT_LIBRARY, check=_non_empty,
           shown="the tokenizer's; LLaDA2 checkpoints (model_type llada2_moe) whose tokenizer declares none: <|mask|>"),
    Option("attention_mask", None, str, "masked-diffusion models: how the model is called: 2d (a mask of ones, as "
           "diffusers' LLaDA2Pipeline), block (4-D block-causal, as LLaDA2's own generate()) or auto",
           library=_NOT_LIBRARY),
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
    auto = parse_auto(spec, lambda grid: parse_timesteps(grid, T, flow))  # "auto" or "auto:START:STOP:STEP"
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


def parse_auto(spec, parse_grid):
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
def resolve(options: dict) -> dict:
    """Fill defaults and validate; returns the resolved options (JSON-ready). Raises OptionError."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r}; valid: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    o["model"] = str(o["model"])
    check_values(o)
    given = {k for k, v in options.items() if v is not None}
    kind = backends.kind_of(o["model"])
    for name, default in backends.defaults_for(o["model"]).items():
        if o[name] is None:
            o[name] = default
    own = kind.spec.OPTIONS
    foreign = [name for other in backends.KINDS if other is not kind for name in other.spec.OPTIONS if name not in own]
    wrong = [k for k in foreign if o[k] is not None]
    if wrong:
        raise OptionError(f"{_flag(wrong[0])}: {show(o[wrong[0]])} does not apply to {kind.spec.NOUN} "
                          f"({o['model']!r})")
    kind.spec.resolve(o, given)
    if o["initial_restarts"] is not None and o["initial_restarts"] > o["restarts"]:
        raise OptionError(f"--initial-restarts: {o['initial_restarts']} must not exceed --restarts {o['restarts']}")
    if o["out"] is None:
        o["out"] = str(Path("dw_runs") / f"{Path(o['model']).name or 'model'}-seed{o['seed']}")
    out = Path(o["out"])
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out: {str(out)!r} is a file, not a folder")
    _check_device(o["device"])
    o["out"] = str(out)
    o["fingerprints"] = kind.spec.fingerprints(o)
    return o


def show(v) -> str:
    """A value as an error message quotes it: JSON, cut at 60 characters."""
    s = json.dumps(v)
    return s if len(s) < 60 else s[:57] + "..."


__getattr__ = moved_names(__name__)  # build_parser, check_resume, ... from their new modules, warned
