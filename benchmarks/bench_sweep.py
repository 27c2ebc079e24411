"""Benchmark: the toolkit's sweep against the plain loop a user would write without it.

Runs the same measurement on the bundled default model three ways in one process:

1. ``baseline``: for each base sample and each of the 50 uniform timesteps of the 50-step
   grid, ``scheduler.add_noise`` then a plain scheduler loop over a batch of K restarts
   (written out below), then the classifier;
2. ``uniform``: the toolkit (staircase batching) on the same 50 timesteps;
3. ``auto``: the toolkit with ``timesteps="auto:0:1000:STEP"`` (`diffusion_windows.adaptive` on the
   same grid), at the uniform grid's own edge precision: every edge bracketed by adjacent grid timesteps.

Prints one JSON object as its last line: ``baseline_s``, ``uniform_s``, ``auto_s``,
``nfe_uniform``, ``nfe_auto``, ``nfe_ratio`` (uniform / auto), ``speedup`` (baseline / auto),
``speedup_uniform`` (baseline / uniform), ``model_time_share`` (time inside the UNet's
forward / measurement time, for each toolkit run), ``edges_within_one``/``edges_within_two``
(fractions of auto's edges within one/two grid steps of the uniform run's),
``edges_in_uniform_interval`` (the fraction inside the uniform run's bootstrap interval of the
same edge) and ``edges_agree`` (``edges_within_two >= 0.9``). Times are seconds of the
measurement phase (base samples, restarts, classification; no theory, no plots). Ratios are what to compare:
absolute times drift on shared machines.

    python benchmarks/bench_sweep.py            # full: 60 base samples x 8 restarts (~15 min on 2 cores)
    python benchmarks/bench_sweep.py --quick    # a tiny version for CI
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch


def plain_baseline(pipe, classifier, *, samples, restarts, timesteps, steps, seed):
    """What a user writes without the toolkit: add_noise, then a plain loop per (base, timestep)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = pipe(batch_size=samples, num_inference_steps=steps, generator=gen, output_type="np").images
    x0 = torch.from_numpy(x0).permute(0, 3, 1, 2) * 2 - 1
    labels = classifier((x0 / 2 + 0.5).clamp(0, 1)).argmax(1)
    kept = np.zeros((samples, len(timesteps)))
    nfe = 0
    for b in range(samples):
        for j, t in enumerate(timesteps):
            sched = copy.deepcopy(pipe.scheduler)
            sched.set_timesteps(steps)
            x = x0[b:b + 1].repeat(restarts, 1, 1, 1)
            x = sched.add_noise(x, torch.randn(x.shape, generator=gen), torch.tensor([t]))
            with torch.no_grad():
                for tt in sched.timesteps[sched.timesteps <= t]:
                    eps = pipe.unet(x, tt).sample
                    x = sched.step(eps, tt, x, generator=gen).prev_sample
                    nfe += restarts
            pred = classifier((x / 2 + 0.5).clamp(0, 1)).argmax(1)
            kept[b, j] = float((pred == labels[b]).float().mean())
    return nfe, kept


