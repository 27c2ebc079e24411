"""Window records: one frozen `WindowRecord` per feature value (and per value nested in a coarser one).

`window_records(merged, features, n_labels, *, tolerance, seed)` estimates each record's
curve, band and edges (`analysis.windows.estimate_window`) from its counts
(`analysis.counts.record_counts`); the theory step (`analysis.compare.add_theory`) returns
new records with the theory's fields (`dataclasses.replace`). Records are dicts only at the
JSON boundary (`to_dict`, `from_dict`: the keys of ``windows.json``). Times are in the
backend's unit (training timesteps for diffusers pipelines, whatever the key names say; the
``windows.json`` key ``time_unit`` names it), except fields ending in ``_ou``.

Example::

    recs = window_records(merge_units(store.read_all()), features, len(labels), tolerance=0.1)
    digit3 = next(r for r in recs if r.feature == "digit" and r.value == "3" and r.parent is None)
    digit3.start_timestep, digit3.end_ci
"""
from __future__ import annotations

import dataclasses
import json

from .counts import RecordCounts, record_counts
from .bootstrap import bootstrap_seed
from .windows import estimate_window

__all__ = ["WindowRecord", "window_records"]


@dataclasses.dataclass(frozen=True)
class WindowRecord:
    """One ``windows.json`` record as attributes (times in the backend's unit unless ``_ou``)."""

    feature: str
    value: str
    parent: str | None = None                  # the coarser value a nested record lies in
    parent_feature: str | None = None
    n_base: int = 0                            # base samples with this value
    timesteps: tuple = ()                      # measured grid (ascending)
    retention: tuple | None = None             # P(t) per grid time
    ci_low: tuple | None = None                # bootstrap band over base samples
    ci_high: tuple | None = None
    n_resamples: int = 0
    base_rate: float = 0.0                     # its frequency among the base samples
    floor: float = 0.0                         # retention's floor (base rate, or w(S_after)/w(S_before))
    tolerance: float = 0.1                     # delta
    confidence: float = 0.95
    start_timestep: float | None = None        # late edge: largest t with P >= 1 - delta
    start_ci: tuple | None = None
    end_timestep: float | None = None          # early edge: smallest t with P <= floor + delta
    end_ci: tuple | None = None
    start_none_fraction: float | None = None   # bootstrap draws without the edge
    end_none_fraction: float | None = None
    jump: tuple | None = None                  # the paper's jump criterion (upper, lower)
    ideal_retention: tuple | None = None       # theory: an ideal model's retention on the grid
    t_after_timestep: float | None = None      # theory: T_after (late side); None beyond the schedule
    t_before_timestep: float | None = None     # theory: T_before (early side)
    t_after_ou: float | None = None            # ... in the theory's own time (ou_time; text: fraction)
    t_before_ou: float | None = None
    t_after_beyond: str | None = None          # "above"/"below": the prediction lies off the schedule
    t_before_beyond: str | None = None
    t_start_before_ou: float | None = None
    window_exists: bool | None = None
    speciation_timestep: float | None = None
    speciation_ou: float | None = None
    eps_after: float | None = None
    eps_before: float | None = None
    delta_after: float | None = None
    delta_before: float | None = None
    w_after: float | None = None
    w_before: float | None = None
    theory_floor: float | None = None
    bracket_holds: bool | None = None          # measured start >= T_after and end <= T_before
    start_minus_t_after: float | None = None
    t_before_minus_end: float | None = None
    start_minus_t_after_ou: float | None = None
    t_before_minus_end_ou: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # every other key of the record

    @classmethod
    def from_dict(cls, d: dict) -> "WindowRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: (_tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self, theory: bool = True) -> dict:
        """The ``windows.json`` record; ``theory=False`` leaves out the theory's fields (a run without theory)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name != "extra" and (theory or f.name not in THEORY_FIELDS)}
        return json.loads(json.dumps({**d, **self.extra}))

    @property
    def key(self) -> tuple:
        return self.feature, self.value, self.parent


_NAMES = [f.name for f in dataclasses.fields(WindowRecord)]
THEORY_FIELDS = tuple(_NAMES[_NAMES.index("ideal_retention"):_NAMES.index("extra")])  # the theory's fields


def _tuple(v):
    return tuple(_tuple(x) if isinstance(x, list) else x for x in v)


def window_records(merged: dict, features, n_labels: int, *, tolerance: float, seed: int = 0,
                   n_boot: int = 1000, grid=None) -> list[WindowRecord]:
    """Window records for every feature value and every nested pair (module docstring).

    Each record's bootstrap has its own stream, from the run ``seed`` and the record's identity
    (`analysis.bootstrap.bootstrap_seed`), and redraws the record's floor in each end draw;
    ``grid``: the full grid a ``--timesteps auto`` run measured part of (`estimate_window`)."""
    return [_record(c, tolerance, seed, n_boot, grid) for c in record_counts(merged, features, n_labels)]


def _record(c: RecordCounts, tolerance, seed, n_boot, grid=None) -> WindowRecord:
    head = dict(feature=c.feature, value=c.value, parent=c.parent, parent_feature=c.parent_feature,
                n_base=int(c.kept.shape[0]))
    if c.kept.shape[0] == 0:
        return WindowRecord(**head, floor=float(c.floor), tolerance=tolerance, timesteps=tuple(c.timesteps.tolist()))
    est = estimate_window(c.timesteps, c.kept, c.total, c.base_rate, tolerance=tolerance, floor=min(c.floor, 1.0),
                          seed=bootstrap_seed(seed, c.feature, c.value, c.parent), n_boot=n_boot,
                          floor_bases=c.floor_bases, grid=grid)
    d = est.to_dict()
    d.pop("n_base", None)
    return WindowRecord.from_dict({**head, **d})
