"""TV between sub-populations and an ideal denoiser's retention, as functions of ou_time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mixtures import _complement, _exact_pair, _retention_exact, _same_cov, _subset, _tv_exact, _w
from .montecarlo import SE_TARGET, _Engine
from .sizing import _estimate, _Quantities


@dataclass(frozen=True)
class Estimate:
    """A value at each ou_time with its Monte Carlo standard error (0 where exact)."""

    value: np.ndarray | float
    se: np.ndarray | float
    exact: bool
    n_samples: int  # Monte Carlo draws per sampled atom (0 when exact)



def _times(ou_time):
    t = np.asarray(ou_time, dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"ou_time must be finite and >= 0, got {ou_time!r}")
    return t


def _reduce(mix, a, b):
    """TV(p^A, p^B) = (1 - alpha) TV(p^A, p^{B \\ A}) for A inside B, alpha = w(A)/w(B)."""
    if np.array_equal(a, b):
        return 0.0, a, b
    if np.isin(a, b).all():
        return 1 - _w(mix, a) / _w(mix, b), a, np.setdiff1d(b, a)
    if np.isin(b, a).all():
        return 1 - _w(mix, b) / _w(mix, a), b, np.setdiff1d(a, b)
    return 1.0, a, b


def tv(mixture, s1, s2, ou_time, *, method="auto", se_target=SE_TARGET, n=None, seed=0, device=None):
    """TV(p_t^{S1}, p_t^{S2}) at ou_time t (scalar or array) -> Estimate.

    method: "auto" (closed form 2 Phi(Delta/2) - 1 when the two sides reduce to one
    Gaussian each with one covariance, else Monte Carlo), "exact" or "mc". Monte Carlo
    uses TV = E_{(P+Q)/2} |p - q| / (p + q) with common random numbers across times;
    n draws per atom (None: sized at each ou_time so that se <= se_target). device: None
    (numpy) or a torch device for the Monte Carlo's heavy products.

    Example::

        gm = GaussianMixture([[3.0], [-3.0]], [0.5, 0.5], cov=0.25)
        tv(gm, [0], [1], [0.5, 1.0, 2.0]).value
    """
    if method not in ("auto", "exact", "mc"):
        raise ValueError(f"method must be 'auto', 'exact' or 'mc', got {method!r}")
    t = _times(ou_time)
    scale, a, b = _reduce(mixture, _subset(mixture, s1), _subset(mixture, s2))
    if scale == 0:
        return Estimate(np.zeros_like(t)[()], np.zeros_like(t)[()], True, 0)
    if method != "mc" and _exact_pair(mixture, a, b):
        return Estimate(scale * _tv_exact(mixture, a, b, t), np.zeros_like(t)[()], True, 0)
    if method == "exact":
        raise ValueError("method='exact': no closed form for these sub-populations")

    eng = _Engine(mixture, [a, b], np.union1d(a, b), seed, device)
    quants = _Quantities(eng, tvs=[(eng.atom_mask(a), eng.atom_mask(b))])
    v, se, used = _estimate(eng, quants, t.ravel(), se_target / scale, n)
    return Estimate((scale * v[:, 0]).reshape(t.shape)[()], (scale * se[:, 0]).reshape(t.shape)[()],
                    False, int(used.max()))


def retention_curve(mixture, s_init, s_targ, ou_times, *, method="auto", se_target=SE_TARGET,
                    n=None, seed=0, return_se=False, device=None):
    """Exact forward-reverse retention of an ideal denoiser at each ou_time (THEORY.md):
    `R(t) = E_{y ~ p_t^{S_init}} P(S_targ | y)`, `P(S | y)` the whole mixture's posterior.

    method "auto": closed form (1-D quadrature) for two components with one covariance,
    else Monte Carlo with common random numbers ("exact" / "mc" force one), sized at each
    ou_time so that se <= se_target (or n draws per atom); device as in `tv`. Returns an
    array shaped like ou_times (and its standard errors when return_se).

    Example::

        retention_curve(gm, [0], [0], [0.5, 1.0, 2.0])   # ideal denoiser's P(keep component 0)
    """
    if method not in ("auto", "exact", "mc"):
        raise ValueError(f"method must be 'auto', 'exact' or 'mc', got {method!r}")
    t = _times(ou_times)
    init, targ = _subset(mixture, s_init), _subset(mixture, s_targ)
    rest = _complement(mixture, targ)
    closed = len(rest) == 0 or (len(init) == 1 and len(targ) == 1 and len(rest) == 1
                                and _same_cov(mixture, targ[0], rest[0]))
    if method == "exact" and not closed:
        raise ValueError("method='exact': no closed form for these sub-populations")
    if len(rest) == 0:
        v, se = np.ones_like(t), np.zeros_like(t)
    elif closed and method != "mc":
        v, se = _retention_exact(mixture, init, targ, t), np.zeros_like(t)
    else:
        eng = _Engine(mixture, [init, targ, rest], init, seed, device)
        quants = _Quantities(eng, rets=[(eng.atom_mask(init), eng.atom_mask(targ))])
        v, se, _ = _estimate(eng, quants, t.ravel(), se_target, n)
        v, se = v[:, 0].reshape(t.shape), se[:, 0].reshape(t.shape)
    return (v[()], se[()]) if return_se else v[()]


