"""Theory beside measurement: adds the predicted window to every ``windows.json`` record.

For a record of feature value ``v`` (``S_after`` = the mixture components whose label is in
``v``) with ``S_before`` = the whole data, or the parent group for a nested record
(THEORY.md, "Empirical window edges", last paragraph):

- ``eps_after = delta / (1 + max(1, W_after)/sqrt 2)``, ``eps_before`` likewise with
  ``W_before`` (0 when ``S_before`` is everything), ``delta`` = the sweep's tolerance;
- ``t_after_ou``, ``t_before_ou`` from `theory.critical_window` at those eps, and their
  training timesteps ``t_after_timestep``, ``t_before_timestep`` (`schedule.timestep_from_ou_time`);
- ``ideal_retention`` on the record's grid: `theory.retention_curve(S_after, S_after)`;
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


def eps_for(delta: float, w_ratio: float) -> float:
    """Solve THEORY.md's ``delta = eps * (1 + max(1, W)/sqrt 2)`` for eps."""
    return float(delta / (1.0 + max(1.0, w_ratio) / np.sqrt(2.0)))


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


def _speciation(mixture, comps) -> float:
    """Biroli et al.'s ``t_S = 0.5 ln Lambda`` of ``p^S`` (its exact covariance; THEORY.md)."""
    lam = np.linalg.eigvalsh(mixture.covariance(comps))[-1]
    return float(0.5 * np.log(lam)) if lam > 0 else float("nan")


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


def add_theory(records: list[dict], model, o: dict, mixture=None) -> dict:
    """Add the theory keys (module docstring) to ``records`` in place; returns a summary dict."""
    from .theory import critical_window, retention_curve

    started = time.perf_counter()
    if mixture is None:
        mixture = resolve_mixture(model)
    if mixture is None:
        return {"available": False, "reason": "no mixture: base samples not kept"}
    scheduler = model.pipe.scheduler
    delta = float(o["tolerance"])
    features = {f.name: f for f in model.features}
    all_comps = np.arange(len(np.asarray(mixture.weights)))
    weights = np.asarray(mixture.weights, dtype=float)
    t_s_all = _speciation(mixture, all_comps)
    curves = {}
    for r in records:
        f = features[r["feature"]]
        after = _components(mixture, f.values[r["value"]])
        if r.get("parent") is None:
            before, t_s = all_comps, t_s_all
        else:
            before = _components(mixture, features[r["parent_feature"]].values[r["parent"]])
            t_s = _speciation(mixture, before)
        if len(after) == 0 or len(after) == len(all_comps):
            continue
        w_after = weights[np.setdiff1d(all_comps, after)].sum() / weights[after].sum()
        rest_b = np.setdiff1d(all_comps, before)
        w_before = weights[rest_b].sum() / weights[before].sum() if len(rest_b) else 0.0
        e_a, e_b = eps_for(delta, w_after), eps_for(delta, w_before)
        cw = critical_window(mixture, after, before, e_a, eps_before=e_b)
        key = tuple(after.tolist())
        if key not in curves:
            ou = schedule.ou_time(scheduler, np.asarray(r["timesteps"], dtype=float))
            curves[key] = np.asarray(retention_curve(mixture, after, after, ou), dtype=float)
        r.update(_theory_fields(scheduler, cw, e_a, e_b, delta, w_after, w_before, t_s, curves[key], r))
    return {"available": True, "mixture": type(mixture).__name__, "components": int(len(all_comps)),
            "speciation_ou": _num(t_s_all), "speciation_timestep": _ts(scheduler, t_s_all),
            "tolerance": delta, "seconds": round(time.perf_counter() - started, 2)}


def _num(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _ts(scheduler, ou):
    """ou_time -> training timestep (float, within the schedule); None if undefined."""
    if ou is None or not np.isfinite(ou):
        return None
    return float(np.round(schedule.timestep_from_ou_time(scheduler, float(ou)), 2))


def _theory_fields(scheduler, cw, e_a, e_b, delta, w_after, w_before, t_s, curve, r) -> dict:
    t_after, t_before = _ts(scheduler, cw.t_after), _ts(scheduler, cw.t_before)
    start, end = r.get("start_timestep"), r.get("end_timestep")
    d_start = None if start is None or t_after is None else float(start - t_after)
    d_end = None if end is None or t_before is None else float(t_before - end)
    holds = None if d_start is None or d_end is None else bool(d_start >= 0 and d_end >= 0)
    return {
        "ideal_retention": [float(v) for v in curve],
        "t_after_ou": _num(cw.t_after), "t_before_ou": _num(cw.t_before),
        "t_after_timestep": t_after, "t_before_timestep": t_before,
        "window_exists": bool(cw.exists),
        "speciation_ou": _num(t_s), "speciation_timestep": _ts(scheduler, t_s),
        "eps_after": e_a, "eps_before": e_b, "w_after": float(w_after), "w_before": float(w_before),
        "delta_after": delta, "delta_before": delta,
        "bracket_holds": holds, "start_minus_t_after": d_start, "t_before_minus_end": d_end,
    }
