"""``--timesteps auto`` against the uniform grid it refines, on the exact models: how often each run's
edges lie within one grid step of the true edge, and what each cost.

For each model and seed: a uniform run on ``--grid`` and an auto run on the same grid
(``auto:GRID``), same base samples and seed; the truth is the ideal curve read on that grid by the
same edge rule with the exact floor (`bench_calibration.exact_truth`); coverage of the 95% intervals
as `bench_calibration.score` counts it. Prints one JSON object per model: ``within_one``
(``uniform``, ``auto``: share of true edges the run's edge lies within one grid step of),
``within_two``, ``exact``, ``coverage`` (by side; ``coverage_by_kind``: by design, kind of record and side),
``median_width_steps`` (of the intervals, by design, kind and side), ``nfe_ratio`` (uniform / auto, summed over seeds).

    OMP_NUM_THREADS=1 python benchmarks/bench_auto_truth.py --models gaussian-mixture-flow \\
        --grid 0:1000:20 --steps 50 --seeds 100-119 --samples 60 --restarts 8
    python benchmarks/bench_auto_truth.py --models gaussian-mixture --seeds 100-129   # defaults: 300 x 4, 0:1000:50

``--auto auto`` runs plain ``--timesteps auto`` (the sampling grid) instead, read against the truth on
that grid: what a checkout without ``auto:GRID`` can run (``--package`` picks the checkout).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gaussian-mixture,gaussian-mixture-flow")
    p.add_argument("--seeds", default="100-119")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--grid", default="0:1000:50", help="the uniform grid (auto refines the same)")
    p.add_argument("--steps", type=int, default=None, help="--num-inference-steps (default: the model's)")
    p.add_argument("--edge-precision", type=float, default=None, help="default: one step of --grid")
    p.add_argument("--auto", default="grid", choices=("grid", "auto"), help="auto:GRID, or plain auto")
    p.add_argument("--miss", type=float, default=None, help="the policy's miss chance (default: its own)")
    p.add_argument("--aim", default="edge", help="auto's --auto-aim: edge or interval")
    p.add_argument("--designs", default="uniform,auto", help="which runs to make (uniform, auto or both)")
    p.add_argument("--rows", default=None, help="also write every scored (design, seed, record, side) row here, JSON lines")
    p.add_argument("--package", default=str(Path(__file__).resolve().parent.parent), help="checkout to import")
    a = p.parse_args(argv)
    sys.path.insert(0, a.package)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_calibration import exact_truth, run, score, seeds_of

    sys.path.insert(0, a.package)  # bench_calibration put this checkout first: the asked one goes before it
    if a.miss is not None:
        from diffusion_windows.engine import allocation

        allocation.MISS = a.miss

    start, stop, step = (float(x) for x in a.grid.split(":"))
    precision = a.edge_precision or step
    extra = {"num_inference_steps": a.steps} if a.steps else {}
    truths = {}
    for model in a.models.split(","):
        hits = defaultdict(list)
        cover = defaultdict(list)
        by_kind = defaultdict(list)
        width = defaultdict(list)
        nfe = defaultdict(int)
        for seed in seeds_of(a.seeds):
            runs = {"uniform": a.grid, "auto": f"auto:{a.grid}" if a.auto == "grid" else "auto"}
            runs = {k: v for k, v in runs.items() if k in a.designs.split(",")}
            for name, spec in runs.items():
                more = {**extra, **({"edge_precision": precision, "auto_aim": a.aim} if name == "auto" else {})}
                backend, engine, records = run(model, samples=a.samples, restarts=a.restarts, timesteps=spec,
                                               seed=seed, tolerance=0.1, extra=more)
                grid = list(engine.grid) if name == "auto" else sorted({float(t) for r in records for t in r.timesteps})
                key = (model, tuple(grid))
                if key not in truths:  # the ideal curve depends on the model and the grid only
                    truths[key] = exact_truth(backend, grid, 0.1)
                truth = truths[key]
                coarse = {r.parent_feature for r in records if r.parent_feature is not None}
                rows = score([r for r in records if r.key in truth], grid, {"exact": truth}, coarse)
                for r in rows:
                    if r["covered"] is None:
                        continue
                    err = r.get("error_steps")
                    hits[name].append(np.inf if err is None else abs(err))
                    cover[(name, r["side"])].append(r["covered"])
                    by_kind[(name, r["kind"], r["side"])].append(r["covered"])
                    if r["width_steps"] is not None:
                        width[(name, r["kind"], r["side"])].append(r["width_steps"])
                    if a.rows:
                        with open(a.rows, "a") as f:
                            f.write(json.dumps({"model": model, "design": name, "seed": seed, **r}) + "\n")
                nfe[name] += int(engine.nfe())
            print(f"[{model}] seed {seed}: nfe {nfe['uniform']} / {nfe['auto']}", file=sys.stderr, flush=True)
        out = {"model": model, "grid": a.grid, "steps": a.steps, "samples": a.samples, "restarts": a.restarts,
               "seeds": a.seeds, "auto": a.auto, "edges": {k: len(v) for k, v in hits.items()},
               "within_one": {k: round(float(np.mean(np.asarray(v) <= 1 + 1e-9)), 4) for k, v in hits.items()},
               "within_two": {k: round(float(np.mean(np.asarray(v) <= 2 + 1e-9)), 4) for k, v in hits.items()},
               "exact": {k: round(float(np.mean(np.asarray(v) == 0)), 4) for k, v in hits.items()},
               "coverage": {f"{k[0]}_{k[1]}": round(float(np.mean(v)), 4) for k, v in sorted(cover.items())},
               "coverage_by_kind": {"_".join(k): round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())},
               "median_width_steps": {"_".join(k): float(np.median(v)) for k, v in sorted(width.items())},
               "nfe": dict(nfe), "nfe_ratio": round(nfe["uniform"] / nfe["auto"], 3) if nfe["uniform"] and nfe["auto"] else None}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
