"""Theory beside measurement: new window records with the predicted window (THEORY.md).

For a record of feature value ``v`` (``S_after``) against the whole data, or inside its parent
value (``S_before``; THEORY.md, "Empirical window edges", last paragraph), a `Predictions`
holds the theory's `PredictedWindow` (`diffusion_windows.theory`): ``T_after``/``T_before``
(the paper's Def. 4, each side at its own eps solved from the tolerance delta), the ideal
model's retention curve, the speciation time. Its `axis` maps the theory's own time (ou_time
for diffusion, the fraction removed for text) to and from the backend's time unit.

`add_theory(records, predictions) -> list[WindowRecord]` returns new records
(`dataclasses.replace`) with:

- ``ideal_retention`` on the record's grid;
- ``t_after_ou``, ``t_before_ou`` (theory time) and ``t_after_timestep``, ``t_before_timestep``
  (backend time), None beyond the schedule with ``t_*_beyond`` = "above"/"below", never a
  value clipped onto it; likewise ``speciation_*``;
- ``bracket_holds``: measured start >= T_after and end <= T_before, decided in theory time
  (where a prediction beyond the schedule still compares), with the differences
  ``start_minus_t_after``/``t_before_minus_end`` (backend time) and ``*_ou`` (theory time).

A `Predictions` depends on the data only: compute it once and pass it to repeated
measurements (a training loop) instead of recomputing it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["Predictions", "add_theory", "theory_number"]


@dataclass(frozen=True)
class Predictions:
    """The theory of one data set for some features, on a grid of backend times."""

    windows: tuple      # PredictedWindow per record key (feature, value, parent value)
    times: tuple        # backend times at which each window's ideal_retention is given
    axis: object        # .to_theory(times) -> array; .from_theory(t) -> (time or None, beyond)
    summary: dict       # JSON facts: the data's kind and size, speciation time, seconds, ...

    def window(self, key):
        return next((p for p in self.windows if (p.feature, p.value, p.parent_value) == key), None)


def theory_number(v):
    """A theory value for JSON: None when undefined; rounded to 1e-9 (far below its Monte Carlo
    error) so that BLAS threading, which differs between process counts, cannot show in the files."""
    if v is None:
        return None
    v = float(v)
    return round(v, 9) if np.isfinite(v) else None


def add_theory(records, predictions: Predictions) -> list:
    """``records`` with the theory's fields (module docstring); records without a prediction unchanged."""
    column = {float(t): i for i, t in enumerate(predictions.times)}
    out = []
    for r in records:
        p = predictions.window(r.key)
        if p is None:
            out.append(r)
            continue
        missing = [t for t in r.timesteps if float(t) not in column]
        if missing:
            raise ValueError(f"the theory was computed without time {missing[0]:g} of this record's grid")
        curve = tuple(theory_number(p.ideal_retention[column[float(t)]]) for t in r.timesteps)
        out.append(dataclasses.replace(r, ideal_retention=curve, **_fields(predictions.axis, p, r)))
    return out


def _fields(axis, p, r) -> dict:
    (t_after, after_beyond), (t_before, before_beyond) = axis.from_theory(p.t_after_ou), axis.from_theory(p.t_before_ou)
    start, end = r.start_timestep, r.end_timestep
    d_start = None if start is None or t_after is None else float(start - t_after)
    d_end = None if end is None or t_before is None else float(t_before - end)
    start_th = None if start is None else float(axis.to_theory([start])[0])
    end_th = None if end is None else float(axis.to_theory([end])[0])
    d_start_th = None if start_th is None or not np.isfinite(p.t_after_ou) else start_th - float(p.t_after_ou)
    d_end_th = None if end_th is None or np.isnan(p.t_before_ou) else float(p.t_before_ou) - end_th
    holds = None if d_start_th is None or d_end_th is None else bool(d_start_th >= 0 and d_end_th >= 0)
    return dict(
        t_after_ou=theory_number(p.t_after_ou), t_before_ou=theory_number(p.t_before_ou),
        t_after_timestep=t_after, t_before_timestep=t_before, t_after_beyond=after_beyond,
        t_before_beyond=before_beyond, t_start_before_ou=theory_number(p.t_start_before_ou),
        window_exists=bool(p.window_exists), speciation_ou=theory_number(p.speciation_ou),
        speciation_timestep=axis.from_theory(p.speciation_ou)[0], eps_after=float(p.eps_after),
        eps_before=float(p.eps_before), delta_after=float(p.delta_after), delta_before=float(p.delta_before),
        w_after=float(p.w_after), w_before=float(p.w_before), theory_floor=float(p.base_rate),
        bracket_holds=holds, start_minus_t_after=d_start, t_before_minus_end=d_end,
        start_minus_t_after_ou=theory_number(d_start_th),
        t_before_minus_end_ou=theory_number(d_end_th) if d_end_th is not None and np.isfinite(d_end_th) else None,
    )
