"""The sweep: ``python -m diffusion_windows.sweep`` and `run_sweep(**options)`.

A sweep measures, for every feature value, the retention curve ``P(t)`` of the
forward-reverse experiment (DESIGN.md) on a grid of training timesteps, finds its window
edges with bootstrap intervals (`diffusion_windows.windows`), adds the theory's
prediction (`diffusion_windows.compare`) and writes, in ``out``:
``options.json`` (first), ``results.jsonl`` (one line per unit, appended and flushed),
``windows.json``, ``windows.csv``, ``window.png``, ``strip.png`` (+ ``strip.safetensors``).

Flags map one to one onto `run_sweep`'s keywords (`diffusion_windows.options.DEFAULTS`);
``--dry-run`` prints the resolved options as JSON. Bad input: one line
``error: ...`` on stderr and exit code 2, before any model loads.

Units of work: one base sample x one round of timesteps (round 0 is the whole grid, or
the coarse grid of ``--timesteps auto``; later rounds are the adaptive search's
refinements). Each unit has its own seeds (`measure.unit_seed`) and its own batches
(one staircase), so an interrupted, resumed or multi-process run computes the same
numbers as an uninterrupted one. Across processes (``torchrun``/``accelerate launch``)
units are split with accelerate; each process appends to ``results.<rank>.jsonl`` and
the main process merges them into ``results.jsonl``.

Example::

    from diffusion_windows import run_sweep
    out = run_sweep(samples=20, restarts=4, timesteps="0:1000:100", out="runs/quick")
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .options import DEFAULTS, OptionError, check_resume, resolve

STRIP_ROWS = 8
STRIP_COLS = 10


class SweepError(RuntimeError):
    """A unit failed (e.g. the model returned NaN); results finished so far are kept."""


def run_sweep(*, dry_run: bool = False, quiet: bool = False, **options) -> Path:
    """Run a sweep with ``options`` (see `diffusion_windows.options.DEFAULTS`); returns the output folder.

    Raises `OptionError` for a bad option value (before anything is loaded or written).

    Example::

        out = run_sweep(samples=20, restarts=4, timesteps="0:1000:100", out="runs/quick")
    """
    o = resolve(options)
    if dry_run:
        print(json.dumps(o, indent=1))
        return Path(o["out"])
    out = Path(o["out"])
    check_resume(out, o)
    from . import distributed

    dist = distributed.state()
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "options.json").exists():
            (out / "options.json").write_text(json.dumps(o, indent=1))
    dist.wait()

    from .models import load_model

    from .store import ResultStore

    if dist.world > 1:
        o = {**o, "device": dist.device(o["device"])}
    model = load_model(o)
    started = time.perf_counter()
    engine = Engine(model, o, ResultStore(out, rank=dist.rank, world=dist.world), dist, quiet=quiet)
    engine.run()
    if dist.is_main:
        _finish(model, o, out, engine, time.perf_counter() - started, quiet=quiet)
    dist.wait()
    return out


class Engine:
    """Plans rounds of units, runs this process's share, keeps results in ``store``.

    ``o`` needs the keys samples, restarts, timesteps (parsed), protocol, seed,
    batch_size, tolerance, edge_precision and images. ``units`` computes a batch group's
    unit records (default `measure.run_units`; ``benchmarks/replay_auto.py`` passes one that
    reads a finished run's restarts instead of running the model).
    """

    def __init__(self, model, o, store, dist=None, quiet=False, units=None):
        from .distributed import Dist
        from .measure import grid_timesteps

        self.model, self.o, self.store, self.quiet = model, o, store, quiet
        self.units = units
        self.dist = dist or Dist()
        self.out = getattr(store, "out", None)
        self.grid = sorted(float(t) for t in grid_timesteps(model))
        self.images = None
        if o["images"]:
            from .images import load_images

            self.images = load_images(o["images"], model.pipe)
        self.bases = None
        self.nfe = 0
        self.rounds = []

    def snap(self, timesteps):
        """Requested timesteps -> the sampling grid's timesteps they restart from."""
        from .hooks import restart_timestep

        snapped = sorted({float(restart_timestep(self.model.pipe.scheduler, t, self.model.num_inference_steps))
                          for t in timesteps})
        if len(snapped) < len(timesteps) and self.dist.is_main and not self.quiet:
            warnings.warn(f"{len(timesteps) - len(snapped)} requested timesteps share a grid timestep "
                          f"of the {self.model.num_inference_steps}-step grid; measured once", stacklevel=2)
        return snapped

    def run(self):
        """Round 0 on every base sample; with ``auto``, bisection rounds until edges are located."""
        from .adaptive import first_round

        o = self.o
        auto = o["timesteps"] == "auto"
        first = first_round(self.grid) if auto else self.snap(o["timesteps"])
        plan = {b: list(first) for b in range(o["samples"])}
        round_ = 0
        while plan:
            self.rounds.append(sorted({t for ts in plan.values() for t in ts}))
            self._run_round(round_, plan)
            if not auto:
                break
            plan = self._refine(round_)
            round_ += 1

    def _run_round(self, round_, plan):
        """Run this process's batch groups of one round; ``plan`` maps base -> timesteps.

        The units (one per base) are cut into fixed batch groups (`measure.batch_groups`);
        processes share whole groups, and a group with any unit missing is run whole again
        (its finished units are not written twice), so every unit is always computed in
        the same batch.
        """
        from tqdm.auto import tqdm

        from .measure import batch_groups, run_units

        o = self.o
        mine = self.dist.share(batch_groups(plan, o["restarts"], o["batch_size"]))
        done = self.store.done_units()
        todo = [g for g in mine if any(self.store.unit_id(round_, b) not in done for b in g)]
        n_mine = sum(len(g) for g in mine)
        bar = tqdm(total=n_mine, initial=n_mine - sum(len(g) for g in todo), desc=f"round {round_}",
                   unit="unit", disable=self.quiet or not todo, dynamic_ncols=True)
        try:
            self._make_bases([b for g in todo for b in g])
            for group in todo:
                records = (self.units or run_units)(
                    self.model, self.bases, {b: plan[b] for b in group}, restarts=o["restarts"], seed=o["seed"],
                    protocol=o["protocol"], batch_size=o["batch_size"], keep_images=[b for b in group if b < STRIP_ROWS])
                for rec in records:
                    b = rec["base"]
                    if self.store.unit_id(round_, b) in done:
                        continue
                    if round_ == 0 and self.model.mixture is None:
                        self.store.save_base(b, self.bases.x0[b])
                    self.store.append(round_, b, rec)
                bar.update(len(group))
        except FloatingPointError as e:
            raise SweepError(f"{e}; finished units are kept" + (f" in {self.out}" if self.out else "")) from None
        finally:
            bar.close()
        self.dist.wait()

    def _make_bases(self, wanted):
        """Base samples not made yet (kept across rounds; each is a fixed function of its chunk)."""
        from .measure import Bases, make_bases

        o = self.o
        if self.bases is None:
            self.bases = Bases(x0={}, states={}, grid=None)
        missing = [b for b in wanted if b not in self.bases.x0]
        if missing:
            new = make_bases(self.model, missing, total=o["samples"], seed=o["seed"], protocol=o["protocol"],
                             batch_size=o["batch_size"], images=self.images)
            self.bases.x0.update(new.x0)
            self.bases.states.update(new.states)
            self.bases.grid = new.grid

    def _refine(self, round_: int) -> dict:
        """The adaptive search's plan for round ``round_ + 1``, from all processes' results of rounds
        ``0..round_`` only (the same in every process, and the same after a kill: a resumed run
        may already hold units of later rounds, which the uninterrupted run had not seen when it
        planned this round).

        Each feature value's curve asks for timesteps (`adaptive.next_timesteps`) that are
        measured on the base samples of that value only: a new timestep costs restarts only
        where it settles an edge. A curve carries the end threshold of every record that reads
        it (the value against everything, and inside each coarser value).
        """
        from .adaptive import Curve, curve_se, next_timesteps
        from .report import merge_units, record_counts
        from .windows import mean_retention

        merged = merge_units(r for r in self.store.read_all() if r["round"] <= round_)
        delta = float(self.o["tolerance"])
        counts = [c for c in record_counts(merged, self.model.features, len(self.model.classifier.labels))
                  if c.bases and len(c.timesteps)]
        ends = {}
        for c in counts:  # a record whose floor + delta >= 1 - delta has no window to locate
            ends.setdefault((c.feature, c.value), []).extend([c.floor + delta] if c.floor + delta < 1 - delta else [])
        curves, members = {}, {}
        for c in counts:
            if c.parent is None:  # the value's own curve; nested records read the same counts
                curves[(c.feature, c.value)] = Curve(
                    tuple(c.timesteps), tuple(mean_retention(c.kept, c.total)), tuple(curve_se(c.kept, c.total)),
                    start_threshold=1 - delta, end_thresholds=tuple(ends[(c.feature, c.value)]))
                members[(c.feature, c.value)] = c.bases
        new = next_timesteps(self.grid, curves, float(self.o["edge_precision"]))
        plan = {}
        for key, ts in new.items():
            for b in members[key]:
                have = merged[b]["labels"]
                plan.setdefault(b, set()).update(t for t in ts if float(t) not in have)
        return {b: sorted(ts) for b, ts in sorted(plan.items()) if ts}


def compute_records(model, o, engine, theory: bool = True) -> tuple[list[dict], dict]:
    """Merged results -> window records with theory, and the extra keys of ``windows.json``."""
    from . import compare
    from .report import edge_widths_in_steps, merge_units, window_records
    from .schedule import is_stochastic

    records_in = engine.store.merge()
    merged = merge_units(records_in)
    records = window_records(merged, model.features, len(model.classifier.labels),
                             tolerance=o["tolerance"], seed=o["seed"])
    stochastic = bool(is_stochastic(model.pipe.scheduler, eta=model.eta))
    mixture = None
    if theory and model.mixture is None:
        kept = engine.store.load_bases()
        bases = sorted(b for b in kept if b in merged)
        if len(bases) >= 2:
            points = [kept[b].reshape(-1) for b in bases]
            mixture = compare.resolve_mixture(model, points, [merged[b]["label"] for b in bases])
    theory = (compare.add_theory(records, model, o, mixture=mixture) if theory
              else {"available": False, "reason": "theory=False"})
    spacing = _grid_spacing(sorted({t for r in engine.rounds for t in r}))
    widths = edge_widths_in_steps(records, spacing)
    extra = {
        "sampler": {"name": type(model.pipe.scheduler).__name__, "stochastic": stochastic,
                    "num_inference_steps": model.num_inference_steps, "eta": model.eta},
        "schedule": compare.schedule_arrays(model.pipe.scheduler),
        "grid": engine.grid,
        "rounds": engine.rounds,
        "nfe": int(sum(r.get("nfe", 0) for r in records_in)),
        "edge_interval_steps": {"median": _median(widths), "max": max(widths) if widths else None,
                                "grid_spacing": spacing},
        "theory": theory,
    }
    if not stochastic:
        msg = (f"{type(model.pipe.scheduler).__name__} is deterministic here: the measured retention is not "
               "the theory's forward-reverse quantity (THEORY.md, samplers)")
        extra["warning"] = msg
        warnings.warn(msg, stacklevel=2)
    return records, extra


def _finish(model, o, out, engine, seconds, quiet=False):
    """Estimate windows, add theory, write files and plots, print the summary."""
    from . import plotting
    from .report import merge_units, summary_table, write_windows

    records, extra = compute_records(model, o, engine)
    extra["seconds"] = round(seconds, 2)
    extra["options"] = o
    write_windows(out, records, extra)
    engine.store.write_strip(merge_units(engine.store.read_all()), model, STRIP_COLS)
    plotting.save_plots(out)
    if not quiet:
        print(summary_table(records))
        print(f"{extra['edge_interval_steps']}")
        print(f"{len(records)} records, {extra['nfe']} model evaluations, {seconds:.1f} s; results in {out}")


def _grid_spacing(grid):
    import numpy as np

    g = np.sort(np.asarray(grid, dtype=float))
    return float(np.median(np.diff(g))) if len(g) > 1 else 1.0


def _median(values):
    import numpy as np

    return float(np.median(values)) if values else None


# ----------------------------------------------------------------------------- CLI

def _flag(name):
    return "--" + name.replace("_", "-")


HELP = {
    "model": "'default' (bundled digits DDPM), 'gaussian-mixture' (exact denoiser), a pipeline folder or hub id",
    "prompt": "prompt of text pipelines",
    "guidance_scale": "classifier-free guidance scale of text pipelines",
    "num_inference_steps": "steps of the sampling grid (default: 20 for the built-in models, else 50)",
    "scheduler": "swap the pipeline's scheduler: ddpm, ddim, euler, euler-ancestral, heun, dpm++, unipc, pndm",
    "eta": "DDIM eta (default 1.0 for DDIM: a stochastic sampler)",
    "labels": "comma-separated CLIP zero-shot labels (default: the model's built-in features)",
    "clip_model": "open_clip model name (default: the bundled tiny CLIP)",
    "clip_pretrained": "open_clip pretrained tag or checkpoint path",
    "templates": "CLIP prompt templates: 'plain' (the label is the prompt), a file with one per line, or "
                 "'a photo of {}.|a drawing of {}.' (default: CLIP's, without their article for labels that have one)",
    "samples": "base samples generated by the model, each with its own seed",
    "images": "folder of real images to use as base samples",
    "protocol": "noise: re-noise x0 each restart; branch: restart from the trajectory's own x_t",
    "timesteps": "'auto', 't1,t2,...' or START:STOP:STEP (training timesteps, STOP excluded)",
    "restarts": "re-samples per base sample and timestep",
    "tolerance": "retention tolerance delta at both window edges",
    "edge_precision": "timesteps: how finely --timesteps auto locates edges",
    "out": "output folder (default: dw_runs/<model>-seed<seed>)",
    "seed": "run seed",
    "device": "torch device (cpu, cuda, cuda:1, ...)",
    "dtype": "model dtype: float32, float16, bfloat16",
    "batch_size": "largest batch of re-samples per model call",
}
TYPES = {"guidance_scale": float, "eta": float, "tolerance": float, "edge_precision": float,
         "num_inference_steps": int, "samples": int, "restarts": int, "seed": int, "batch_size": int}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage block
        raise OptionError(message)


def _number(kind, flag):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m diffusion_windows.sweep", allow_abbrev=False,
                description="Measure critical windows of features in a diffusion model, with theory alongside.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, default in DEFAULTS.items():
        kind = TYPES.get(name)
        p.add_argument(_flag(name), dest=name, default=default, help=HELP[name], metavar=name.upper(),
                       type=_number(kind, _flag(name)) if kind else str)
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p


def _join_values(argv, parser):
    """``--timesteps -10,100`` -> ``--timesteps=-10,100`` so values starting with '-' reach validation."""
    takes_value = {a for act in parser._actions if act.nargs is None and act.option_strings
                   and not isinstance(act, (argparse._StoreTrueAction,)) for a in act.option_strings}
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


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = vars(parser.parse_args(_join_values(argv, parser)))
        dry, quiet = args.pop("dry_run"), args.pop("quiet")
        run_sweep(dry_run=dry, quiet=quiet, **args)
    except OptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # load errors and failed units: one line, results kept
        from .models import ModelLoadError

        if isinstance(e, (ModelLoadError, SweepError)):
            print(f"error: {e}", file=sys.stderr)
            return 2 if isinstance(e, ModelLoadError) else 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
