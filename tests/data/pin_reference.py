"""Write ``reference_runs.json``: the measured fields of three small runs, pinned by tests/test_architecture.py.

The committed file was written by the code before the engine/backend redesign (48fee2f) and the
redesigned code reproduces it bit for bit. Rerun only when a change of measured results is
intended (and say so in the commit):

    python tests/data/pin_reference.py            # runs the three sweeps, rewrites reference_runs.json
    python tests/data/pin_reference.py DIR...     # pins finished sweep folders named uniform, auto, gm
    python tests/data/pin_reference.py --only auto   # reruns and re-pins one run, keeps the others
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's package, not another install

RUNS = {
    "uniform": dict(samples=12, restarts=2, timesteps="0:1000:100", num_inference_steps=10, seed=3),
    "auto": dict(samples=12, restarts=2, timesteps="auto", num_inference_steps=10, seed=3),
    "gm": dict(model="gaussian-mixture", samples=12, restarts=3, timesteps="0:1000:100", num_inference_steps=20,
               seed=2),
}
MEASURED = ("n_base", "timesteps", "retention", "ci_low", "ci_high", "base_rate", "floor", "start_timestep",
            "start_ci", "end_timestep", "end_ci", "jump")


def measured(windows: dict) -> dict:
    """The measured fields of a ``windows.json``: per record, and the run's rounds and evaluations."""
    records = {f"{r['feature']}|{r['value']}|{r.get('parent')}": {k: r.get(k) for k in MEASURED}
               for r in windows["features"]}
    rounds = [r["timesteps"] if isinstance(r, dict) else r for r in windows["rounds"]]  # dicts since issue 16
    return {"records": records, "rounds": rounds, "nfe": windows["nfe"]}


def main(folders, only=None):
    path = Path(__file__).with_name("reference_runs.json")
    out = json.loads(path.read_text()) if only else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in RUNS.items():
            if only and name != only:
                continue
            folder = Path(folders[name]) if folders else Path(tmp) / name
            if not folders:
                from diffusion_windows import run_sweep

                run_sweep(out=str(folder), quiet=True, **opts)
            out[name] = {"options": opts, **measured(json.loads((folder / "windows.json").read_text()))}
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--only"]:
        main(None, only=args[1])
    else:
        main({Path(a).name: a for a in args} if args else None)
