"""Replay ``--timesteps auto`` on a finished uniform-grid sweep: what it would cost, and its edges.

A restart's seeds depend only on (run seed, base sample, timestep, restart), so every restart
the adaptive search runs is one that a sweep over the whole sampling grid ran too. Given
such a sweep's folder, this runs the search's rounds (`diffusion_windows.adaptive`, through
the sweep's own `Engine`) reading the recorded labels instead of running the model, and
compares its edges with the uniform run's, like ``bench_sweep.py`` does live. It makes the
search's behaviour on many seeds cheap to measure: one uniform run per seed.

    python -m diffusion_windows.sweep --timesteps 0:1000:20 --num-inference-steps 50 \\
        --samples 60 --restarts 8 --seed 1 --out runs/u50-seed1
    python benchmarks/replay_auto.py runs/u50-seed1 --precision 20

Prints one JSON line: ``nfe_uniform``, ``nfe_auto``, ``nfe_ratio``, ``edges_within_one``,
``edges_within_two`` (grid steps of the sampling grid), ``edges_agree``, ``auto_rounds``.
The folder must hold every timestep of the sampling grid (exit 2 otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def replay_units(merged, grid, scheduler):
    """A `units` function for `Engine`: the recorded labels of each (base, timestep), first ``restarts`` of them."""
    from diffusion_windows.measure import staircase_nfe

    def units(model, bases, plan, *, restarts, **_):
        return [{"base": b, "base_label": merged[b]["label"], "timesteps": list(plan[b]),
                 "labels": [merged[b]["labels"][float(t)][:restarts] for t in plan[b]],
                 "nfe": staircase_nfe(grid, plan[b], restarts, scheduler)} for b in sorted(plan)]
    return units


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a finished sweep over every timestep of its sampling grid")
    p.add_argument("--precision", type=float, default=None,
                   help="auto's edge precision in timesteps (default: one step of the sampling grid)")
    a = p.parse_args(argv)
    from bench_sweep import compare_edges

    from diffusion_windows.measure import grid_timesteps, staircase_nfe
    from diffusion_windows.models import load_model
    from diffusion_windows.report import merge_units, window_records
    from diffusion_windows.store import MemoryStore, ResultStore
    from diffusion_windows.sweep import Engine

    folder = Path(a.folder)
    if not (folder / "options.json").exists():
        print(f"error: {folder} has no options.json: not a sweep folder", file=sys.stderr)
        return 2
    o = json.loads((folder / "options.json").read_text())
    model = load_model(o)
    grid = np.sort(grid_timesteps(model))
    records = ResultStore(folder).read_all()
    merged = merge_units(records)
    missing = [t for t in grid if any(float(t) not in e["labels"] for e in merged.values())]
    if len(merged) < o["samples"] or missing:
        print(f"error: {folder} does not hold every base sample at every grid timestep "
              f"(timestep {f'{missing[0]:g}' if missing else '-'} missing; {len(merged)} of {o['samples']} base samples)",
              file=sys.stderr)
        return 2
    on_grid = {float(t) for t in grid}  # a uniform run may also hold timesteps off the grid
    merged = {b: {**e, "labels": {t: v for t, v in e["labels"].items() if t in on_grid}} for b, e in merged.items()}
    spacing = float(np.median(np.diff(grid)))
    precision = a.precision or spacing
    engine = Engine(model, {**o, "timesteps": "auto", "edge_precision": precision}, MemoryStore(), quiet=True,
                    units=replay_units(merged, grid, model.pipe.scheduler))
    engine.run()
    n_labels = len(model.classifier.labels)
    auto = engine.store.read_all()
    rec_auto = window_records(merge_units(auto), model.features, n_labels, tolerance=o["tolerance"], n_boot=1)
    rec_uni = window_records(merged, model.features, n_labels, tolerance=o["tolerance"], n_boot=1)
    within1, within2, n_edges = compare_edges(rec_uni, rec_auto, spacing)
    nfe_uni = len(merged) * staircase_nfe(grid, grid, o["restarts"], model.pipe.scheduler)
    nfe_auto = sum(r["nfe"] for r in auto)
    result = {"folder": str(folder), "samples": o["samples"], "restarts": o["restarts"], "seed": o["seed"],
              "grid_spacing": spacing, "auto_precision": precision, "nfe_uniform": nfe_uni, "nfe_auto": nfe_auto,
              "nfe_ratio": round(nfe_uni / nfe_auto, 3), "auto_rounds": len(engine.rounds),
              "edges_compared": n_edges, "edges_within_one": within1, "edges_within_two": within2,
              "edges_agree": bool(within2 is not None and within2 >= 0.9)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
