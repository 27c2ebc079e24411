"""From unit results to window records: counts per feature value, estimates, files, summary.

- `merge_units(records) -> dict`: per base sample, its label and the restart labels per timestep.
- `feature_counts(merged, feature) -> {value: (timesteps, kept, total, bases)}`.
- `record_counts(merged, features, n_labels) -> list[RecordCounts]`: the counts and floor behind
  each record below (the adaptive search reads the same).
- `window_records(merged, features, *, tolerance, seed) -> list[dict]`: one record per feature
  value (``S_before`` = the whole data, floor = base rate) plus one per nested pair (a value
  of a finer feature inside a value of a coarser one, floor ``w(S_after)/w(S_before)``;
  THEORY.md, last section). Keys as ``windows.json`` (DESIGN.md); theory keys are added by
  `diffusion_windows.compare`.
- `write_windows(out, records, extra)`: ``windows.json`` and ``windows.csv``.
- `summary_table(records) -> str`: the terminal summary, theory beside measurement.

All times are training timesteps unless a key says ``_ou``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import Feature
from .windows import estimate_window


def merge_units(records) -> dict:
    """``{base: {"label": int, "labels": {timestep: [labels]}}}`` from unit records (later wins)."""
    merged: dict = {}
    for r in records:
        b = int(r["base"])
        entry = merged.setdefault(b, {"label": int(r["base_label"]), "labels": {}})
        for t, labels in zip(r["timesteps"], r["labels"]):
            entry["labels"][float(t)] = list(labels)
    return merged


def _value_of_label(feature: Feature, n_labels: int) -> np.ndarray:
    lut = np.full(n_labels, -1, dtype=int)
    for i, members in enumerate(feature.values.values()):
        lut[list(members)] = i
    return lut


def feature_counts(merged: dict, feature: Feature, n_labels: int) -> dict:
    """Per value name: ``(timesteps [G], kept [n_b, G], total [n_b, G], base ids)``.

    ``timesteps`` are those measured on every base sample of the value.

    A base sample belongs to the value that contains its label; a re-sample keeps the
    feature when its label lies in the same value.
    """
    lut = _value_of_label(feature, n_labels)
    out = {}
    for vi, name in enumerate(feature.values):
        bases = sorted(b for b, e in merged.items() if lut[e["label"]] == vi)
        # timesteps measured on every base sample of the value (the adaptive search measures
        # some timesteps on other values' base samples only)
        sets = [set(merged[b]["labels"]) for b in bases]
        timesteps = sorted(set.intersection(*sets)) if sets else sorted({t for e in merged.values() for t in e["labels"]})
        kept = np.zeros((len(bases), len(timesteps)), dtype=int)
        total = np.zeros_like(kept)
        for i, b in enumerate(bases):
            for g, t in enumerate(timesteps):
                labels = merged[b]["labels"].get(t)
                if labels is None:
                    continue
                vals = lut[np.asarray(labels, dtype=int)]
                kept[i, g] = int((vals == vi).sum())
                total[i, g] = len(labels)
        out[name] = (np.asarray(timesteps, dtype=float), kept, total, bases)
    return out


def nested_pairs(features) -> list:
    """``(fine_feature, value, coarse_feature, parent)`` for every value strictly inside another."""
    pairs = []
    for fine in features:
        for coarse in features:
            if fine is coarse:
                continue
            for v, members in fine.values.items():
                for p, pm in coarse.values.items():
                    if set(members) < set(pm):
                        pairs.append((fine, v, coarse, p))
    return pairs


@dataclass(frozen=True)
class RecordCounts:
    """The counts behind one window record (see `record_counts`)."""

    feature: str
    value: str
    parent: str | None          # the coarser value it is nested in (None: against everything)
    parent_feature: str | None
    timesteps: np.ndarray       # [G], measured on every base sample of the value
    kept: np.ndarray            # [n_base, G]
    total: np.ndarray           # [n_base, G]
    bases: list
    base_rate: float            # the value's share of all base samples
    floor: float                # retention's floor: base_rate, or w(value)/w(parent) nested


def record_counts(merged: dict, features, n_labels: int) -> list[RecordCounts]:
    """One `RecordCounts` per feature value, then one per nested pair (module docstring)."""
    counts = {f.name: feature_counts(merged, f, n_labels) for f in features}
    n_total = {name: sum(len(c[3]) for c in cs.values()) for name, cs in counts.items()}
    out = []
    for f in features:
        for v, (ts, kept, total, bases) in counts[f.name].items():
            rate = len(bases) / max(n_total[f.name], 1)
            out.append(RecordCounts(f.name, v, None, None, ts, kept, total, bases, rate, rate))
    for fine, v, coarse, parent in nested_pairs(features):
        ts, kept, total, bases = counts[fine.name][v]
        n_parent = len(counts[coarse.name][parent][3])
        out.append(RecordCounts(fine.name, v, parent, coarse.name, ts, kept, total, bases,
                                len(bases) / max(n_total[fine.name], 1), len(bases) / n_parent if n_parent else 0.0))
    return out


def window_records(merged: dict, features, n_labels: int, *, tolerance: float, seed: int = 0,
                   n_boot: int = 1000) -> list[dict]:
    """Window records for every feature value and every nested pair (see module docstring)."""
    return [_record(c, tolerance, seed, n_boot) for c in record_counts(merged, features, n_labels)]


def _record(c: RecordCounts, tolerance, seed, n_boot) -> dict:
    rec = {"feature": c.feature, "value": c.value, "parent": c.parent, "parent_feature": c.parent_feature,
           "n_base": int(c.kept.shape[0])}
    if c.kept.shape[0] == 0:
        rec.update(base_rate=0.0, floor=float(c.floor), tolerance=tolerance, timesteps=c.timesteps.tolist(),
                   retention=None, ci_low=None, ci_high=None, start_timestep=None, start_ci=None,
                   end_timestep=None, end_ci=None, jump=None)
        return rec
    est = estimate_window(c.timesteps, c.kept, c.total, c.base_rate, tolerance=tolerance, floor=min(c.floor, 1.0),
                          seed=seed, n_boot=n_boot)
    d = est.to_dict()
    d.pop("n_base", None)
    rec.update(d)
    return rec


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


def write_windows(out: Path, records: list[dict], extra: dict) -> None:
    """Write ``windows.json`` (``{"features": records, **extra}``) and ``windows.csv``."""
    out = Path(out)
    tmp = out / "windows.json.tmp"
    tmp.write_text(json.dumps(finite({"features": records, **extra}), indent=1, allow_nan=False))
    tmp.replace(out / "windows.json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS)
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if v is None else v) for k, v in _flat(r).items()})
    (out / "windows.csv").write_text(buf.getvalue())


def edge_widths_in_steps(records: list[dict], grid_spacing: float) -> list[float]:
    """Widths of every edge interval, in grid steps (for the default run's precision check)."""
    widths = []
    for r in records:
        for side in ("start_ci", "end_ci"):
            ci = r.get(side)
            if ci:
                widths.append((ci[1] - ci[0]) / grid_spacing)
    return widths


def _fmt(v, width=5):
    if v is None:
        return "-".rjust(width)
    if isinstance(v, bool):
        return ("yes" if v else "no").rjust(width)
    return f"{v:.0f}".rjust(width)


def summary_table(records: list[dict]) -> str:
    """A plain-text table: measured edges with intervals beside the theory's bracket."""
    head = (f"{'feature':<8} {'value':<12} {'n':>4} {'base':>5} | {'start':>5} {'[95% CI]':>11} "
            f"{'end':>5} {'[95% CI]':>11} | {'T_aft':>5} {'T_bef':>5} {'t_S':>5} {'holds':>5}")
    lines = [head, "-" * len(head)]
    for r in records:
        name = r["value"] if r.get("parent") is None else f"{r['value']} in {r['parent']}"
        sci = r.get("start_ci") or (None, None)
        eci = r.get("end_ci") or (None, None)
        lines.append(
            f"{r['feature']:<8} {name[:12]:<12} {r['n_base']:>4} {r.get('floor', 0):>5.2f} | "
            f"{_fmt(r.get('start_timestep'))} [{_fmt(sci[0], 4)},{_fmt(sci[1], 4)}] "
            f"{_fmt(r.get('end_timestep'))} [{_fmt(eci[0], 4)},{_fmt(eci[1], 4)}] | "
            f"{_fmt(r.get('t_after_timestep'))} {_fmt(r.get('t_before_timestep'))} "
            f"{_fmt(r.get('speciation_timestep'))} {_fmt(r.get('bracket_holds'))}")
    return "\n".join(lines)
