"""Thresholds in ou_time: Theorem 2's window, the critical window (Def. 4), speciation time, Example 1."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from .curves import _reduce
from .mixtures import GaussianMixture, _complement, _exact_pair, _subset, _top_eigenvalue, _tv_exact, _w
from .montecarlo import SE_TARGET, _Engine
from .sizing import _estimate, _Quantities

T_MIN, T_MAX = 1e-4, 12.0  # ou_time range searched for thresholds
T_SE_TARGET = 0.01         # default Monte Carlo standard error of a threshold (ou_time)
N_CROSS = 1024             # least draws per atom on the grid points around a crossing


# ---------------------------------------------------------------- thresholds

def _grid(size=48):
    return np.geomspace(T_MIN, T_MAX, size)


def _bracket(vals, level, kind):
    """-> (answer, None) when the grid values settle it (0, inf or nan), else (None, i): the
    crossing lies in [grid[i], grid[i + 1]]."""
    if kind == "inf_below":
        hit = vals <= level
        if hit[0]:
            return 0.0, None
        if not hit.any():
            return np.inf, None
        return None, int(np.argmax(hit)) - 1
    hit = vals >= level
    if not hit.any():
        return np.nan, None
    if hit[-1]:
        return np.inf, None
    return None, int(np.flatnonzero(hit)[-1])


def _crossing(f, level, kind, grid, refine=True, values=None):
    """Root of a nonincreasing f(t): kind "inf_below" = inf{t : f <= level},
    "sup_above" = sup{t : f >= level}. Bracket on the grid (on `values` when given, else on
    f), then brentq on f (refine; when f changes sign on the bracket) or on a monotone
    interpolant of logit f over the grid values."""
    vals = np.array([f(t) for t in grid]) if values is None else np.asarray(values)
    answer, i = _bracket(vals, level, kind)
    if i is None:
        return answer
    lo, hi = grid[i], grid[i + 1]
    if refine:
        if values is None or (f(lo) - level) * (f(hi) - level) <= 0:
            return optimize.brentq(lambda s: f(s) - level, lo, hi, xtol=1e-6, rtol=1e-6)
        # f (more draws than the grid values) does not change sign on this bracket: interpolate
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
    one shared Monte Carlo engine (common random numbers). `grid_values` [G, P, 2] holds
    (value, se) on the grid, each ou_time sized on its own (`sizing._estimate`): where a
    crossing of one of `levels[j]` sits within two grid points, se <= se_target, at least
    N_CROSS draws per atom (rare events near TV = 1), and on the crossing's bracket
    se / |dTV/dt| <= t_se_target (the threshold's own precision, `se_t_grid`); everywhere
    se <= se_target when levels is None. `retention` (S_after subsets) adds their retention curves
    R(t) at `ret_times` from the same draws. Calls at other ou_times (brentq) use, per
    atom, the draws of the grid points around them."""

    def __init__(self, mix, pairs, se_target, n, seed, grid, levels=None, device=None,
                 retention=(), ret_times=(), t_se_target=None):
        self.mix, self.items, self.grid = mix, [], np.asarray(grid, dtype=np.float64)
        mc_sets, mc_pairs = [], []
        for a, b in pairs:
            scale, ra, rb = _reduce(mix, a, b)
            exact = scale == 0 or _exact_pair(mix, ra, rb)
            self.items.append((a, b, scale, ra, rb, exact))
            if not exact:
                mc_pairs.append(len(self.items) - 1)
                mc_sets += [a, b]
        ret_sets = [r for r in retention]
        self.engine, self.n, self.quants = None, 0, None
        g = len(self.grid)
        self.grid_values = np.zeros((g, len(pairs), 2))
        for j, (a, b, scale, ra, rb, exact) in enumerate(self.items):
            if exact and scale:
                self.grid_values[:, j, 0] = scale * _tv_exact(mix, ra, rb, self.grid)
        self.ret_values = np.zeros((len(ret_sets), len(ret_times), 2))
        if not mc_sets and not ret_sets:
            return
        subsets = mc_sets + ret_sets + [_complement(mix, r) for r in ret_sets]
        subsets = [s for s in subsets if len(s)]
        sampled = np.unique(np.concatenate(mc_sets + ret_sets))
        eng = self.engine = _Engine(mix, subsets, sampled, seed, device)
        self.col = {j: q for q, j in enumerate(mc_pairs)}
        self.quants = _Quantities(
            eng, tvs=[(eng.atom_mask(self.items[j][0]), eng.atom_mask(self.items[j][1])) for j in mc_pairs],
            rets=[(eng.atom_mask(r), eng.atom_mask(r)) for r in ret_sets], both=bool(eng.sampled.all()))
        ret_times = np.asarray(ret_times, dtype=np.float64).ravel()
        ts = np.concatenate([self.grid, ret_times])
        t_se_target = T_SE_TARGET if t_se_target is None else t_se_target
        n_tv = len(mc_pairs)

        def curve(values, j):
            return values[:g, self.col[j]] if j in self.col else self.grid_values[:, j, 0]

        def require(values, se):
            """se <= se_target at every ret_time and on the grid around every crossing,
            where also se / |dTV/dt| <= t_se_target and every atom has N_CROSS draws. A
            level (level, k, level_k) counts only at or before pair k's last grid point
            above level_k (T_before needs t <= T_start of S_before)."""
            target = np.full(values.shape, np.inf)
            least = np.zeros(values.shape, dtype=np.int64)
            target[g:, n_tv:] = se_target
            for q, j in enumerate(mc_pairs):
                if levels is None:
                    target[:g, q] = se_target
                    continue
                v = values[:g, q]
                slope = np.abs(np.gradient(v, self.grid))
                for level in levels[j]:
                    last = g
                    if isinstance(level, tuple):
                        level, k, level_k = level
                        above = np.flatnonzero(curve(values, k) >= level_k)
                        last = above[-1] + 1 if len(above) else -1
                    side = v >= level
                    for i in np.flatnonzero(side[:-1] != side[1:]):
                        if i > last:
                            continue
                        near = slice(max(0, i - 1), min(g, i + 3))
                        target[near, q] = np.minimum(target[near, q], se_target)
                        least[near, q] = N_CROSS
                        x = (level - v[i]) / (v[i + 1] - v[i])  # linear position of the crossing
                        d = (1 - x) * slope[i] + x * slope[i + 1]
                        target[i:i + 2, q] = np.minimum(target[i:i + 2, q], t_se_target * d)
            return target, least

        v, se, used = _estimate(eng, self.quants, ts, se_target, n, require)
        for q, j in enumerate(mc_pairs):
            self.grid_values[:, j] = np.stack([v[:g, q], se[:g, q]], 1)
        for r in range(len(ret_sets)):
            self.ret_values[r] = np.stack([v[g:, n_tv + r], se[g:, n_tv + r]], 1)
        self.need_grid = used[:g]
        self.n = int(used.max())
        self._at, self._sub = {}, {}

    def __call__(self, j, t, n=None):
        """(TV, se) of pair j at any ou_time t: closed form, or the engine with n draws per
        atom (None: those of the grid points around t)."""
        a, b, scale, ra, rb, exact = self.items[j]
        if scale == 0:
            return 0.0, 0.0
        if exact:
            return float(scale * _tv_exact(self.mix, ra, rb, np.asarray(t, float))), 0.0
        if n is None:
            i = int(np.clip(np.searchsorted(self.grid, t), 1, len(self.grid) - 1))
            n = np.maximum(self.need_grid[i - 1], self.need_grid[i])
        key = (j, float(t), n.tobytes())
        if key not in self._at:
            if len(self._at) > 4096:
                self._at.clear()
            if j not in self._sub:
                eng = self.engine
                self._sub[j] = _Quantities(eng, tvs=[(eng.atom_mask(a), eng.atom_mask(b))])
            v, se, _ = _estimate(self.engine, self._sub[j], [t], 1.0, n)
            self._at[key] = (float(v[0, 0]), float(se[0, 0]))
        return self._at[key]

    def value(self, j, n=None):
        return lambda t: self(j, t, n)[0]

    def crossing(self, j, level, kind, refine=True):
        """Crossing time of pair j: bracket on the grid values, then brentq on the estimate
        with the draws of the bracket's grid points (refine: one sample for the whole bracket,
        so brentq sees a continuous function) or a monotone interpolant of the grid values."""
        values = self.grid_values[:, j, 0]
        answer, i = _bracket(values, level, kind)
        if i is None:
            return answer
        n = None if self.items[j][5] else np.maximum(self.need_grid[i], self.need_grid[i + 1])
        return _crossing(self.value(j, n), level, kind, self.grid, refine=refine, values=values)

    def se_t(self, j, t):
        """Standard error of a crossing time: se(TV) / |dTV/dt| at t (0 when exact)."""
        if not np.isfinite(t) or t <= 0 or self.items[j][5]:
            return 0.0
        h = 1e-3 * t
        slope = (self(j, t + h)[0] - self(j, t - h)[0]) / (2 * h)
        return float(self(j, t)[1] / abs(slope)) if slope else np.inf

    def se_t_grid(self, j, t):
        """se(TV) / |dTV/dt| at t, both interpolated on the grid values."""
        g, vals = self.grid, self.grid_values[:, j]
        if self.items[j][5] or not np.isfinite(t) or t <= g[0] or t >= g[-1]:
            return 0.0
        slope = np.interp(t, g, np.gradient(vals[:, 0], g))
        return float(np.interp(t, g, vals[:, 1]) / abs(slope)) if slope else np.inf


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


