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

The search refines the recording's own grid (``--timesteps auto:START:STOP:STEP`` on the
times the uniform run measured), so a flow model's uniform run in ``1000 sigma`` and a language
model's fraction grid replay like for like too.

Base samples: the search starts on the first ``--samples`` base samples of the recording (all
of them by default), and the uniform run it is compared with is the recording's restarts of
those same base samples. With ``--max-evaluations`` the search may make more base samples
(indices from ``--samples`` on): a replay takes them from the recording, so a recording with
more base samples than ``--samples`` replays that part honestly; one that holds too few makes
the replay fail (exit 2) with a line that says so, never a silent substitute.

Prints one JSON line: ``nfe_uniform``, ``nfe_auto`` (restarts, and the generation of base samples
beyond ``--samples``: ``nfe_new_samples``), ``nfe_ratio``, ``edges_within_one``,
``edges_within_two`` (grid steps of the sampling grid), ``edges_in_uniform_interval`` (auto's
edges inside the uniform run's bootstrap interval of the same edge), ``half_restarts_within_one``
and ``half_restarts_within_two`` (the same fractions for the uniform run itself read with the first
half of its re-samples: how well the edges reproduce at half the uniform grid's evaluations, the
floor the search's agreement is to be read against), ``edges_agree``, ``auto_rounds``,
``median_interval_auto``/``median_interval_uniform`` (bootstrap edge intervals, timesteps),
``stopped_by`` (edges per reason) and ``nfe_by_side`` (evaluations asked for by start and end
edges), and ``policy`` (the policy's name and parameters, as ``windows.json`` records them). The
folder must hold every one of its grid's times on every base sample (exit 2 otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not another install

from diffusion_windows.engine.backend import UnitResult, restart_slots  # noqa: E402


class ShortRecording(RuntimeError):
    """The search asked for a base sample the recording does not hold."""


class ReplayBackend:
    """The engine's `Backend` over a finished run: the recorded labels of each (base, time), restarts
    ``k0..k1-1`` of them; the model's own grid and cost model."""

    more_samples = True  # base samples beyond --samples come from the recording (`ShortRecording` if too few)

    def __init__(self, live, merged):
        self.live, self.merged = live, merged
        self.time_unit, self.labels, self.features, self.grid = live.time_unit, live.labels, live.features, live.grid
        self.name = f"replay of {live.name}"

    def describe(self):
        return self.live.describe()

    def schedule_arrays(self):
        return self.live.schedule_arrays()

    def cost(self, time):
        return self.live.cost(time)

    def snap(self, times):
        return self.live.snap(times)

    def prepare(self, bases, *, total, seed, batch_size, start=0):
        missing = [b for b in bases if b not in self.merged]
        if missing:
            raise ShortRecording(f"the search asked for base sample {missing[0]}; the recording holds "
                                 f"{len(self.merged)}: record with more --samples")

    def run(self, plan, *, restarts, seed, batch_size, keep=()):
        out = []
        for b in sorted(plan):
            slots = restart_slots(plan[b], restarts)
            rows = tuple(self.merged[b].labels[t][k0:k1] for t, k0, k1 in slots)
            if any(len(row) != k1 - k0 for row, (_, k0, k1) in zip(rows, slots)):
                raise ShortRecording(f"the search asked for more restarts of base {b} than the recording holds")
            out.append(UnitResult(b, self.merged[b].label, tuple(t for t, _, _ in slots), rows,
                                  sum((k1 - k0) * self.cost(t) for t, k0, k1 in slots),
                                  first=tuple(k0 for _, k0, _ in slots)))
        return out


class BadFolder(ValueError):
    """A folder that is not a finished uniform-grid run holding every grid timestep on every base sample."""


def load_uniform(folder: Path):
    """``(options, live backend, grid, {base: BaseLabels})`` of a finished uniform-grid run, its labels at
    the grid's times only; `BadFolder` (one line) for anything else."""
    from diffusion_windows.analysis.counts import BaseLabels, merge_units
    from diffusion_windows.backends import load_backend
    from diffusion_windows.engine import ResultStore

    if not (folder / "options.json").exists():
        raise BadFolder(f"{folder} has no options.json: not a sweep folder")
    o = json.loads((folder / "options.json").read_text())
    if not isinstance(o["timesteps"], list):
        raise BadFolder(f"{folder} is not a uniform run (--timesteps {o['timesteps']})")
    live = load_backend(o)
    grid = np.asarray(live.snap(o["timesteps"]))  # the recorded grid: what auto refines
    merged = merge_units(ResultStore(folder).read_all())
    missing = [t for t in grid if any(float(t) not in e.labels for e in merged.values())]
    if len(merged) < o["samples"] or missing:
        raise BadFolder(f"{folder} does not hold every base sample at every grid timestep "
                        f"(timestep {f'{missing[0]:g}' if missing else '-'} missing; {len(merged)} of "
                        f"{o['samples']} base samples)")
    on_grid = {float(t) for t in grid}  # a uniform run may also hold timesteps off the grid
    merged = {b: BaseLabels(e.label, {t: v for t, v in e.labels.items() if t in on_grid}) for b, e in merged.items()}
    return o, live, grid, merged


def interval_widths(records) -> list:
    return [ci[1] - ci[0] for r in records for ci in (r.start_ci, r.end_ci) if ci]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a finished sweep over every timestep of its sampling grid")
    p.add_argument("--precision", type=float, default=None,
                   help="auto's edge precision in timesteps (default: one step of the sampling grid)")
    p.add_argument("--samples", type=int, default=None,
                   help="base samples the search starts with (default: all the recording holds)")
    p.add_argument("--initial-restarts", type=int, default=None, help="auto's first re-samples per (base, time)")
    p.add_argument("--max-evaluations", type=int, default=None, help="auto's budget of model evaluations")
    p.add_argument("--aim", default="edge", help="auto's --auto-aim: edge or interval")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws of the compared intervals")
    a = p.parse_args(argv)
    from bench_sweep import compare_edges

    from diffusion_windows.analysis.counts import BaseLabels, merge_units
    from diffusion_windows.analysis.records import window_records
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.engine.adaptive import auto_spec

    try:
        o, live, grid, merged = load_uniform(Path(a.folder))
    except BadFolder as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samples = a.samples or o["samples"]
    if samples > len(merged):
        print(f"error: --samples {samples}: the recording holds {len(merged)} base samples", file=sys.stderr)
        return 2
    first = {b: e for b, e in merged.items() if b < samples}  # the uniform run the search is compared with
    spacing = float(np.median(np.diff(grid)))
    precision = a.precision or spacing
    settings = Settings.from_options({**o, "samples": samples, "timesteps": auto_spec(grid),
                                      "edge_precision": precision,
                                      "initial_restarts": a.initial_restarts, "max_evaluations": a.max_evaluations,
                                      "auto_aim": a.aim})
    try:
        engine = Engine(ReplayBackend(live, merged), settings, MemoryStore(), quiet=True).run()
    except ShortRecording as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_labels = len(live.labels)
    auto = engine.store.read_all()
    rec_auto = window_records(merge_units(auto), live.features, n_labels, tolerance=o["tolerance"], n_boot=a.n_boot)
    rec_uni = window_records(first, live.features, n_labels, tolerance=o["tolerance"], n_boot=a.n_boot)
    within1, within2, n_edges, inside = compare_edges(rec_uni, rec_auto, spacing)
    # the floor: the uniform run itself read with its first half of re-samples (half its evaluations)
    half = {b: BaseLabels(e.label, {t: v[:max(1, o["restarts"] // 2)] for t, v in e.labels.items()})
            for b, e in first.items()}
    rec_half = window_records(half, live.features, n_labels, tolerance=o["tolerance"], n_boot=a.n_boot)
    half1, half2, _, _ = compare_edges(rec_uni, rec_half, spacing)
    nfe_uni = len(first) * o["restarts"] * sum(live.cost(t) for t in grid)
    nfe_auto = engine.nfe()
    report = engine.edge_report()
    stops = Counter(row[f"{side}_stopped_by"] for row in report.values() for side in ("start", "end"))
    by_side = {side: int(sum(v for e, v in engine.edge_nfe.items() if e[1] == side)) for side in ("start", "end")}
    result = {"folder": a.folder, "samples": samples, "restarts": o["restarts"], "seed": o["seed"],
              "grid_spacing": spacing, "auto_precision": precision, "initial_restarts": settings.initial,
              "max_evaluations": a.max_evaluations, "nfe_uniform": nfe_uni, "nfe_auto": nfe_auto,
              "nfe_new_samples": int(sum(k.nfe for k in engine.blocks)),
              "new_samples": int(sum(k.stop - k.start for k in engine.blocks)),
              "nfe_ratio": round(nfe_uni / nfe_auto, 3), "auto_rounds": len(engine.rounds),
              "edges_compared": n_edges, "edges_within_one": within1, "edges_within_two": within2,
              "edges_in_uniform_interval": inside, "half_restarts_within_one": half1,
              "half_restarts_within_two": half2, "edges_agree": bool(within2 is not None and within2 >= 0.9),
              "median_interval_auto": float(np.median(interval_widths(rec_auto))),
              "median_interval_uniform": float(np.median(interval_widths(rec_uni))),
              "stopped_by": dict(sorted(stops.items())), "nfe_first_round": engine.round_summary()[0]["nfe"],
              "nfe_by_side": by_side, "policy": engine.policy_report()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
