"""A run's results as files and text: window records with theory, ``windows.json``/``.csv``, the strip, the summary.

- `summarize(records, declared, run, *, theory=None) -> (records, extra)`: the window records
  of every feature value (`analysis.records`) with the theory beside them (`analysis.compare`):
  its answer on `theory_times(records)` or a precomputed `Predictions`, and the extra keys of
  ``windows.json`` (the sampler, the schedule for plot axes, the grid, the rounds with their
  times, units, re-samples, base samples made beyond ``--samples`` and model evaluations, the
  run's evaluations, edge precision, the theory's summary, a warning for a deterministic
  sampler). It reads plain data only: what the backend declares (`Declared`), what the engine
  counted (`RunFacts`) and the theory's answer; `engine.results.summarize_run` gathers them from
  a finished run through the `Backend` protocol. With ``--timesteps auto`` each
  record also says why its edges stopped (``start_stopped_by``, ``end_stopped_by``:
  ``"precision"``, ``"grid"``, ``"budget"``, ``"no-edge"``) and the evaluations they asked for
  (``start_nfe``, ``end_nfe``; `engine.engine.Engine.edge_report`).
- `write_windows(out, records, extra)`: ``windows.json`` and ``windows.csv``.
- `write_strip(out, store, merged, features, n_cols)`: ``strip.safetensors`` and ``strip.json``.
- `summary_table(records) -> str`: the terminal summary, theory beside measurement;
  `allocation_table(records, rounds) -> str`: with ``--timesteps auto``, evaluations per round and
  why each edge stopped.

Times are the backend's (``time_unit`` in ``windows.json``) unless a key says ``_ou``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare import Predictions, add_theory

__all__ = ["Declared", "RunFacts", "summarize", "theory_times", "write_windows", "write_strip", "summary_table",
           "edge_widths_in_steps", "finite"]


@dataclass(frozen=True)
class Declared:
    """What a backend declares about itself, as plain data (`engine.results.declared`)."""

    time_unit: str          # the unit of every time
    labels: tuple           # the classifier's labels
    features: tuple         # features.Feature over them
    sampler: dict           # its `describe()`: at least "name" and "stochastic"
    schedule: dict          # its `schedule_arrays()`: plot axes ({} for none)


@dataclass(frozen=True)
class RunFacts:
    """What the engine counted, as plain data (`engine.results.run_facts`)."""

    grid: tuple             # the times a restart can start from
    rounds: tuple           # per round: times, units, re-samples, new samples, evaluations (`Engine.round_summary`)
    nfe: int                # the run's model evaluations
    edges: dict = field(default_factory=dict)  # --timesteps auto: why each record's edges stopped (edge_report)
    auto: dict = field(default_factory=dict)   # --timesteps auto: the policy, its parameters, its grid (policy_report)


def theory_times(records) -> list:
    """Every time a record holds: where the theory is asked for its prediction."""
    return sorted({float(t) for r in records for t in r.timesteps})


def summarize(records, declared: Declared, run: RunFacts, *, theory=None):
    """``(records, extra)``: ``records`` with the theory beside them, and the extra keys of ``windows.json``.

    ``theory``: None (not asked for: ``--no-theory``), the theory's answer ``(Predictions | None,
    reason)`` on `theory_times` (`engine.results.theory_of`), or a precomputed `Predictions`."""
    summary = {"available": False, "reason": "theory=False"}
    if isinstance(theory, Predictions):
        records, summary = add_theory(records, theory), {**theory.summary, "precomputed": True}
    elif theory is not None:
        predictions, reason = theory
        if predictions is None:
            summary = {"available": False, "reason": reason}
        else:
            records, summary = add_theory(records, predictions), predictions.summary
    if run.edges:  # --timesteps auto: why each edge stopped, and the evaluations it asked for
        records = [dataclasses.replace(r, extra={**r.extra, **run.edges.get(r.key, {})}) for r in records]
    spacing = _grid_spacing(sorted({t for r in run.rounds for t in r["timesteps"]}))
    widths = edge_widths_in_steps(records, spacing)
    sampler = dict(declared.sampler)
    extra = {
        "time_unit": declared.time_unit,
        "sampler": sampler,
        "schedule": declared.schedule,
        "grid": list(run.grid),
        "rounds": list(run.rounds),
        "nfe": int(run.nfe),
        "edge_interval_steps": {"median": float(np.median(widths)) if widths else None,
                                "max": max(widths) if widths else None, "grid_spacing": spacing},
        "theory": summary,
    }
    if run.auto:  # --timesteps auto: the policy's name and parameters, and the grid it refines
        extra["auto"] = dict(run.auto)
    if not sampler.get("stochastic", True):
        msg = (f"{sampler['name']} is deterministic here: the measured retention is not the theory's "
               "forward-reverse quantity (THEORY.md, samplers)")
        extra["warning"] = msg
        warnings.warn(msg, stacklevel=2)
    return records, extra


def _grid_spacing(grid):
    g = np.sort(np.asarray(grid, dtype=float))
    return float(np.median(np.diff(g))) if len(g) > 1 else 1.0


CSV_KEYS = ("feature", "value", "parent", "n_base", "base_rate", "floor", "start_timestep", "start_ci_low",
            "start_ci_high", "end_timestep", "end_ci_low", "end_ci_high", "jump_upper", "jump_lower",
            "t_after_timestep", "t_before_timestep", "speciation_timestep", "eps_after", "eps_before",
            "bracket_holds", "start_minus_t_after", "t_before_minus_end")


def _flat(rec: dict) -> dict:
    row = {k: rec.get(k) for k in CSV_KEYS}
    for side in ("start", "end"):
        ci = rec.get(f"{side}_ci")
        row[f"{side}_ci_low"], row[f"{side}_ci_high"] = (ci if ci else (None, None))
    jump = rec.get("jump")
    row["jump_upper"], row["jump_lower"] = (jump if jump else (None, None))
    return row


def finite(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


def write_windows(out: Path, records, extra: dict) -> None:
    """Write ``windows.json`` (``{"features": records, **extra}``) and ``windows.csv``."""
    out = Path(out)
    with_theory = bool(extra.get("theory", {}).get("available", True))
    dicts = [r.to_dict(theory=with_theory) if hasattr(r, "to_dict") else dict(r) for r in records]
    tmp = out / "windows.json.tmp"
    tmp.write_text(json.dumps(finite({"features": dicts, **extra}), indent=1, allow_nan=False))
    tmp.replace(out / "windows.json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS)
    w.writeheader()
    for r in dicts:
        w.writerow({k: ("" if v is None else v) for k, v in _flat(r).items()})
    (out / "windows.csv").write_text(buf.getvalue())


def write_strip(out: Path, store, merged: dict, features, n_cols: int) -> None:
    """``strip.safetensors`` [rows, cols, C, H, W] and ``strip.json`` from the kept display rows."""
    from safetensors.numpy import save_file

    from ..features import feature_values

    rows = {b: c for b, c in store.load_strip().items() if b in merged}
    if not rows:
        return
    common = sorted(set.intersection(*(set(c) for c in rows.values())))
    pick = np.unique(np.round(np.linspace(0, len(common) - 1, min(n_cols, len(common)))).astype(int))
    cols = [common[i] for i in pick]
    bases = sorted(rows)
    images = np.stack([np.stack([rows[b][t] for t in cols]) for b in bases]).astype(np.float32)
    save_file({"images": images}, str(Path(out) / "strip.safetensors"))
    meta_rows = []
    for b in bases:
        label = merged[b].label
        labels = {}
        for f in features:
            vi = int(feature_values(f, np.asarray([label]))[0])
            labels[f.name] = list(f.values)[vi] if vi >= 0 else None
        meta_rows.append({"base": b, "labels": labels})
    meta = {"timesteps": cols, "rows": meta_rows, "feature": features[0].name}
    (Path(out) / "strip.json").write_text(json.dumps(meta, indent=1))


def edge_widths_in_steps(records, grid_spacing: float) -> list[float]:
    """Widths of every edge interval, in grid steps (for the default run's precision check)."""
    widths = []
    for r in records:
        for ci in (r.start_ci, r.end_ci):
            if ci:
                widths.append((ci[1] - ci[0]) / grid_spacing)
    return widths


def _fmt(v, width=5):
    if v is None:
        return "-".rjust(width)
    if isinstance(v, bool):
        return ("yes" if v else "no").rjust(width)
    return f"{v:.0f}".rjust(width) if abs(v) >= 10 or v == 0 else f"{v:.2g}".rjust(width)


def allocation_table(records, rounds) -> str:
    """``--timesteps auto``: evaluations per round, then why each record's edges stopped and their evaluations."""
    lines = ["round  times  units  re-samples  new samples  evaluations"]
    for i, r in enumerate(rounds):
        lines.append(f"{i:>5} {len(r['timesteps']):>6} {r['units']:>6} {r['restarts']:>11} {r['new_samples']:>12} "
                     f"{r['nfe']:>12}")
    lines.append(f"{'feature':<8} {'value':<16} | {'start stopped by':<16} {'evals':>8} | {'end stopped by':<16} "
                 f"{'evals':>8}")
    for r in records:
        if "start_stopped_by" not in r.extra:
            continue
        e = r.extra
        name = r.value if r.parent is None else f"{r.value} in {r.parent}"
        lines.append(f"{r.feature:<8} {name[:16]:<16} | {e['start_stopped_by']:<16} {e['start_nfe']:>8} | "
                     f"{e['end_stopped_by']:<16} {e['end_nfe']:>8}")
    return "\n".join(lines)


def summary_table(records) -> str:
    """A plain-text table: measured edges with intervals beside the theory's bracket."""
    head = (f"{'feature':<8} {'value':<12} {'n':>4} {'base':>5} | {'start':>5} {'[95% CI]':>11} "
            f"{'end':>5} {'[95% CI]':>11} | {'T_aft':>5} {'T_bef':>5} {'t_S':>5} {'holds':>5}")
    lines = [head, "-" * len(head)]
    for r in records:
        name = r.value if r.parent is None else f"{r.value} in {r.parent}"
        sci = r.start_ci or (None, None)
        eci = r.end_ci or (None, None)
        lines.append(
            f"{r.feature:<8} {name[:12]:<12} {r.n_base:>4} {r.floor or 0:>5.2f} | "
            f"{_fmt(r.start_timestep)} [{_fmt(sci[0], 4)},{_fmt(sci[1], 4)}] "
            f"{_fmt(r.end_timestep)} [{_fmt(eci[0], 4)},{_fmt(eci[1], 4)}] | "
            f"{_fmt(r.t_after_timestep)} {_fmt(r.t_before_timestep)} "
            f"{_fmt(r.speciation_timestep)} {_fmt(r.bracket_holds)}")
    return "\n".join(lines)