def theorem2_window(mixture, s_init, s_targ, eps, *, se_target=SE_TARGET, n=None, seed=0, device=None,
                    t_se_target=T_SE_TARGET):
    """Theorem 2's window [t_end, t_start] (ou_time) for S_init inside S_targ -> Theorem2Window."""
    _check_eps(eps)
    init, targ = _subset(mixture, s_init), _subset(mixture, s_targ)
    if not np.isin(init, targ).all():
        raise ValueError("s_init must be a subset of s_targ")
    rest = _complement(mixture, targ)
    pairs = [(init, targ)] + ([(targ, rest)] if len(rest) else [])
    g = _grid()
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g, [[eps], [1 - eps ** 2]], device,
                       t_se_target=t_se_target)
    t_end = fns.crossing(0, eps, "inf_below")
    t_start = fns.crossing(1, 1 - eps ** 2, "sup_above") if len(rest) else np.inf
    w_ratio = _w(mixture, rest) / _w(mixture, targ) if len(rest) else 0.0
    return Theorem2Window(t_end, t_start, bool(t_end <= t_start), eps, w_ratio,
                          float(_bound(eps, w_ratio)), fns.n)


def critical_window(mixture, s_after, s_before, eps, *, eps_before=None, se_target=SE_TARGET,
                    n=None, seed=0, device=None, t_se_target=T_SE_TARGET):
    """Critical window (the paper, Def. 4) in ou_time for S_after inside S_before.

    eps_before (default eps) is the eps used for t_before (THEORY.md "Empirical window
    edges" solves each side for its own eps). Thresholds come from the exact TV (closed
    form or Monte Carlo with common random numbers: se <= se_target around each crossing
    and threshold standard errors <= t_se_target (ou_time), then brentq on the estimate);
    device: None (numpy) or a torch device.

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
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g,
                       [[1 - eps ** 2], [(eps_b, 2, 1 - eps_b ** 2) if len(rest_b) else eps_b],
                        [1 - eps_b ** 2]], device, t_se_target=t_se_target)
    t_after = fns.crossing(0, 1 - eps ** 2, "sup_above")
    t1 = fns.crossing(1, eps_b, "inf_below")
    t_start = fns.crossing(2, 1 - eps_b ** 2, "sup_above") if len(rest_b) else np.inf
    t_before = t1 if t1 <= t_start else np.nan
    w_a = _w(mixture, rest_a) / _w(mixture, after)
    w_b = _w(mixture, rest_b) / _w(mixture, before) if len(rest_b) else 0.0
    exists = bool(np.isfinite(t_after) and np.isfinite(t_before) and t_after <= t_before)
    b_a, b_b = _bound(eps, w_a), _bound(eps_b, w_b)
    return CriticalWindow(t_after, t_before, t_start, exists, eps, w_a, w_b, b_a, b_b,
                          max(b_a, b_b), fns.se_t(0, t_after), fns.se_t(1, t_before), fns.n)


# ---------------------------------------------------------------- speciation

def speciation_time(data, subset=None) -> float:
    """Speciation time (Biroli et al.) t_S = 0.5 ln Lambda in ou_time, Lambda the largest
    eigenvalue of the covariance of data [N, d] (or of a GaussianMixture, exactly; of its
    sub-population `p^S` when subset is given). Negative when Lambda < 1 (no speciation).
    On a discrete schedule: the first timestep with alpha_bar < 1 / Lambda
    (diffusion_windows.diffusion.schedule maps it). Memory linear in d for N < d and for isotropic
    mixtures (the Gram matrix instead of the d x d covariance)."""
    if isinstance(data, GaussianMixture):
        return float(0.5 * np.log(_top_eigenvalue(data, subset)))
    if subset is not None:
        raise ValueError("subset needs a GaussianMixture")
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"data must have shape [N >= 2, d], got {x.shape}")
    x = x - x.mean(0)
    small = x @ x.T if len(x) < x.shape[1] else x.T @ x
    return float(0.5 * np.log(np.linalg.eigvalsh(small)[-1] / (len(x) - 1)))


def example1_bounds(mu_norm: float, eps: float) -> dict:
    """The paper's Example 1 (two unit Gaussians +-mu), Pinsker/Hellinger *bounds* in ou_time:
    T_before <= ln|mu| + ln 2 + ln(1/eps); T_after >= ln|mu| - ln ln(1/(2 eps^2))
    (meaningful for small eps, about eps < 0.3; nan when eps >= 1/sqrt 2)."""
    _check_eps(eps)
    inner = np.log(1 / (2 * eps ** 2))
    return {"t_before_upper": float(np.log(mu_norm) + np.log(2) + np.log(1 / eps)),
            "t_after_lower": float(np.log(mu_norm) - np.log(inner)) if inner > 0 else np.nan}
