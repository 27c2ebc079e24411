"""Theory beside measurement: adds the predicted window to every ``windows.json`` record.

For a record of feature value ``v`` (``S_after`` = the mixture components whose label is in
``v``) with ``S_before`` = the whole data, or the parent group for a nested record
(THEORY.md, "Empirical window edges", last paragraph):

- ``eps_after = delta / (1 + max(1, W_after)/sqrt 2)``, ``eps_before`` likewise with
  ``W_before`` (0 when ``S_before`` is everything), ``delta`` = the sweep's tolerance;
- ``t_after_ou``, ``t_before_ou`` (the paper's Def. 4) at those eps, all from one `theory.predict_windows`, and their
  training timesteps ``t_after_timestep``, ``t_before_timestep`` (`schedule.timestep_from_ou_time`);
- ``ideal_retention`` on the record's grid: `R(t) = E_{p_t^{S_after}} P(S_after | y)`;
- ``speciation_ou``/``speciation_timestep``: `theory.speciation_time` of the whole data
  (of the parent group's data for a nested record);
- ``bracket_holds``: measured start >= T_after and measured end <= T_before, with
  ``start_minus_t_after`` and ``t_before_minus_end`` (timesteps; positive = inside).

The mixture: the bundled model's training split (`theory.EmpiricalMixture`, model space
``2 x - 1``); the built-in Gaussian mixture itself; for any other pipeline, the base samples
in model space (latents for latent models) labelled by the classifier — an approximation:
the model's own samples stand in for its data distribution.
"""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from . import schedule


def schedule_arrays(scheduler) -> dict:
    """``{"timestep", "alpha_bar", "ou_time"}`` over every training timestep (for plot axes)."""
    T = schedule.num_train_timesteps(scheduler)
    ts = np.arange(T)
    return {"timestep": ts.tolist(), "alpha_bar": schedule.alpha_bar(scheduler, ts).tolist(),
            "ou_time": schedule.ou_time(scheduler, ts).tolist()}


@lru_cache(maxsize=2)
def default_mixture():
    """The bundled model's training split as an `EmpiricalMixture` in model space (labels: digits)."""
    from .default import digits_split
    from .theory import EmpiricalMixture

    x, y, _, _ = digits_split()
    points = (2.0 * x.reshape(len(x), -1).double() - 1.0).numpy()
    return EmpiricalMixture(points, y.numpy())


def _components(mixture, label_indices) -> np.ndarray:
    from .theory import EmpiricalMixture

    if isinstance(mixture, EmpiricalMixture):
        return np.asarray(mixture.indices(list(label_indices)))
    return np.asarray(sorted(label_indices))


def resolve_mixture(model, base_points=None, base_labels=None):
    """The theory mixture for a `measure.Model` (see module docstring); None when unknown."""
    from .theory import EmpiricalMixture

    if isinstance(model.mixture, str) and model.mixture == "default":
        return default_mixture()
    if model.mixture is not None:
        return model.mixture
    if base_points is None or len(base_points) < 2:
        return None
    return EmpiricalMixture(np.asarray(base_points, dtype=np.float64), np.asarray(base_labels))


def _theory_features(mixture, features):
    """The features restricted to values that have components and do not cover the whole mixture."""
    from .features import Feature

    n = int(mixture.num_components)
    out = []
    for f in features:
        values = {}
        for v, labels in f.values.items():
            try:
                k = len(_components(mixture, labels))
            except ValueError:  # no component carries these labels
                continue
            if 0 < k < n:
                values[v] = labels
        if values:
            out.append(Feature(f.name, values))
    return out


_CACHE: dict = {}


def _predict(mixture, features, delta, ou_times, seed):
    """`theory.predict_windows`, remembered for the last few (mixture, features, grid) asked:
    the prediction depends on the data only, so repeated measurements (a training loop) reuse it."""
    from .theory import predict_windows

    key = (id(mixture), repr(features), delta, ou_times, seed)
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (mixture, predict_windows(mixture, features, delta=delta, ou_times=np.asarray(ou_times),
                                                seed=seed))
    return _CACHE[key][1]


