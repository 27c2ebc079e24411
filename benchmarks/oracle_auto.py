"""What a design told the answer would spend: how much ``--timesteps auto`` could save at best on a grid.

Any design that reads an edge from grid points must measure, for the edge's curve (the base samples of
its value), one grid point on each side of the threshold, close enough together that the edge it reports
lies within ``--within`` grid steps of the full grid's, with enough re-samples that each point's side is
known. This benchmark prices the cheapest such design for a finished uniform-grid run, one that is *told*
where the full grid's edges lie (`analysis.records.window_records`' own edge rules: the start at
``1 - delta``, each end at ``floor + delta``):

- per edge, the cheapest pair of grid points ``a < b`` that bracket it, ``a`` on the near side of the
  threshold and ``b`` past it in the full grid's readings, with ``b - a <= within + 1`` (so every edge
  between them lies within ``within`` steps of the one it reports);
- at each point, the fewest re-samples per base sample (the first ``k`` recorded ones, as auto runs them)
  at which the sequential test's own criterion holds: the chance that the full grid's reading lies on the
  other side of the threshold (`engine.allocation.flip_chance`) is at most ``miss / 2``, so the edge
  misses with probability at most ``--miss`` (default: the policy's ``MISS``); and the reading is on the
  full grid's side;
- a re-sample serves every feature (a digit's base samples are also its group's), so each base sample
  is counted once per time, at the most re-samples any edge asks of it there.

It spends nothing finding the edges and checks no other point, so a real search spends more. Its ratio to
the uniform grid's evaluations is the most any such design could save, given the run's base samples
(``ratio``); ``ratio_full`` is the same points at every re-sample.

    python benchmarks/oracle_auto.py runs/u50-seed1 [runs/u50-seed2 ...] [--within 1] [--miss 0.2]

Prints one JSON line per folder (``nfe_uniform``, ``nfe_oracle``, ``ratio``, ``nfe_oracle_full``,
``ratio_full``, ``points``: grid points per curve, ``mean_restarts``: per base sample and time, ``edges``),
then one summary line over the folders (``ratio`` min / median / max). A folder that is not a finished
uniform run: one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not another install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffusion_windows.analysis.counts import BaseLabels, record_counts  # noqa: E402
from diffusion_windows.analysis.edges import edge_indices, mean_retention  # noqa: E402
from diffusion_windows.engine.allocation import MISS, flip_chance, predictive_sd  # noqa: E402


def oracle(merged: dict, features, n_labels: int, grid, cost, *, restarts: int, tolerance: float,
           miss: float = MISS, within: int = 1) -> dict:
    """The told design's evaluations on a uniform run (module docstring). ``merged``: `merge_units` of the
    run, every base sample at every ``grid`` time with ``restarts`` re-samples; ``cost(t)``: the backend's."""
    grid = [float(t) for t in grid]
    prefix = [record_counts({b: BaseLabels(e.label, {t: v[:k] for t, v in e.labels.items()})
                             for b, e in merged.items()}, features, n_labels) for k in range(1, restarts + 1)]
    need, points, edges = {}, set(), 0  # (base sample, time) -> re-samples: a re-sample serves every feature
    for i, full in enumerate(prefix[-1]):
        if full.kept.shape[0] == 0:
            continue
        p_full = mean_retention(full.kept, full.total)
        thresholds = {"start": 1 - tolerance, "end": min(full.floor, 1.0) + tolerance}
        found = dict(zip(thresholds, edge_indices(p_full[None], *thresholds.values())))  # the full grid's edges
        for side, thr in thresholds.items():
            e = int(found[side][0])
            if e < 0:
                continue
            near = (lambda p: p >= thr) if side == "start" else (lambda p: p > thr)  # the side the edge lies in

            def fewest(j):
                for k, counts in enumerate(prefix, start=1):
                    p = mean_retention(counts[i].kept[:, [j]], counts[i].total[:, [j]])
                    sd = predictive_sd(counts[i].kept[:, [j]], counts[i].total[:, [j]], restarts)
                    if near(p[0]) == near(p_full[j]) and flip_chance(p, thr, sd)[0] <= miss / 2:
                        return k
                return restarts

            pairs = [(a, b) for a in range(len(grid)) for b in range(a + 1, min(a + within + 2, len(grid)))
                     if near(p_full[a]) and not near(p_full[b]) and
                     (a <= e < b if side == "start" else a < e <= b)]
            if not pairs:
                continue
            edges += 1
            price = {j: fewest(j) for pair in pairs for j in pair}
            a, b = min(pairs, key=lambda ab: sum(price[j] * cost(grid[j]) for j in ab))
            for j in (a, b):
                points.add((full.feature, full.value, grid[j]))
                for base in full.bases:
                    need[base, grid[j]] = max(price[j], need.get((base, grid[j]), 0))
    nfe = sum(k * cost(t) for (_, t), k in need.items())
    nfe_full = sum(restarts * cost(t) for _, t in need)
    return {"nfe_oracle": float(nfe), "nfe_oracle_full": float(nfe_full), "points": len(points), "edges": edges,
            "mean_restarts": round(float(np.mean(list(need.values()))), 3) if need else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="finished sweeps over every timestep of their sampling grid")
    p.add_argument("--within", type=int, default=1, help="grid steps the reported edge may lie from the full grid's")
    p.add_argument("--miss", type=float, default=MISS, help="the chance an edge may miss (two points: half each)")
    a = p.parse_args(argv)
    if a.within < 0 or not 0 < a.miss < 1:
        print(f"error: --within {a.within} --miss {a.miss}: want within >= 0 and 0 < miss < 1", file=sys.stderr)
        return 2
    from replay_auto import BadFolder, load_uniform

    ratios = []
    for folder in a.folders:
        try:
            o, live, grid, merged = load_uniform(Path(folder))
        except BadFolder as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        got = oracle(merged, live.features, len(live.labels), grid, live.cost, restarts=o["restarts"],
                     tolerance=o["tolerance"], miss=a.miss, within=a.within)
        uniform = len(merged) * o["restarts"] * sum(live.cost(t) for t in grid)
        ratios.append(uniform / got["nfe_oracle"])
        print(json.dumps({"folder": folder, "model": o["model"], "seed": o["seed"], "nfe_uniform": float(uniform),
                          **got, "ratio": round(ratios[-1], 3),
                          "ratio_full": round(uniform / got["nfe_oracle_full"], 3), "within": a.within, "miss": a.miss}))
    print(json.dumps({"folders": len(ratios), "within": a.within, "miss": a.miss,
                      "ratio": {"min": round(min(ratios), 3), "median": round(float(np.median(ratios)), 3),
                                "max": round(max(ratios), 3)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