class ModelTimer:
    """Accumulates wall time spent inside ``unet.forward``."""

    def __init__(self, unet):
        self.unet, self.seconds = unet, 0.0
        self._forward = unet.forward

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self._forward(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        unet.forward = timed

    def reset(self):
        self.seconds = 0.0


def toolkit(pipe, classifier, timer, *, samples, restarts, timesteps, steps, seed, batch_size, precision):
    """The toolkit's measurement phase; returns (seconds, nfe, model share, records)."""
    from diffusion_windows.analysis.counts import merge_units
    from diffusion_windows.analysis.records import window_records
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.features import DEFAULT_FEATURES
    from diffusion_windows.options import parse_timesteps

    backend = DiffusionBackend(pipe, classifier, DEFAULT_FEATURES, steps)
    settings = Settings(samples=samples, restarts=restarts, timesteps=parse_timesteps(timesteps, 1000), seed=seed,
                        batch_size=batch_size, tolerance=0.1, edge_precision=precision)
    engine = Engine(backend, settings, MemoryStore(), quiet=True)
    timer.reset()
    t0 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t0
    recs = engine.store.read_all()
    records = window_records(merge_units(recs), backend.features, 10, tolerance=0.1, seed=seed)
    return seconds, engine.nfe(), timer.seconds / seconds, records, engine.rounds


def compare_edges(uniform, auto, spacing):
    """Fractions of auto's edges within one and two grid steps of the uniform run's, their number,
    and the fraction inside the uniform run's own bootstrap interval of that edge (an edge only one
    of the runs has counts as outside, and as farther than two steps)."""
    u = {r.key: r for r in uniform}
    diffs, inside = [], []
    for r in auto:
        ru = u.get(r.key)
        if ru is None:
            continue
        for side in ("start", "end"):
            a, b = getattr(r, f"{side}_timestep"), getattr(ru, f"{side}_timestep")
            if a is None and b is None:
                continue
            diffs.append(np.inf if a is None or b is None else abs(a - b))
            ci = getattr(ru, f"{side}_ci")
            inside.append(a is not None and b is not None and (a == b or (ci is not None and ci[0] <= a <= ci[1])))
    diffs = np.asarray(diffs)
    if not len(diffs):
        return None, None, 0, None
    return (float(np.mean(diffs <= spacing + 1e-9)), float(np.mean(diffs <= 2 * spacing + 1e-9)), len(diffs),
            float(np.mean(inside)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    p.add_argument("--samples", type=int, default=60)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="inference steps (grid spacing 1000/steps)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--precision", type=float, default=None,
                   help="auto's edge precision in timesteps (default: one grid step, the uniform grid's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = p.parse_args(argv)
    if a.quick:
        a.samples, a.restarts, a.steps = 4, 2, 10
    from diffusion_windows import load_default_classifier, load_default_pipeline

    torch.manual_seed(a.seed)
    pipe = load_default_pipeline(device=a.device)
    pipe.set_progress_bar_config(disable=True)
    dtype = getattr(torch, a.dtype)
    pipe.unet.to(dtype=dtype)
    if a.device.startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    classifier = load_default_classifier(device=a.device)
    spacing = 1000 // a.steps
    timesteps = list(range(0, 1000, spacing))
    precision = a.precision or spacing
    timer = ModelTimer(pipe.unet)

    t0 = time.perf_counter()
    nfe_base, _ = plain_baseline(pipe, classifier, samples=a.samples, restarts=a.restarts,
                                 timesteps=timesteps, steps=a.steps, seed=a.seed)
    baseline_s = time.perf_counter() - t0
    common = dict(samples=a.samples, restarts=a.restarts, steps=a.steps, seed=a.seed, batch_size=a.batch_size,
                  precision=precision)
    uni_s, nfe_uni, share_uni, rec_uni, _ = toolkit(pipe, classifier, timer,
                                                    timesteps=f"0:1000:{spacing}", **common)
    auto_s, nfe_auto, share_auto, rec_auto, rounds = toolkit(pipe, classifier, timer,
                                                             timesteps=f"auto:0:1000:{spacing}", **common)
    within1, within2, n_edges, inside = compare_edges(rec_uni, rec_auto, spacing)
    result = {
        "device": a.device, "dtype": a.dtype, "samples": a.samples, "restarts": a.restarts,
        "inference_steps": a.steps, "grid_spacing": spacing, "auto_precision": precision,
        "baseline_s": round(baseline_s, 3), "uniform_s": round(uni_s, 3), "auto_s": round(auto_s, 3),
        "nfe_baseline": nfe_base, "nfe_uniform": nfe_uni, "nfe_auto": nfe_auto,
        "nfe_ratio": round(nfe_uni / nfe_auto, 3),
        "speedup": round(baseline_s / auto_s, 3), "speedup_uniform": round(baseline_s / uni_s, 3),
        "model_time_share": round(min(share_uni, share_auto), 3),
        "model_time_share_uniform": round(share_uni, 3), "model_time_share_auto": round(share_auto, 3),
        "samples_per_second_uniform": round(nfe_uni / uni_s, 1),
        "auto_rounds": len(rounds), "edges_compared": n_edges,
        "edges_within_one": within1, "edges_within_two": within2, "edges_in_uniform_interval": inside,
        "edges_agree": bool(within2 is not None and within2 >= 0.9),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