def add_theory(records: list[dict], model, o: dict, mixture=None) -> dict:
    """Add the theory keys (module docstring) to ``records`` in place; returns a summary dict.

    One `theory.predict_windows` call serves every record: all TVs share one Monte Carlo
    engine with common random numbers.
    """
    started = time.perf_counter()
    if mixture is None:
        mixture = resolve_mixture(model)
    if mixture is None:
        return {"available": False, "reason": "no mixture: base samples not kept"}
    scheduler = model.pipe.scheduler
    delta = float(o["tolerance"])
    grid = sorted({float(t) for r in records for t in r["timesteps"]})
    ou = schedule.ou_time(scheduler, np.asarray(grid, dtype=float), model.num_inference_steps)
    column = {t: i for i, t in enumerate(grid)}
    # the theory's Monte Carlo has its own fixed seed: it is a property of the data, not of the run
    predicted = _predict(mixture, _theory_features(mixture, model.features), delta, tuple(ou.tolist()), 0)
    by_key = {(p.feature, p.value, p.parent_value): p for p in predicted}
    for r in records:
        p = by_key.get((r["feature"], r["value"], r.get("parent")))
        if p is None:
            continue
        curve = [p.ideal_retention[column[float(t)]] for t in r["timesteps"]]
        r.update(_theory_fields(scheduler, p, curve, r, model.num_inference_steps))
    from .theory import speciation_time

    t_s = speciation_time(mixture)  # Biroli et al.; the Gram matrix, never a d x d covariance
    return {"available": True, "mixture": type(mixture).__name__, "components": int(mixture.num_components),
            "speciation_ou": _num(t_s), "speciation_timestep": _ts(scheduler, t_s), "tolerance": delta,
            "seconds": round(time.perf_counter() - started, 2)}


def _num(v):
    """A theory value for JSON: None when undefined; rounded to 1e-9 (far below its Monte Carlo
    error) so that BLAS threading, which differs between process counts, cannot show in the files."""
    v = float(v)
    return round(v, 9) if np.isfinite(v) else None


def _ts(scheduler, ou):
    """ou_time -> training timestep (float) when it lies on the schedule; None if undefined or
    beyond the schedule (`_beyond` says which side): never a clipped number."""
    if ou is None or not np.isfinite(ou) or ou < 0 or _beyond(scheduler, ou) is not None:
        return None
    return float(np.round(schedule.timestep_from_ou_time(scheduler, float(ou)), 2))


def _beyond(scheduler, ou):
    """"above" past the schedule's last timestep (more noise than it reaches), "below" before its
    first, None on the schedule or undefined."""
    if ou is None or not np.isfinite(ou):
        return "above" if ou == np.inf else None
    lo, hi = schedule.ou_time(scheduler, [0, schedule.num_train_timesteps(scheduler) - 1])
    return "above" if ou > hi else "below" if ou < lo else None


def _theory_fields(scheduler, p, curve, r, steps=None) -> dict:
    t_after, t_before = _ts(scheduler, p.t_after_ou), _ts(scheduler, p.t_before_ou)
    start, end = r.get("start_timestep"), r.get("end_timestep")
    d_start = None if start is None or t_after is None else float(start - t_after)
    d_end = None if end is None or t_before is None else float(t_before - end)
    # the bracket is tested in ou_time, where a prediction beyond the schedule still compares
    start_ou = None if start is None else float(schedule.ou_time(scheduler, start, steps))
    end_ou = None if end is None else float(schedule.ou_time(scheduler, end, steps))
    d_start_ou = None if start_ou is None or not np.isfinite(p.t_after_ou) else start_ou - float(p.t_after_ou)
    d_end_ou = None if end_ou is None or np.isnan(p.t_before_ou) else float(p.t_before_ou) - end_ou
    holds = None if d_start_ou is None or d_end_ou is None else bool(d_start_ou >= 0 and d_end_ou >= 0)
    return {
        "ideal_retention": [_num(v) for v in curve],
        "t_after_ou": _num(p.t_after_ou), "t_before_ou": _num(p.t_before_ou),
        "t_after_timestep": t_after, "t_before_timestep": t_before,
        "t_after_beyond": _beyond(scheduler, p.t_after_ou), "t_before_beyond": _beyond(scheduler, p.t_before_ou),
        "t_start_before_ou": _num(p.t_start_before_ou), "window_exists": bool(p.window_exists),
        "speciation_ou": _num(p.speciation_ou), "speciation_timestep": _ts(scheduler, p.speciation_ou),
        "eps_after": float(p.eps_after), "eps_before": float(p.eps_before),
        "delta_after": float(p.delta_after), "delta_before": float(p.delta_before),
        "w_after": float(p.w_after), "w_before": float(p.w_before), "theory_floor": float(p.base_rate),
        "bracket_holds": holds, "start_minus_t_after": d_start, "t_before_minus_end": d_end,
        "start_minus_t_after_ou": _num(d_start_ou) if d_start_ou is not None else None,
        "t_before_minus_end_ou": _num(d_end_ou) if d_end_ou is not None and np.isfinite(d_end_ou) else None,
    }
