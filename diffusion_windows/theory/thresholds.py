"""Thresholds in ou_time: Theorem 2's window, the critical window (Def. 4), speciation time, Example 1."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from .curves import _reduce
from .mixtures import GaussianMixture, _complement, _exact_pair, _subset, _tv_exact, _w
from .montecarlo import SE_TARGET, _Engine, _sample_size

T_MIN, T_MAX = 1e-4, 12.0  # ou_time range searched for thresholds


# ---------------------------------------------------------------- thresholds

def _grid(size=48):
    return np.geomspace(T_MIN, T_MAX, size)


def _crossing(f, level, kind, grid, refine=True, values=None):
    """Root of a nonincreasing f(t): kind "inf_below" = inf{t : f <= level},
    "sup_above" = sup{t : f >= level}. Bracket on the grid, then brentq on f (refine) or
    on a monotone interpolant of logit f over the grid (values given)."""
    vals = np.array([f(t) for t in grid]) if values is None else np.asarray(values)
    if kind == "inf_below":
        hit = vals <= level
        if hit[0]:
            return 0.0
        if not hit.any():
            return np.inf
        i = int(np.argmax(hit)) - 1
    else:
        hit = vals >= level
        if not hit.any():
            return np.nan
        if hit[-1]:
            return np.inf
        i = int(np.flatnonzero(hit)[-1])
    lo, hi = grid[i], grid[i + 1]
    if refine:
        return optimize.brentq(lambda s: f(s) - level, lo, hi, xtol=1e-6, rtol=1e-6)
    lg = special.logit(np.clip(vals, 1e-12, 1 - 1e-12))
    interp = _pchip(np.log(grid), lg)
    target = special.logit(np.clip(level, 1e-12, 1 - 1e-12))
    return float(np.exp(optimize.brentq(lambda s: interp(s) - target, np.log(lo), np.log(hi))))


def _pchip(x, y):
    from scipy.interpolate import PchipInterpolator
    return PchipInterpolator(x, y)


def _eps_from_delta(delta: float, w_ratio: float) -> float:
    """Solve delta = eps * (1 + max(1, W)/sqrt 2) for eps (THEORY.md, "Empirical window edges")."""
    return delta / (1 + max(1.0, w_ratio) / np.sqrt(2))


def _bound(eps: float, w_ratio: float) -> float:
    """Theorem 2: TV(p^{S_init,T}, p^{S_targ}) <= eps (1 + max(1, W)/sqrt 2)."""
    return float(eps * (1 + max(1.0, w_ratio) / np.sqrt(2)))


class _TVFunctions:
    """TV(t) for several pairs of sub-populations: closed forms where they exist, otherwise
    one shared Monte Carlo engine (common random numbers) sized on a pilot grid."""

    def __init__(self, mix, pairs, se_target, n, seed, pilot_times, levels=None):
        self.mix, self.items = mix, []
        mc_sets = []
        for a, b in pairs:
            scale, ra, rb = _reduce(mix, a, b)
            exact = scale == 0 or _exact_pair(mix, ra, rb)
            self.items.append((a, b, scale, ra, rb, exact))
            if not exact:
                mc_sets += [a, b]
        self.engine, self.n = None, 0
        if mc_sets:
            make = lambda m: _Engine(mix, mc_sets, np.unique(np.concatenate(mc_sets)), m, seed)  # noqa: E731
            self.engine = make(n or 1000)
            if n is None:
                se = self._pilot_se(pilot_times, levels)
                m = _sample_size(se, 1000, se_target, 200_000)
                if m > 1000:
                    self.engine = make(m)
            self.n = self.engine.n

    def __call__(self, j, t):
        a, b, scale, ra, rb, exact = self.items[j]
        if scale == 0:
            return 0.0, 0.0
        if exact:
            return float(scale * _tv_exact(self.mix, ra, rb, np.asarray(t, float))), 0.0
        e = self.engine
        return e.tv(t, e.atom_mask(a), e.atom_mask(b))

    def value(self, j):
        return lambda t: self(j, t)[0]

    def _pilot_se(self, times, levels):
        """Largest pilot standard error: over all times, or (levels given: per pair, the
        levels whose crossing times are searched) at the pilot times around each crossing."""
        est = np.array([[self(j, t) for j in range(len(self.items))] for t in times])
        est = est.transpose(1, 0, 2)  # [pair, time, (value, se)]
        if levels is None:
            return float(est[:, :, 1].max())
        se = 0.0
        for j, lv in enumerate(levels):
            for level in lv:
                side = est[j, :, 0] >= level
                for i in np.flatnonzero(side[:-1] != side[1:]):
                    se = max(se, est[j, i, 1], est[j, i + 1, 1])
        return se

    def se_t(self, j, t):
        """Standard error of a crossing time: se(TV) / |dTV/dt| at t (0 when exact)."""
        if not np.isfinite(t) or t <= 0 or self.items[j][5]:
            return 0.0
        h = 1e-3 * t
        slope = (self(j, t + h)[0] - self(j, t - h)[0]) / (2 * h)
        return float(self(j, t)[1] / abs(slope)) if slope else np.inf


@dataclass(frozen=True)
class Theorem2Window:
    """Theorem 2 (the paper): for ou_time T in [t_end, t_start], TV(p^{S_init,T}, p^{S_targ})
    <= bound = eps (1 + max(1, W)/sqrt 2), W = w(Theta \\ S_targ) / w(S_targ)."""

    t_end: float       # inf{t : TV(p_t^{S_init}, p_t^{S_targ}) <= eps}
    t_start: float     # sup{t : TV(p_t^{S_targ}, p_t^{rest}) >= 1 - eps^2}; inf if S_targ = Theta
    exists: bool       # t_end <= t_start
    eps: float
    w_ratio: float     # W
    bound: float
    n_samples: int     # Monte Carlo draws per atom (0: closed forms only)


@dataclass(frozen=True)
class CriticalWindow:
    """Critical window (the paper, Def. 4) for S_after inside S_before, with exact TV."""

    t_after: float        # sup{t : TV(p_t^{S_after}, p_t^{Theta \\ S_after}) >= 1 - eps^2}; nan: none
    t_before: float       # inf{t : TV(p_t^{S_after}, p_t^{S_before}) <= eps and
                          #   TV(p_t^{S_before}, p_t^{Theta \\ S_before}) >= 1 - eps^2}; nan: none
    t_start_before: float  # sup{t : TV(p_t^{S_before}, rest) >= 1 - eps^2}; inf if S_before = Theta
    exists: bool          # t_after <= t_before, both finite
    eps: float
    w_after: float        # W_after = w(Theta \\ S_after) / w(S_after)
    w_before: float       # W_before = w(Theta \\ S_before) / w(S_before) (0 when S_before = Theta)
    bound_after: float    # Theorem 2 bound for t <= t_after (S_targ = S_after)
    bound_before: float   # Theorem 2 bound for t in [t_before, t_start_before] (S_targ = S_before)
    bound: float          # max of the two: eps (1 + max(1, W)/sqrt 2)
    t_after_se: float     # Monte Carlo standard error of t_after (0 when exact)
    t_before_se: float
    n_samples: int


def _check_eps(eps):
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")


def theorem2_window(mixture, s_init, s_targ, eps, *, se_target=SE_TARGET, n=None, seed=0):
    """Theorem 2's window [t_end, t_start] (ou_time) for S_init inside S_targ -> Theorem2Window."""
    _check_eps(eps)
    init, targ = _subset(mixture, s_init), _subset(mixture, s_targ)
    if not np.isin(init, targ).all():
        raise ValueError("s_init must be a subset of s_targ")
    rest = _complement(mixture, targ)
    pairs = [(init, targ)] + ([(targ, rest)] if len(rest) else [])
    g = _grid()
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g[::6])
    t_end = _crossing(fns.value(0), eps, "inf_below", g)
    t_start = _crossing(fns.value(1), 1 - eps ** 2, "sup_above", g) if len(rest) else np.inf
    w_ratio = _w(mixture, rest) / _w(mixture, targ) if len(rest) else 0.0
    return Theorem2Window(t_end, t_start, bool(t_end <= t_start), eps, w_ratio,
                          float(_bound(eps, w_ratio)), fns.n)


