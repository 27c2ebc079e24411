"""Replay ``--timesteps auto`` on a finished uniform-grid sweep: what it would cost, and its edges.

A restart's seeds depend only on (run seed, base sample, timestep, restart), so every restart
the adaptive search runs is one that a sweep over the whole sampling grid ran too. Given such a
sweep's folder, this runs the search's rounds through the engine (`diffusion_windows.engine`)
on a `ReplayBackend` that reads the recorded labels instead of running the model, and compares
its edges with the uniform run's, like ``bench_sweep.py`` does live. It makes the search's
behaviour on many seeds cheap to measure: one uniform run per seed.

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

from diffusion_windows.engine.backend import UnitResult


class ReplayBackend:
    """The engine's `Backend` over a finished run: the recorded labels of each (base, time), first
    ``restarts`` of them; the model's own grid and cost model."""

    def __init__(self, live, merged):
        self.live, self.merged = live, merged
        self.time_unit, self.labels, self.features, self.grid = live.time_unit, live.labels, live.features, live.grid

    def cost(self, time):
        return self.live.cost(time)

    def snap(self, times):
        return self.live.snap(times)

    def prepare(self, bases, *, total, seed, batch_size):
        pass

    def run(self, plan, *, restarts, seed, batch_size, keep=()):
        return [UnitResult(b, self.merged[b].label, tuple(plan[b]),
                           tuple(self.merged[b].labels[float(t)][:restarts] for t in plan[b]),
                           restarts * sum(self.cost(t) for t in plan[b])) for b in sorted(plan)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a finished sweep over every timestep of its sampling grid")
    p.add_argument("--precision", type=float, default=None,
                   help="auto's edge precision in timesteps (default: one step of the sampling grid)")
    a = p.parse_args(argv)
    from bench_sweep import compare_edges

    from diffusion_windows.analysis.counts import BaseLabels, merge_units
    from diffusion_windows.analysis.records import window_records
    from diffusion_windows.diffusion.models import load_backend
    from diffusion_windows.engine import Engine, MemoryStore, ResultStore, Settings

    folder = Path(a.folder)
    if not (folder / "options.json").exists():
        print(f"error: {folder} has no options.json: not a sweep folder", file=sys.stderr)
        return 2
    o = json.loads((folder / "options.json").read_text())
    live = load_backend(o)
    grid = np.asarray(live.grid)
    records = ResultStore(folder).read_all()
    merged = merge_units(records)
    missing = [t for t in grid if any(float(t) not in e.labels for e in merged.values())]
    if len(merged) < o["samples"] or missing:
        print(f"error: {folder} does not hold every base sample at every grid timestep "
              f"(timestep {f'{missing[0]:g}' if missing else '-'} missing; {len(merged)} of {o['samples']} base samples)",
              file=sys.stderr)
        return 2
    on_grid = {float(t) for t in grid}  # a uniform run may also hold timesteps off the grid
    merged = {b: BaseLabels(e.label, {t: v for t, v in e.labels.items() if t in on_grid}) for b, e in merged.items()}
    spacing = float(np.median(np.diff(grid)))
    precision = a.precision or spacing
    settings = Settings.from_options({**o, "timesteps": "auto", "edge_precision": precision})
    engine = Engine(ReplayBackend(live, merged), settings, MemoryStore(), quiet=True).run()
    n_labels = len(live.labels)
    auto = engine.store.read_all()
    rec_auto = window_records(merge_units(auto), live.features, n_labels, tolerance=o["tolerance"], n_boot=1)
    rec_uni = window_records(merged, live.features, n_labels, tolerance=o["tolerance"], n_boot=1)
    within1, within2, n_edges = compare_edges(rec_uni, rec_auto, spacing)
    nfe_uni = len(merged) * o["restarts"] * sum(live.cost(t) for t in grid)
    nfe_auto = engine.nfe()
    result = {"folder": str(folder), "samples": o["samples"], "restarts": o["restarts"], "seed": o["seed"],
              "grid_spacing": spacing, "auto_precision": precision, "nfe_uniform": nfe_uni, "nfe_auto": nfe_auto,
              "nfe_ratio": round(nfe_uni / nfe_auto, 3), "auto_rounds": len(engine.rounds),
              "edges_compared": n_edges, "edges_within_one": within1, "edges_within_two": within2,
              "edges_agree": bool(within2 is not None and within2 >= 0.9)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
