"""Per-feature predictions: `predict_windows` for every feature value and nested pair."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .curves import _times, retention_curve
from .mixtures import EmpiricalMixture, _complement, _subset, _top_eigenvalue, _w, retention_closed
from .montecarlo import SE_TARGET
from .thresholds import T_MAX, T_MIN, T_SE_TARGET, _eps_from_delta, _TVFunctions


# ---------------------------------------------------------------- per-feature predictions

@dataclass(frozen=True)
class PredictedWindow:
    """Theory for one feature value (or one value inside a coarser one), all in ou_time.

    S_after = the value's components; S_before = the whole data (parent_* None) or the
    parent value. Each side uses its own eps solved from delta = eps (1 + max(1, W)/sqrt 2)
    (THEORY.md, "Empirical window edges"): retention >= 1 - delta_after for t <= t_after_ou
    and <= base_rate + delta_before for t in [t_before_ou, t_start_before_ou].
    nan: the defining set is empty; inf: never left (t_start_before_ou when S_before = Theta).
    """

    feature: str
    value: str
    labels: tuple            # label indices of S_after
    parent_feature: str | None
    parent_value: str | None
    parent_labels: tuple | None
    t_after_ou: float        # Def. 4 T_after at eps_after
    t_before_ou: float       # Def. 4 T_before at eps_before
    t_start_before_ou: float  # T_start(S_before) at eps_before (inf for S_before = Theta)
    window_exists: bool      # t_after_ou <= t_before_ou, both finite
    eps_after: float
    eps_before: float
    delta_after: float       # = delta
    delta_before: float      # = delta
    w_after: float           # W_after = w(Theta \ S_after) / w(S_after)
    w_before: float          # W_before = w(Theta \ S_before) / w(S_before)
    base_rate: float         # w(S_after) / w(S_before): retention's floor
    speciation_ou: float     # 0.5 ln Lambda of p^{S_before} (Biroli et al.)
    ou_times: tuple          # where ideal_retention is given
    ideal_retention: tuple   # R(t) = E_{p_t^{S_after}} P(S_after | y) at ou_times
    ideal_retention_se: tuple
    t_after_se: float        # Monte Carlo standard error of the crossing times (approx.)
    t_before_se: float
    n_samples: int           # Monte Carlo draws per atom (0: closed forms only)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _feature_items(features):
    out = []
    for f in features:
        name, values = (f["name"], f["values"]) if isinstance(f, dict) else (f.name, f.values)
        out.append((str(name), {str(k): tuple(int(i) for i in v) for k, v in values.items()}))
    return out


def predict_windows(mixture, features, *, delta=0.1, ou_times=None, component_labels=None,
                    se_target=SE_TARGET, n=None, seed=0, grid_size=48, refine=False, device=None,
                    t_se_target=T_SE_TARGET):
    """Predicted windows for every feature value, and every value nested inside a value of
    another feature (its labels a strict subset: S_before = that value) -> list of
    PredictedWindow (one record per value, then the nested pairs; see its fields).

    features: `diffusion_windows.features.Feature` objects or dicts {"name", "values":
    {value: label indices}}. Labels map to components through `mixture.indices` for an
    EmpiricalMixture, through component_labels [K] (default: label i = component i) for
    a GaussianMixture. ou_times: where to give the ideal retention curve. All TVs and
    retention curves share one Monte Carlo engine (atoms = the label groups, common random
    numbers) evaluated on a log grid of grid_size ou_times and at ou_times, each ou_time
    sized on its own (se <= se_target at the grid points around every crossing and at every
    ou_time, and threshold standard errors <= t_se_target, in ou_time); thresholds by
    monotone interpolation on that grid, or brentq on the estimate with refine=True
    (slower: an evaluation per iteration). device: None (numpy) or a torch device ("cpu",
    "cuda") for the heavy products of the Monte Carlo.

    Example::

        preds = predict_windows(EmpiricalMixture(points, labels), DEFAULT_FEATURES, delta=0.1, ou_times=[0.1, 0.5, 1.0])
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    ts = _times(() if ou_times is None else ou_times).ravel()
    if isinstance(mixture, EmpiricalMixture) and component_labels is None:
        comps = mixture.indices
    else:
        lab = np.arange(mixture.num_components) if component_labels is None else np.asarray(
            component_labels)
        comps = lambda v: _subset(mixture, np.flatnonzero(np.isin(lab, v)))  # noqa: E731
    items = _feature_items(features)
    records = []  # (feature, value, labels, parent feature, parent value, parent labels)
    for fname, values in items:
        for v, labs in values.items():
            records.append((fname, v, labs, None, None, None))
    for fname, values in items:
        for gname, gvalues in items:
            for v, labs in values.items():
                for gv, glabs in gvalues.items():
                    if gname != fname and set(labs) < set(glabs):
                        records.append((fname, v, labs, gname, gv, glabs))
    everything = np.arange(mixture.num_components)
    subsets, pairs, pair_index = {}, [], {}

    def pair(a, b):
        key = (tuple(a), tuple(b))
        if key not in pair_index:
            pair_index[key] = len(pairs)
            pairs.append((a, b))
        return pair_index[key]

    plan = []
    for rec in records:
        after = comps(list(rec[2]))
        before = everything if rec[5] is None else comps(list(rec[5]))
        rest_a, rest_b = _complement(mixture, after), _complement(mixture, before)
        if len(rest_a) == 0:
            raise ValueError(f"feature value {rec[0]}={rec[1]!r} covers the whole mixture")
        subsets[tuple(after)] = after
        w_a = _w(mixture, rest_a) / _w(mixture, after)
        w_b = _w(mixture, rest_b) / _w(mixture, before) if len(rest_b) else 0.0
        plan.append(dict(rec=rec, after=after, before=before, w_a=w_a, w_b=w_b,
                         eps_a=_eps_from_delta(delta, w_a), eps_b=_eps_from_delta(delta, w_b),
                         q=[pair(after, rest_a), pair(after, before),
                            pair(before, rest_b) if len(rest_b) else None]))
    g = np.geomspace(T_MIN, T_MAX, grid_size)
    levels = [set() for _ in pairs]
    for p in plan:
        qa, qab, qb = p["q"]
        levels[qa].add(1 - p["eps_a"] ** 2)
        # T_before counts only at or before T_start(S_before): no precision spent beyond it
        levels[qab].add(p["eps_b"] if qb is None else (p["eps_b"], qb, 1 - p["eps_b"] ** 2))
        if qb is not None:
            levels[qb].add(1 - p["eps_b"] ** 2)
    # one engine for every TV and retention curve: sized per ou_time, se <= se_target on the
    # grid points around each threshold's crossing and at every requested ou_time
    groups = [a for a in subsets.values() if not retention_closed(mixture, a)] if len(ts) else []
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g, levels, device,
                       retention=groups, ret_times=ts, t_se_target=t_se_target)
    ret = {}
    for key, a in subsets.items():
        if not len(ts):
            ret[key] = ((), (), 0)
        elif retention_closed(mixture, a):
            v, se = retention_curve(mixture, a, a, ts, return_se=True)
            ret[key] = (tuple(map(float, v)), tuple(map(float, se)), 0)
        else:
            i = next(i for i, b in enumerate(groups) if b is a)
            v, se = fns.ret_values[i].T
            ret[key] = (tuple(map(float, v)), tuple(map(float, se)), fns.n)

    def cross(j, level, kind):
        return fns.crossing(j, level, kind, refine=refine)

    def se_t(j, t):
        return fns.se_t(j, t) if refine else fns.se_t_grid(j, t)

    out = []
    for p in plan:
        rec, (qa, qab, qb) = p["rec"], p["q"]
        t_after = cross(qa, 1 - p["eps_a"] ** 2, "sup_above")
        t1 = cross(qab, p["eps_b"], "inf_below")
        t_start = np.inf if qb is None else cross(qb, 1 - p["eps_b"] ** 2, "sup_above")
        t_before = t1 if t1 <= t_start else np.nan
        r = ret.get(tuple(p["after"]), ((), (), 0))
        out.append(PredictedWindow(
            feature=rec[0], value=rec[1], labels=rec[2], parent_feature=rec[3],
            parent_value=rec[4], parent_labels=rec[5], t_after_ou=float(t_after),
            t_before_ou=float(t_before), t_start_before_ou=float(t_start),
            window_exists=bool(np.isfinite(t_after) and np.isfinite(t_before)
                               and t_after <= t_before),
            eps_after=p["eps_a"], eps_before=p["eps_b"], delta_after=float(delta),
            delta_before=float(delta), w_after=p["w_a"], w_before=p["w_b"],
            base_rate=_w(mixture, p["after"]) / _w(mixture, p["before"]),
            speciation_ou=float(0.5 * np.log(_top_eigenvalue(mixture, p["before"]))),
            ou_times=tuple(map(float, ts)), ideal_retention=r[0], ideal_retention_se=r[1],
            t_after_se=se_t(qa, t_after), t_before_se=se_t(qab, t_before),
            n_samples=max(fns.n, r[2])))
    return out
