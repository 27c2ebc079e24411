"""The sweep: ``python -m diffusion_windows.sweep`` and `run_sweep(**options)`.

A sweep measures, for every feature value, the retention curve ``P(t)`` of the
forward-reverse experiment (DESIGN.md) on a grid of times, finds its window edges with
bootstrap intervals, adds the theory's prediction and writes, in ``out``: ``options.json``
(first), ``results.jsonl`` (one line per unit, appended and flushed), ``windows.json``,
``windows.csv``, ``window.png``, ``strip.png`` (+ ``strip.safetensors``).

Flags map one to one onto `run_sweep`'s keywords (`diffusion_windows.options.OPTIONS`; the
parser is `diffusion_windows.cli`); ``--dry-run`` prints the resolved options as JSON. Bad
input: one line ``error: ...`` on stderr and exit code 2, before any model loads. One sweep at
a time runs into a folder (`diffusion_windows.runfolder`: a lock, the resume check). The work
itself is the engine's (`diffusion_windows.engine`) on the model's backend (registered in
`diffusion_windows.backends`); the records, theory and files are the analysis'
(`diffusion_windows.analysis`).

Example::

    from diffusion_windows import run_sweep
    out = run_sweep(samples=20, restarts=4, timesteps="0:1000:100", out="runs/quick")
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from .engine.engine import RunError
from .options import DEFAULTS as _D
from .options import OptionError, resolve

STRIP_COLS = 10
SweepError = RunError  # the name earlier versions raised
__all__ = ["run_sweep", "main", "SweepError", "OptionError"]


def run_sweep(
    *,
    model: str = _D["model"],                         # a built-in name, a pipeline or causal LM folder, a hub id
    prompt: str | None = _D["prompt"],                # text pipelines and language models
    guidance_scale: float | None = _D["guidance_scale"],
    negative_prompt: str | None = _D["negative_prompt"],  # text pipelines: guidance's other branch
    true_cfg_scale: float | None = _D["true_cfg_scale"],  # Flux, Flux Kontext, Qwen-Image (with negative_prompt)
    image: str | None = _D["image"],                  # reference image file (Flux Kontext)
    class_label: str | None = _D["class_label"],      # class-conditional pipelines (DiT)
    height: int | None = _D["height"],                # image size in pixels (None: the pipeline's)
    width: int | None = _D["width"],
    num_frames: int | None = _D["num_frames"],        # video models: frames of a clip (None: the pipeline's)
    num_inference_steps: int | None = _D["num_inference_steps"],  # None: the model kind's (20 for built-ins, else 50)
    scheduler: str | None = _D["scheduler"],          # swap the pipeline's scheduler by name
    eta: float | None = _D["eta"],                    # DDIM eta (None: 1.0 for DDIM)
    labels: str | None = _D["labels"],                # CLIP zero-shot labels, comma-separated
    motion: str | None = _D["motion"],                # video models: "directions" or "moving"
    clip_frame: int | None = _D["clip_frame"],        # video models: the frame CLIP classifies (None: all, averaged)
    clip_model: str | None = _D["clip_model"],
    clip_pretrained: str | None = _D["clip_pretrained"],
    templates: str | None = _D["templates"],
    samples: int | None = _D["samples"],              # base samples (with images: the first N of them)
    images: str | None = _D["images"],                # a folder of real images as base samples
    protocol: str = _D["protocol"],                   # "noise" or "branch"
    timesteps: str | list | None = _D["timesteps"],   # in the model's unit (training timesteps, 1000 sigma, fractions)
    restarts: int | None = _D["restarts"],            # re-samples per base sample and timestep
    tolerance: float = _D["tolerance"],               # delta at both window edges
    edge_precision: float | None = _D["edge_precision"],   # timesteps="auto": the edge interval it aims at
    initial_restarts: int | None = _D["initial_restarts"],
    auto_aim: str = _D["auto_aim"],                   # timesteps="auto": "edge", or "interval" (also narrow intervals)
    max_evaluations: int | None = _D["max_evaluations"],   # timesteps="auto": a budget of model evaluations
    out: str | None = _D["out"],                      # the output folder (one sweep at a time holds it)
    seed: int = _D["seed"],
    device: str = _D["device"],
    dtype: str = _D["dtype"],
    batch_size: int | str = _D["batch_size"],         # or "auto" (CUDA)
    theory: bool = _D["theory"],
    prompts: str | None = _D["prompts"],              # language models: a JSON-lines file of prompts
    system: str | None = _D["system"],
    outcome: str | None = _D["outcome"],
    max_new_tokens: int | None = _D["max_new_tokens"],
    temperature: float | None = _D["temperature"],
    top_p: float | None = _D["top_p"],
    trust_remote_code: bool | None = _D["trust_remote_code"],  # masked: run a folder's own modeling code (auto_map)
    mask_token: str | None = _D["mask_token"],        # masked: the mask token when the tokenizer declares none
    attention_mask: str | None = _D["attention_mask"],  # masked: "2d", "block" (LLaDA2's generate()) or "auto"
    dry_run: bool = False,                            # print the resolved options as JSON and return
    quiet: bool = False,                              # no progress bars, loading messages or summary
) -> Path:
    """Run a sweep (the keywords are the options of `diffusion_windows.options.OPTIONS`, their defaults
    the table's; None: set by the model's kind); returns the output folder.

    Raises `OptionError` for a bad option value (before anything is loaded or written), and for an
    output folder another sweep is running into now.

    Example::

        out = run_sweep(samples=20, restarts=4, timesteps="0:1000:100", out="runs/quick")
    """
    o = resolve({k: v for k, v in locals().items() if k in _D})
    if dry_run:
        print(json.dumps(o, indent=1))
        return Path(o["out"])
    out = Path(o["out"])
    from . import runfolder
    from .engine import processes

    dist = processes.state()
    lock = runfolder.hold(out, dist)  # every process raises when another sweep holds the folder
    try:
        runfolder.check_resume(out, o)
        if dist.is_main:
            runfolder.write_options(out, o)
        dist.wait()
        _run(o, out, dist, quiet)
    finally:
        if lock is not None:
            lock.release()
    return out


def _run(o: dict, out: Path, dist, quiet: bool):
    from .backends import load_backend
    from .engine import Engine, ResultStore, Settings

    if dist.world > 1:
        o = {**o, "device": dist.device(o["device"])}
    with _quiet_libraries(quiet):
        backend = load_backend(o)
        if o["batch_size"] == "auto":
            o = {**o, "batch_size": _auto_batch_size(out, o, backend, dist)}
        started = time.perf_counter()
        engine = Engine(backend, Settings.from_options(o), ResultStore(out, rank=dist.rank, world=dist.world), dist,
                        quiet=quiet)
        ahead = TheoryAhead.start(backend, o, engine) if dist.is_main else None
        engine.run()
        if dist.is_main:
            finish(backend, o, out, engine, time.perf_counter() - started, quiet=quiet, ahead=ahead)
    dist.wait()


class TheoryAhead:
    """The theory of data known before the run (the default model's training digits, a Gaussian
    mixture), computed in a forked process while the restarts run: it needs neither their results
    nor the model, and a process (not a thread) keeps the restarts' Python free of its work. Only
    on Linux, on the CPU, with one torch thread on a machine with more cores (the core the
    restarts leave idle; a GPU run computes the theory at the end, as before). Its times are every
    time a record can hold (the sampling grid, and the times asked for). Only for a backend whose
    theory says so (`engine.backend.HasTheory`, ``theory_ahead``). The child hands back its answer
    as JSON (`PredictedWindow.to_dict`; Python's float text round-trips exactly). `result` is None
    when the run's records hold another time; `finish` then computes the theory itself, as it does
    for data known only from the run (a model's own base samples). The theory is the same either
    way: a function of the data, the times and its seed."""

    def __init__(self, call, times, axis):
        import os

        self.times, self.axis = frozenset(times), axis
        read, write = os.pipe()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child: compute, write, leave; never return into the parent's code
            try:
                _die_with_parent(parent)
                os.close(read)
                try:
                    payload = json.dumps({"answer": _theory_json(call())})
                except BaseException as e:  # noqa: BLE001 - reported by the parent
                    payload = json.dumps({"error": f"{type(e).__name__}: {e}"})
                with os.fdopen(write, "w") as f:  # a parent gone already: BrokenPipeError, then exit
                    f.write(payload)
            finally:
                os._exit(0)
        os.close(write)
        self._read = read

    @classmethod
    def start(cls, backend, o: dict, engine):
        import os

        import torch

        from .engine.backend import HasTheory, capable

        idle_core = torch.get_num_threads() == 1 and (os.cpu_count() or 1) > 1
        if (o["theory"] is not True or not capable(backend, HasTheory) or not backend.theory_ahead
                or str(o["device"]) != "cpu" or not sys.platform.startswith("linux") or not idle_core):
            return None
        times = sorted(set(engine.grid) | (set() if engine.auto else set(engine.snap(engine.settings.timesteps))))
        return cls(lambda: backend.theory(None, {}, delta=float(o["tolerance"]), times=times), times, backend.axis())

    def result(self, times):
        """``(Predictions | None, reason)`` as `HasTheory.theory` returns it, or None (not covered)."""
        import os

        with os.fdopen(self._read) as f:
            data = json.loads(f.read() or '{"error": "the theory process ended without an answer"}')
        os.waitpid(self.pid, 0)
        if "error" in data:
            raise RuntimeError(f"theory: {data['error']}")
        return _theory_from_json(data["answer"], self.axis) if set(times) <= self.times else None


def _die_with_parent(parent: int) -> None:
    """Linux: this forked process gets SIGKILL when its parent (pid ``parent``) dies, so a killed run
    leaves no theory computing on (best effort: without libc's prctl it ends on its own once it has
    answered)."""
    import ctypes
    import os
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def _theory_json(answer) -> dict:
    predictions, reason = answer
    if predictions is None:
        return {"reason": reason}
    return {"windows": [w.to_dict() for w in predictions.windows], "times": list(predictions.times),
            "summary": predictions.summary}


def _theory_from_json(d: dict, axis):
    from .analysis.compare import Predictions
    from .theory.predict import PredictedWindow

    if "windows" not in d:
        return None, d["reason"]
    windows = tuple(PredictedWindow(**{k: tuple(v) if isinstance(v, list) else v for k, v in w.items()})
                    for w in d["windows"])
    return Predictions(windows, tuple(d["times"]), axis, d["summary"]), None


def _auto_batch_size(out: Path, o: dict, backend, dist) -> int:
    """``--batch-size auto`` (`engine.memory`): found once by the main process, kept in options.json; a
    backend that cannot probe memory (`engine.backend.ProbesMemory`) is refused with one line."""
    import torch

    from .engine.backend import ProbesMemory, require
    from .engine.memory import choose_batch_size

    require(backend, ProbesMemory, "--batch-size: 'auto'", error=OptionError, instead="pass an integer")
    if dist.is_main:
        on_cuda = str(o["device"]).startswith("cuda")
        choose_batch_size(out, o, backend.probe, on_cuda, empty_cache=torch.cuda.empty_cache if on_cuda else None)
    dist.wait()
    return int(json.loads((out / "options.json").read_text())["batch_size"])


def finish(backend, o: dict, out: Path, engine, seconds: float, quiet: bool = False, ahead=None):
    """Estimate windows, add theory (``ahead``: a `TheoryAhead` started with the run), write files and
    plots, print the summary."""
    from . import plotting
    from .analysis.counts import merge_units
    from .analysis.report import allocation_table, summary_table, write_strip, write_windows
    from .engine.backend import Reports, capable
    from .engine.results import summarize_run

    records, extra = summarize_run(backend, engine, tolerance=o["tolerance"], seed=o["seed"], theory=o["theory"],
                                   device=o["device"] if o["device"] != "cpu" else None,
                                   ahead=None if ahead is None else ahead.result)
    merged = merge_units(engine.store.read_all())
    if capable(backend, Reports):  # what a kind of model adds (language models: per-response jumps, tokens.html)
        extra.update(backend.report(merged, engine.settings, out))
    extra["seconds"] = round(seconds, 2)
    extra["options"] = o
    write_windows(out, records, extra)
    write_strip(out, engine.store, merged, backend.features, STRIP_COLS)
    plotting.save_plots(out)
    if not quiet:
        print(summary_table(records))
        if any("start_stopped_by" in r.extra for r in records):  # --timesteps auto: where evaluations went
            print(allocation_table(records, extra["rounds"]))
        w = extra["edge_interval_steps"]
        if w["median"] is not None:
            print(f"95% edge intervals: median {w['median']:g} grid steps, widest {w['max']:g} "
                  f"(grid spacing {w['grid_spacing']:g})")
        if not o["theory"]:
            print("theory: skipped (--no-theory)")
        print(f"{len(records)} records, {extra['nfe']} model evaluations, {seconds:.1f} s; results in {out}")
    return records, extra


@contextlib.contextmanager
def _quiet_libraries(quiet: bool):
    """With ``quiet``: no diffusers or transformers loading bars or info messages."""
    if not quiet:
        yield
        return
    import warnings

    from diffusers.utils import logging as dlog

    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deterministic here.*")
            yield
    finally:
        for log, level in zip((dlog, tlog), levels):
            log.set_verbosity(level)
            log.enable_progress_bar()


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    """``python -m diffusion_windows.sweep``: the CLI (`diffusion_windows.cli`) over `run_sweep`."""
    from .cli import main as cli_main

    return cli_main(argv, run_sweep=run_sweep)


if __name__ == "__main__":
    sys.exit(main())
