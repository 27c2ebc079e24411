"""How often a run's 95% edge intervals cover the true edge, on the models whose truth is known.

The toolkit ships exact models: ``gaussian-mixture`` (the exact denoiser of a hierarchical
Gaussian mixture, VP), ``gaussian-mixture-flow`` (its flow-matching twin) and, for text,
``default-text``'s story features (the story language's exact curves, `theory.text`; the
model itself is a trained transformer, so there the exact curve is the truth only
approximately). For each model and each seed this runs the sweep's measurement in memory
(options -> backend -> engine -> `engine.results.summarize_run`, as ``run_sweep`` does, no files)
and compares each record's edges with the truth:

- ``exact``: the ideal retention curve on the same grid, read by the same edge rule
  (`analysis.windows.window_edges`) with the exact floor (the value's weight, or its weight
  inside its parent). The theory depends on the data and the grid only: computed once per model.
- ``large`` (``--large-samples N``): the same run with N base samples (and
  ``--large-restarts``) on a seed no measured run uses, read with its own floor: the edge of
  the model's own population with the sampler's discretisation, what an interval is
  meant to cover when the model or sampler is not exact.

Per record kind (``value``: a value against everything; ``group``: a value of a coarser
feature; ``nested``: a value inside its parent) and side (``start``, ``end``): the share of
intervals that hold the truth (an edge without interval while the truth has one counts as a
miss; an edge reported as None whose interval, from the draws that have it, holds the truth
counts as covered, and is counted apart; edges the truth does not have are left out and
counted), the
median interval width, the median and mean absolute error of the edge in grid steps
(positions on the grid the truth is read on: the requested uniform grid, or the full grid
that ``--timesteps auto`` refines) and the share within one grid step (``within_one_share``: of
the edges the truth has; a run's missing edge is not within),
and the model evaluations per run.

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py --seeds 100-129 \\
        --models gaussian-mixture,gaussian-mixture-flow --out calib.json
    python benchmarks/bench_calibration.py --models default-text --seeds 100-109 --large-samples 2000
    python benchmarks/bench_calibration.py --timesteps auto --seeds 100-129   # auto's rows (the sampling grid)
    python benchmarks/bench_calibration.py --timesteps auto --grid 0:1000:50 --seeds 100-129   # auto:0:1000:50

Prints the JSON (and writes it to ``--out``); progress goes to stderr. One seed costs about
4 s per Gaussian-mixture model and 37 s for default-text (300 x 4, 2 CPU cores, idle; 20 s and
150 s when the cores are shared). A run of the toolkit as it was is measured by running this
file from that checkout (it imports the package beside it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not another install

MODELS = ("gaussian-mixture", "gaussian-mixture-flow", "default-text")
GRIDS = {"gaussian-mixture": "0:1000:50", "gaussian-mixture-flow": "0:1000:50", "default-text": "0:1:0.1"}
KINDS, SIDES = ("value", "group", "nested"), ("start", "end")
LARGE_SEED = 1_000_003  # the large run's seed: none of the measured runs'


def seeds_of(text: str) -> list:
    """``"100-129"`` or ``"0,3,5"`` -> a list of seeds."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def run(model: str, *, samples: int, restarts: int, timesteps: str, seed: int, tolerance: float, extra=None):
    """One run in memory: ``(backend, engine, records)`` with the records a sweep would write."""
    from diffusion_windows.engine.results import summarize_run
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.options import resolve

    o = resolve(dict(model=model, samples=samples, restarts=restarts, timesteps=timesteps, seed=seed,
                     tolerance=tolerance, theory=False, **(extra or {})))
    backend = _backend(o)
    engine = Engine(backend, Settings.from_options(o), MemoryStore(), quiet=True).run()
    records, _ = summarize_run(backend, engine, tolerance=tolerance, seed=seed, theory=False)
    return backend, engine, records


def _backend(o):
    """The backend of resolved options ``o``: a fresh one per run (a backend keeps the base samples it
    made, so one reused across seeds would measure the first seed's base samples again)."""
    from diffusion_windows.backends import load_backend

    return load_backend(o)