def critical_window(mixture, s_after, s_before, eps, *, eps_before=None, se_target=SE_TARGET,
                    n=None, seed=0):
    """Critical window (the paper, Def. 4) in ou_time for S_after inside S_before.

    eps_before (default eps) is the eps used for t_before (THEORY.md "Empirical window
    edges" solves each side for its own eps). Thresholds come from the exact TV (closed
    form or Monte Carlo with common random numbers, then brentq on the estimate).

    Example::

        cw = critical_window(gm, [0], [0, 1], eps=0.05)
        cw.t_after, cw.t_before   # ou_time
    """
    _check_eps(eps)
    eps_b = eps if eps_before is None else eps_before
    _check_eps(eps_b)
    after, before = _subset(mixture, s_after), _subset(mixture, s_before)
    if not np.isin(after, before).all():
        raise ValueError("s_after must be a subset of s_before")
    rest_a, rest_b = _complement(mixture, after), _complement(mixture, before)
    if len(rest_a) == 0:
        raise ValueError("s_after is the whole mixture: no feature to decide")
    pairs = [(after, rest_a), (after, before)] + ([(before, rest_b)] if len(rest_b) else [])
    g = _grid()
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g[::6])
    t_after = _crossing(fns.value(0), 1 - eps ** 2, "sup_above", g)
    t1 = _crossing(fns.value(1), eps_b, "inf_below", g)
    t_start = _crossing(fns.value(2), 1 - eps_b ** 2, "sup_above", g) if len(rest_b) else np.inf
    t_before = t1 if t1 <= t_start else np.nan
    w_a = _w(mixture, rest_a) / _w(mixture, after)
    w_b = _w(mixture, rest_b) / _w(mixture, before) if len(rest_b) else 0.0
    exists = bool(np.isfinite(t_after) and np.isfinite(t_before) and t_after <= t_before)
    b_a, b_b = _bound(eps, w_a), _bound(eps_b, w_b)
    return CriticalWindow(t_after, t_before, t_start, exists, eps, w_a, w_b, b_a, b_b,
                          max(b_a, b_b), fns.se_t(0, t_after), fns.se_t(1, t_before), fns.n)


