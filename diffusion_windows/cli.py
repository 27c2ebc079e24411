"""The command line: ``python -m diffusion_windows.sweep`` (console script ``diffusion-windows-sweep``).

`build_parser` makes one flag per option of the table (`options.OPTIONS`: ``--num-inference-steps``
for ``num_inference_steps``; a boolean option ``x`` whose default is True is ``--no-x``) and
writes each option's default into its help once: the table's value, or, where the model's
kind sets it (`backends.KINDS`), the value each kind and built-in model runs with, or the
default in words (``Option.shown``). `main` parses, runs `sweep.run_sweep` and turns bad input
into one line ``error: ...`` on stderr and exit code 2 (a failed unit: exit code 1, results kept).
"""
from __future__ import annotations

import argparse
import math
import sys

from . import backends
from .errors import ModelLoadError, OptionError
from .options import OPTIONS

__all__ = ["build_parser", "default_text", "join_values", "main"]

PROG = "python -m diffusion_windows.sweep"
DESCRIPTION = "Measure critical windows of features in a diffusion model, with theory alongside."


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage block
        raise OptionError(message)


def _typed(parse):
    """An argparse type from a parser that raises ValueError with the message to show."""
    def typed(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return typed


def _number(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return value
    return parse


def default_text(opt) -> str:
    """The default of ``opt`` as ``--help`` shows it: its value; per kind and built-in model,
    ``"V1 for diffusion models; V2 for language models; V3 for default-text"``; or its words."""
    if opt.default is not None:
        return opt.shown if opt.kind is bool and opt.shown else str(opt.default)
    parts = []
    for kind in backends.KINDS:
        spec = kind.spec
        if opt.name in spec.DEFAULTS:
            parts.append(f"{str(spec.DEFAULTS[opt.name])} for {spec.MODELS}")
        by_value = {}
        for model, values in spec.BUILTIN_DEFAULTS.items():
            if opt.name in values:
                by_value.setdefault(str(values[opt.name]), []).append(model)
        parts += [f"{v} for {', '.join(models)}" for v, models in by_value.items()]
    if parts:
        return "; ".join(parts)
    return opt.shown or "none"


def build_parser(prog: str = PROG, description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """argparse from `OPTIONS` (module docstring)."""
    p = _Parser(prog=prog, allow_abbrev=False, description=description)
    for opt in OPTIONS:
        what = "; ".join(k.spec.ABOUT for k in backends.KINDS) if opt.name == "model" else opt.help
        help_ = f"{what} (default: {default_text(opt)})".replace("%", "%%")
        if opt.kind is bool:
            name = ("--no-" if opt.default else "--") + opt.name.replace("_", "-")
            p.add_argument(name, dest=opt.name, action="store_false" if opt.default else "store_true",
                           default=opt.default, help=help_)
            continue
        kind = _number(opt.kind) if opt.kind in (int, float) else opt.kind if callable(opt.kind) else str
        p.add_argument(opt.flag, dest=opt.name, default=opt.default, help=help_, metavar=opt.name.upper(),
                       type=_typed(kind))
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars, loading messages or summary")
    return p


def _takes_value() -> set:
    """The flags that take a value: every option of the table but the boolean ones."""
    return {opt.flag for opt in OPTIONS if opt.kind is not bool}


def join_values(argv) -> list:
    """``--timesteps -10,100`` -> ``--timesteps=-10,100`` so values starting with '-' reach validation."""
    takes_value = _takes_value()
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


def main(argv=None, *, run_sweep) -> int:
    """The CLI over ``run_sweep`` (`sweep.main` passes it: the sweep imports the CLI, not the other way).

    Returns 0 when done; 2 for bad input, a model that cannot load or a folder in use; 1 when a
    unit failed (its results kept)."""
    from .engine.engine import RunError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = vars(parser.parse_args(join_values(argv)))
        run_sweep(**args)
    except (OptionError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:  # failed units: one line, results kept
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