def kind_of(record, coarse: set) -> str:
    if record.parent is not None:
        return "nested"
    return "group" if record.feature in coarse else "value"


def exact_truth(backend, grid, tolerance: float) -> dict:
    """``{record key: (start, end)}``: the ideal curve's edges on ``grid`` with the exact floor."""
    from diffusion_windows.analysis.windows import window_edges

    predictions, reason = backend.theory(None, {}, delta=float(tolerance), times=list(grid))
    if predictions is None:
        raise RuntimeError(f"no theory for this model: {reason}")
    column = {float(t): i for i, t in enumerate(predictions.times)}
    idx = [column[float(t)] for t in grid]
    out = {}
    for w in predictions.windows:
        curve = np.asarray(w.ideal_retention, dtype=float)[idx]
        out[(w.feature, w.value, w.parent_value)] = window_edges(grid, curve, float(w.base_rate), tolerance)
    return out


def large_truth(records, tolerance: float) -> dict:
    """``{record key: (start, end)}`` of a large run's own curves and floors."""
    from diffusion_windows.analysis.windows import window_edges

    out = {}
    for r in records:
        if r.retention is None or r.n_base == 0:
            continue
        out[r.key] = window_edges(r.timesteps, np.asarray(r.retention, dtype=float), float(r.floor), tolerance)
    return out


def score(records, grid, truths: dict, coarse: set) -> list:
    """One row per (record, side) that a truth has an edge for."""
    g = np.asarray(grid, dtype=float)
    pos = np.arange(len(g), dtype=float)

    def steps(t):
        return float(np.interp(float(t), g, pos))

    rows = []
    for r in records:
        for name, truth in truths.items():
            if r.key not in truth:
                continue
            for side, true in zip(SIDES, truth[r.key]):
                edge, ci = getattr(r, f"{side}_timestep"), getattr(r, f"{side}_ci")
                row = {"truth": name, "key": list(r.key), "kind": kind_of(r, coarse), "side": side,
                       "true": true, "edge": edge, "ci": list(ci) if ci else None}
                if true is None:
                    row["covered"] = None
                else:
                    row["covered"] = bool(ci is not None and ci[0] <= true <= ci[1])
                    row["error_steps"] = None if edge is None else steps(edge) - steps(true)
                row["width_steps"] = None if ci is None else steps(ci[1]) - steps(ci[0])
                rows.append(row)
    return rows


def summary(rows, nfe) -> dict:
    """Coverage, widths and errors by truth, kind and side (and over all kinds, per side)."""
    groups = defaultdict(list)
    for r in rows:
        for kind in (r["kind"], "all"):
            groups[(r["truth"], kind, r["side"])].append(r)
    out = {}
    for (truth, kind, side), rs in sorted(groups.items()):
        scored = [r for r in rs if r["covered"] is not None]
        widths = [r["width_steps"] for r in scored if r["width_steps"] is not None]
        errors = [abs(r["error_steps"]) for r in scored if r.get("error_steps") is not None]
        out.setdefault(truth, {}).setdefault(kind, {})[side] = {
            "n": len(scored),
            "coverage": float(np.mean([r["covered"] for r in scored])) if scored else None,
            "median_width_steps": float(np.median(widths)) if widths else None,
            "mean_width_steps": float(np.mean(widths)) if widths else None,
            "median_abs_error_steps": float(np.median(errors)) if errors else None,
            "mean_abs_error_steps": float(np.mean(errors)) if errors else None,
            "exact_share": float(np.mean([e == 0 for e in errors])) if errors else None,
            "within_one_share": float(np.mean([r.get("error_steps") is not None and abs(r["error_steps"]) <= 1
                                               for r in scored])) if scored else None,  # a missing edge: not within
            "edge_missing": sum(r["edge"] is None for r in scored),
            "truth_has_no_edge": len(rs) - len(scored),
        }
    return {"by_truth": out, "nfe_mean": float(np.mean(nfe)) if nfe else None}