# ---------------------------------------------------------------- speciation

def speciation_time(data) -> float:
    """Speciation time (Biroli et al.) t_S = 0.5 ln Lambda in ou_time, Lambda the largest
    eigenvalue of the covariance of data [N, d] (or of a GaussianMixture, exactly).
    Negative when Lambda < 1 (no speciation). On a discrete schedule: the first timestep
    with alpha_bar < 1 / Lambda (diffusion_windows.schedule maps it)."""
    if isinstance(data, GaussianMixture):
        cov = data.covariance()
    else:
        x = np.asarray(data, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"data must have shape [N >= 2, d], got {x.shape}")
        cov = np.atleast_2d(np.cov(x, rowvar=False))
    return float(0.5 * np.log(np.linalg.eigvalsh(cov)[-1]))


def example1_bounds(mu_norm: float, eps: float) -> dict:
    """The paper's Example 1 (two unit Gaussians +-mu), Pinsker/Hellinger *bounds* in ou_time:
    T_before <= ln|mu| + ln 2 + ln(1/eps); T_after >= ln|mu| - ln ln(1/(2 eps^2))
    (meaningful for small eps, about eps < 0.3; nan when eps >= 1/sqrt 2)."""
    _check_eps(eps)
    inner = np.log(1 / (2 * eps ** 2))
    return {"t_before_upper": float(np.log(mu_norm) + np.log(2) + np.log(1 / eps)),
            "t_after_lower": float(np.log(mu_norm) - np.log(inner)) if inner > 0 else np.nan}
