"""From stored units to counts per feature value: what every window record, and the adaptive search, read.

- `merge_units(records) -> {base: BaseLabels}`: per base sample, its label and the restart
  labels per time (later rounds add times; a time measured twice keeps the later record).
- `feature_counts(merged, feature, n_labels) -> {value: (times, kept, total, bases)}`.
- `record_counts(merged, features, n_labels) -> list[RecordCounts]`: one per feature value
  (``S_before`` = the whole data, floor = base rate), then one per nested pair (a value of a
  finer feature inside a value of a coarser one, floor ``w(S_after)/w(S_before)``; THEORY.md,
  "Empirical window edges", last paragraph).

A base sample belongs to the value that contains its label; a re-sample keeps the feature
when its label lies in the same value. Times are in the backend's unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..features import Feature

__all__ = ["BaseLabels", "RecordCounts", "merge_units", "feature_counts", "nested_pairs", "record_counts"]


@dataclass(frozen=True)
class BaseLabels:
    """One base sample's label and its restarts' labels per time."""

    label: int
    labels: MappingProxyType  # time -> tuple of restart labels


def merge_units(records) -> dict:
    """``{base: BaseLabels}`` from unit records (`engine.store.UnitRecord`), in order (later wins)."""
    merged: dict = {}
    for r in records:
        label, labels = merged.get(r.base, (int(r.base_label), {}))
        for t, row in zip(r.times, r.labels):
            labels[float(t)] = tuple(row)
        merged[r.base] = (label, labels)
    return {b: BaseLabels(label, MappingProxyType(labels)) for b, (label, labels) in merged.items()}


def _value_of_label(feature: Feature, n_labels: int) -> np.ndarray:
    lut = np.full(n_labels, -1, dtype=int)
    for i, members in enumerate(feature.values.values()):
        lut[list(members)] = i
    return lut


def feature_counts(merged: dict, feature: Feature, n_labels: int) -> dict:
    """Per value name: ``(times [G], kept [n_b, G], total [n_b, G], base ids)``.

    ``times`` are those measured on every base sample of the value (the adaptive search
    measures some times on other values' base samples only).
    """
    lut = _value_of_label(feature, n_labels)
    out = {}
    for vi, name in enumerate(feature.values):
        bases = sorted(b for b, e in merged.items() if lut[e.label] == vi)
        sets = [set(merged[b].labels) for b in bases]
        times = sorted(set.intersection(*sets)) if sets else sorted({t for e in merged.values() for t in e.labels})
        kept = np.zeros((len(bases), len(times)), dtype=int)
        total = np.zeros_like(kept)
        for i, b in enumerate(bases):
            for g, t in enumerate(times):
                labels = merged[b].labels.get(t)
                if labels is None:
                    continue
                vals = lut[np.asarray(labels, dtype=int)]
                kept[i, g] = int((vals == vi).sum())
                total[i, g] = len(labels)
        out[name] = (np.asarray(times, dtype=float), kept, total, bases)
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
    timesteps: np.ndarray       # [G] times, measured on every base sample of the value
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
