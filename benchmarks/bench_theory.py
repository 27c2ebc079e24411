"""Benchmark: the theory's Monte Carlo engine, old (before the scaling work) against new.

Two cases, each run in its own subprocess (wall seconds of `predict_windows` alone, and its
peak memory as the rise of the process's maximum resident set over the level after loading
the data):

1. ``digits``: the default theory, an `EmpiricalMixture` of the 1,347 training digits
   (d = 64), features digit + group, delta 0.1, `ou_times` of timesteps 0, 50, ..., 950 of a
   linear DDPM schedule;
2. ``latent``: 64 labelled points in d = 16,384 (4 labels of 16 around 4 centres, and 2
   groups of 2 labels), the same call. The old engine needs more than 12 minutes and 5 GB
   here, so it runs only with ``--old-latent`` (a timeout in seconds).

The old engine is the package `diffusion_windows.theory` at git ``--old-ref`` (default
48fee2f), extracted with ``git archive`` into a temporary folder and imported under another
name. Prints one JSON object as its last line: per case ``old``/``new`` seconds and
``peak_mb``, the ratios old / new, and the agreement of the values: ``max_z`` and
``rms_z`` of |new - old| / sqrt(se_new^2 + se_old^2) over thresholds (t_after, t_before)
and ideal retention values (differences below 3e-4, values that rest on draws too rare to
see, are left out), and the largest standard errors of each.

    python benchmarks/bench_theory.py                    # ~1 min on 2 cores
    python benchmarks/bench_theory.py --old-latent 900   # also the old engine on d = 16,384
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import importlib, json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
sys.path.insert(0, {extra!r})
th = importlib.import_module({module!r})
case = {case!r}
ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
ou = -0.5 * np.log(ab[np.arange(0, 1000, 50)])
if case == "digits":
    from diffusion_windows.diffusion.theory import default_mixture
    from diffusion_windows.features import DEFAULT_FEATURES
    m = default_mixture()
    mix, feats = th.EmpiricalMixture(m.means, m.labels), DEFAULT_FEATURES
else:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 16)
    pts = rng.normal(size=(4, 16384))[labels] * 0.5 + rng.normal(size=(64, 16384))
    mix = th.EmpiricalMixture(pts, labels)
    feats = [{{"name": "label", "values": {{str(i): (i,) for i in range(4)}}}},
             {{"name": "group", "values": {{"a": (0, 1), "b": (2, 3)}}}}]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
out = th.predict_windows(mix, feats, delta=0.1, ou_times=ou, seed=0)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
json.dump({{"seconds": seconds, "peak_mb": peak / 1024, "records": [r.to_dict() for r in out]}},
          open({dump!r}, "w"), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
'''


def run(case, module, extra, tmp, timeout=None):
    dump = os.path.join(tmp, f"{case}-{module.replace('.', '_')}.json")
    code = CHILD.format(root=str(REPO), extra=extra, module=module, case=case, dump=dump)
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout, cwd=tmp)
    except subprocess.TimeoutExpired:
        return {"seconds": f"> {timeout}", "peak_mb": None, "records": None}
    with open(dump) as f:
        return json.load(f)


def agreement(old, new):
    """max and rms of |new - old| / sqrt(se_new^2 + se_old^2) over thresholds and retention."""
    import numpy as np

    zs = []
    for a, b in zip(old, new):
        pairs = [(a["t_after_ou"], a["t_after_se"], b["t_after_ou"], b["t_after_se"]),
                 (a["t_before_ou"], a["t_before_se"], b["t_before_ou"], b["t_before_se"])]
        pairs += list(zip(a["ideal_retention"], a["ideal_retention_se"], b["ideal_retention"],
                          b["ideal_retention_se"]))
        for va, sa, vb, sb in pairs:
            if not (np.isfinite(va) and np.isfinite(vb)) or abs(va - vb) <= 3e-4:
                continue
            zs.append(abs(va - vb) / max(np.hypot(sa, sb), 1e-12))
    zs = np.array(zs) if zs else np.zeros(1)
    return {"max_z": round(float(zs.max()), 2), "rms_z": round(float(np.sqrt((zs ** 2).mean())), 2),
            "compared": int(len(zs))}


def summary(rec):
    import numpy as np

    if rec["records"] is None:
        return {"seconds": rec["seconds"], "peak_mb": None}
    r = rec["records"]
    return {"seconds": round(rec["seconds"], 2), "peak_mb": round(rec["peak_mb"], 1),
            "max_retention_se": round(max(max(x["ideal_retention_se"]) for x in r), 5),
            "max_t_after_se": round(max(x["t_after_se"] for x in r), 5),
            "max_t_before_se": round(max((x["t_before_se"] for x in r if np.isfinite(x["t_before_ou"])),
                                         default=0.0), 5),
            "n_samples": max(x["n_samples"] for x in r)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-ref", default="48fee2f", help="git commit of the old engine")
    ap.add_argument("--old-latent", type=float, default=0, help="seconds to allow the old engine on d = 16,384 (0: skip)")
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.old_ref, "diffusion_windows/theory"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        os.rename(os.path.join(tmp, "diffusion_windows", "theory"), os.path.join(tmp, "dw_old_theory"))
        for case in ("digits", "latent"):
            new = run(case, "diffusion_windows.theory", tmp, tmp)
            if case == "digits" or args.old_latent > 0:
                old = run(case, "dw_old_theory", tmp, tmp, timeout=args.old_latent if case == "latent" else None)
            else:
                old = {"seconds": "not run (measured > 12 min and 5.4 GB; --old-latent S to try)",
                       "peak_mb": None, "records": None}
            entry = {"old": summary(old), "new": summary(new)}
            if old["records"] is not None:
                entry["speedup"] = round(old["seconds"] / new["seconds"], 2)
                entry["memory_ratio"] = round(old["peak_mb"] / max(new["peak_mb"], 1e-9), 2)
                entry["agreement"] = agreement(old["records"], new["records"])
            result[case] = entry
    result["old_ref"] = args.old_ref
    print(json.dumps(result))


if __name__ == "__main__":
    main()