def bench_model(model: str, a) -> dict:
    if a.timesteps == "auto":  # plain auto refines the sampling grid; with --grid, exactly that grid
        timesteps = f"auto:{a.grid}" if a.grid else "auto"
    else:
        timesteps = a.grid or GRIDS[model]
    extra = {"edge_precision": a.edge_precision} if a.timesteps == "auto" and a.edge_precision else {}
    extra.update({"auto_aim": a.aim} if a.timesteps == "auto" else {})
    common = dict(samples=a.samples, restarts=a.restarts, timesteps=timesteps, tolerance=a.tolerance, extra=extra)
    truths, rows, nfe, seconds = {}, [], [], []
    large = None
    for i, seed in enumerate(a.seeds):
        t0 = time.perf_counter()
        backend, engine, records = run(model, seed=seed, **common)
        seconds.append(time.perf_counter() - t0)
        # the grid the truth is read on: the uniform grid measured, or the full grid auto refines
        grid = (list(engine.grid) if timesteps.startswith("auto")
                else sorted({float(t) for r in records for t in r.timesteps}))
        if "exact" not in truths:
            truths["exact"] = exact_truth(backend, grid, a.tolerance)
            if a.large_samples:
                t1 = time.perf_counter()
                print(f"[{model}] large run {a.large_samples} x {a.large_restarts} ...", file=sys.stderr, flush=True)
                _, _, big = run(model, samples=a.large_samples, restarts=a.large_restarts,
                                timesteps=",".join(repr(t) for t in grid), seed=LARGE_SEED, tolerance=a.tolerance)
                truths["large"] = large_truth(big, a.tolerance)
                large = {"samples": a.large_samples, "restarts": a.large_restarts, "seed": LARGE_SEED,
                         "seconds": round(time.perf_counter() - t1, 1),
                         "edges": {"|".join(map(str, k)): v for k, v in truths["large"].items()}}
        coarse = {r.parent_feature for r in records if r.parent_feature is not None}
        keys = set(truths["exact"])
        rows.extend(score([r for r in records if r.key in keys], grid, truths, coarse))
        nfe.append(int(engine.nfe()))
        done = [r for r in rows if r["truth"] == "exact" and r["covered"] is not None]
        print(f"[{model}] seed {seed} ({i + 1}/{len(a.seeds)}): {seconds[-1]:.1f} s, {nfe[-1]} evaluations, "
              f"exact coverage so far {np.mean([r['covered'] for r in done]):.3f} over {len(done)} edges",
              file=sys.stderr, flush=True)
    return {"model": model, "timesteps": timesteps, "samples": a.samples, "restarts": a.restarts,
            "seeds": a.seeds, "seconds_per_seed": float(np.mean(seconds)), "nfe_per_seed": nfe,
            "exact_edges": {"|".join(map(str, k)): v for k, v in truths["exact"].items()}, "large_run": large,
            **summary(rows, nfe), "rows": rows if a.rows else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--seeds", type=seeds_of, default=seeds_of("0-2"), help="e.g. 100-129 or 0,3,5")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--timesteps", choices=("uniform", "auto"), default="uniform")
    p.add_argument("--grid", default=None, help="the uniform grid (default: 0:1000:50; default-text 0:1:0.1); "
                   "with --timesteps auto: the grid auto refines (auto:GRID; default: the sampling grid)")
    p.add_argument("--edge-precision", type=float, default=None, help="with --timesteps auto")
    p.add_argument("--aim", default="edge", help="with --timesteps auto: its --auto-aim, edge or interval")
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--large-samples", type=int, default=0, help="a large run's base samples (0: no large run)")
    p.add_argument("--large-restarts", type=int, default=8)
    p.add_argument("--rows", action="store_true", help="also list every scored edge")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    bad = [m for m in a.models.split(",") if m not in MODELS]
    if bad:
        p.error(f"--models: {bad[0]!r} is not one of {', '.join(MODELS)}")
    started = time.perf_counter()
    result = {"models": [bench_model(m, a) for m in a.models.split(",")],
              "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
