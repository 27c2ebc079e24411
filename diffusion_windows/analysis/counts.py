"""From stored units to counts per feature value: what every window record, and the adaptive search, read.

- `merge_units(records) -> {base: BaseLabels}`: per base sample, its label and the restart
  labels per time, restart ``k`` at position ``k`` (later rounds add times, and add restarts to
  a time: a row whose first restart is ``k0 > 0`` continues the ``k0`` restarts before it; a
  row from restart 0 of a time measured before replaces it).
- `feature_counts(merged, feature, n_labels) -> {value: (times, kept, total, bases)}`.
- `record_counts(merged, features, n_labels) -> list[RecordCounts]`: one per feature value
  (``S_before`` = the whole data, floor = base rate), then one per nested pair (a value of a
  finer feature inside a value of a coarser one, floor ``w(S_after)/w(S_before)``; THEORY.md,
  "Empirical window edges", last paragraph).

A base sample belongs to the value that contains its label; a re-sample keeps the feature
when its label lies in the same value. Base samples that ``--timesteps auto`` made beyond
``--samples`` (``kept_for``: the values that asked for them) belong only to those values'
curves, once they have restarts, and never count in a base rate: a value's base rate and
floor come from the first ``--samples`` base samples only. Times are in the backend's unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..features import Feature

__all__ = ["BaseLabels", "RecordCounts", "merge_units", "feature_counts", "nested_pairs", "record_counts"]


@dataclass(frozen=True)
class BaseLabels:
    """One base sample's label and its restarts' labels per time (restart ``k`` at position ``k``)."""

    label: int
    labels: MappingProxyType  # time -> tuple of restart labels
    kept_for: frozenset | None = None  # None: one of the first --samples; else {(feature, value)} it was made for

    def member_of(self, feature: str, value: str) -> bool:
        """Whether this base sample's restarts enter the curve of ``value`` of ``feature`` (its label
        lies in the value, checked by the caller): always for the first ``--samples``; for a base
        sample made later, when that value asked for it and it has restarts."""
        return self.kept_for is None or ((feature, value) in self.kept_for and len(self.labels) > 0)


def merge_units(records) -> dict:
    """``{base: BaseLabels}`` from unit records (`engine.store.UnitRecord`), in order (module docstring)."""
    merged: dict = {}
    for r in records:
        label, labels, kept_for = merged.get(r.base, (int(r.base_label), {}, None))
        first = r.first or (0,) * len(r.times)
        for t, row, k0 in zip(r.times, r.labels, first):
            have = labels.get(float(t), ())
            if k0 == 0:
                labels[float(t)] = tuple(row)
            elif len(have) == k0:
                labels[float(t)] = have + tuple(row)
            else:
                raise ValueError(f"unit {r.unit}: restarts from {k0} at time {t:g} continue {len(have)} restarts")
        asked = r.extra.get("kept_for") if r.extra else None
        if asked is not None:
            kept_for = (kept_for or frozenset()) | {(str(f), str(v)) for f, v in asked}
        merged[r.base] = (label, labels, kept_for)
    return {b: BaseLabels(label, MappingProxyType(labels), kept_for)
            for b, (label, labels, kept_for) in merged.items()}


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
        bases = sorted(b for b, e in merged.items() if lut[e.label] == vi and e.member_of(feature.name, name))
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
    floor_bases: int | None = None  # the base samples the floor is a share of (the feature's, or the parent's)


def record_counts(merged: dict, features, n_labels: int) -> list[RecordCounts]:
    """One `RecordCounts` per feature value, then one per nested pair (module docstring)."""
    counts = {f.name: feature_counts(merged, f, n_labels) for f in features}
    n_value = {f.name: _original_counts(merged, f, n_labels) for f in features}  # base rates: first --samples only
    n_total = {name: sum(c.values()) for name, c in n_value.items()}
    out = []
    for f in features:
        for v, (ts, kept, total, bases) in counts[f.name].items():
            rate = n_value[f.name][v] / max(n_total[f.name], 1)
            out.append(RecordCounts(f.name, v, None, None, ts, kept, total, bases, rate, rate, n_total[f.name] or None))
    for fine, v, coarse, parent in nested_pairs(features):
        ts, kept, total, bases = counts[fine.name][v]
        n, n_parent = n_value[fine.name][v], n_value[coarse.name][parent]
        out.append(RecordCounts(fine.name, v, parent, coarse.name, ts, kept, total, bases,
                                n / max(n_total[fine.name], 1), n / n_parent if n_parent else 0.0, n_parent or None))
    return out


def _original_counts(merged: dict, feature: Feature, n_labels: int) -> dict:
    """Per value name: how many of the first ``--samples`` base samples carry it."""
    lut = _value_of_label(feature, n_labels)
    found = [lut[e.label] for e in merged.values() if e.kept_for is None]
    return {name: sum(1 for x in found if x == vi) for vi, name in enumerate(feature.values)}
