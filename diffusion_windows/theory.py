"""Theory of critical windows (THEORY.md): mixtures, exact TV, thresholds, retention, speciation.

Every time here is an `ou_time` t of the Ornstein-Uhlenbeck forward process,
`Y_t = exp(-t) X + sqrt(1 - exp(-2t)) Z`, i.e. `alpha_bar = exp(-2 t)`; conversions to a
scheduler's timesteps live in `diffusion_windows.schedule`. numpy/scipy only.

Sub-populations `S` are collections of component indices; `EmpiricalMixture.indices`
turns label values into them. TV uses the closed form `2 Phi(Delta/2) - 1` for two
Gaussians with one covariance (THEORY.md, "Closed forms"), otherwise Monte Carlo with
common random numbers across times (fixed component picks, data draws and noise draws),
log-densities by log-sum-exp and distances by matrix products, in float64.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special, stats

try:  # small matrix products: one BLAS thread is much faster on a shared, loaded CPU
    from threadpoolctl import threadpool_limits
except ImportError:  # optional (comes with scikit-learn)
    def threadpool_limits(limits=None):
        return nullcontext()

__all__ = [
    "GaussianMixture",
    "EmpiricalMixture",
    "Estimate",
    "CriticalWindow",
    "Theorem2Window",
    "tv",
    "retention_curve",
    "critical_window",
    "theorem2_window",
    "speciation_time",
    "example1_bounds",
]

SE_TARGET = 0.003  # default Monte Carlo standard error on TV and retention values
T_MIN, T_MAX = 1e-4, 12.0  # ou_time range searched for thresholds


class GaussianMixture:
    """`sum_k w_k N(mu_k, Sigma_k)` in model space (THEORY.md, "Setting").

    means [K, d]; weights [K] (normalised here; None: equal); cov a scalar (shared
    isotropic variance), [K] (per-component isotropic variances, 0 = point mass) or
    [K, d, d] (full covariances).
    """

    def __init__(self, means, weights=None, cov=1.0):
        means = np.asarray(means, dtype=np.float64)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or len(means) == 0:
            raise ValueError(f"means must have shape [K, d], got {means.shape}")
        k, d = means.shape
        w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (k,) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"weights must be {k} positive numbers, got {weights!r}")
        cov = np.asarray(cov, dtype=np.float64)
        self.var, self.cov = None, None
        if cov.ndim == 0 or cov.shape == (k,):
            self.var = np.broadcast_to(cov, (k,)).copy()
            if np.any(self.var < 0):
                raise ValueError(f"variances must be >= 0, got {cov!r}")
        elif cov.shape == (k, d, d):
            self.cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
            if np.min(np.linalg.eigvalsh(self.cov)) < -1e-10:
                raise ValueError("cov: a covariance matrix is not positive semi-definite")
        else:
            raise ValueError(f"cov must be a scalar, [K] or [K, d, d], got shape {cov.shape}")
        self.means, self.weights = means, w / w.sum()

    @property
    def num_components(self) -> int:
        return len(self.means)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_cov(self, k: int) -> np.ndarray:
        return self.cov[k] if self.cov is not None else self.var[k] * np.eye(self.dim)

    def covariance(self, subset=None) -> np.ndarray:
        """Covariance [d, d] of `p^S` (whole mixture when subset is None)."""
        idx = np.arange(self.num_components) if subset is None else _subset(self, subset)
        w = self.weights[idx] / self.weights[idx].sum()
        m = self.means[idx]
        mean = w @ m
        within = np.einsum("k,kij->ij", w, self.cov[idx]) if self.cov is not None else (
            (w @ self.var[idx]) * np.eye(self.dim))
        return within + (m - mean).T @ ((m - mean) * w[:, None])

    def sample(self, n: int, rng: np.random.Generator, subset=None):
        """n draws of `p^S` at ou_time 0 -> (x [n, d], component index [n])."""
        idx = np.arange(self.num_components) if subset is None else _subset(self, subset)
        comp = idx[rng.choice(len(idx), size=n, p=self.weights[idx] / self.weights[idx].sum())]
        return self.means[comp] + self._data_noise(comp, rng.standard_normal((n, self.dim))), comp

    def _data_noise(self, comp: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.cov is None:
            return np.sqrt(self.var[comp])[:, None] * z
        out = np.empty_like(z)
        for k in np.unique(comp):
            vals, vecs = np.linalg.eigh(self.cov[k])
            root = vecs * np.sqrt(np.clip(vals, 0, None))
            out[comp == k] = z[comp == k] @ root.T
        return out


class EmpiricalMixture(GaussianMixture):
    """A finite set of points [N, d], each a component of weight 1/N (a point mass),
    grouped into sub-populations by `labels` [N] (a training set, or a model's own samples
    labelled by a classifier)."""

    def __init__(self, points, labels):
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2:
            raise ValueError(f"points must have shape [N, d], got {points.shape}")
        labels = np.asarray(labels)
        if labels.shape != (len(points),):
            raise ValueError(f"labels must have shape [{len(points)}], got {labels.shape}")
        super().__init__(points, None, 0.0)
        self.labels = labels

    def indices(self, label_values) -> np.ndarray:
        """Component indices whose label is one of `label_values` (a value or a collection)."""
        values = np.atleast_1d(np.asarray(label_values, dtype=self.labels.dtype))
        idx = np.flatnonzero(np.isin(self.labels, values))
        if len(idx) == 0:
            raise ValueError(f"no point has a label in {list(values)!r}")
        return idx


@dataclass(frozen=True)
class Estimate:
    """A value at each ou_time with its Monte Carlo standard error (0 where exact)."""

    value: np.ndarray | float
    se: np.ndarray | float
    exact: bool
    n_samples: int  # Monte Carlo draws per sampled atom (0 when exact)


def _subset(mix: GaussianMixture, s) -> np.ndarray:
    idx = np.unique(np.asarray(list(s) if not isinstance(s, np.ndarray) else s, dtype=np.int64))
    if len(idx) == 0:
        raise ValueError("sub-population is empty")
    if idx[0] < 0 or idx[-1] >= mix.num_components:
        raise ValueError(f"component index {idx[0] if idx[0] < 0 else idx[-1]} out of range "
                         f"0..{mix.num_components - 1}")
    return idx


def _complement(mix: GaussianMixture, idx: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(mix.num_components), idx)


def _w(mix, idx) -> float:
    return float(mix.weights[idx].sum())


# ---------------------------------------------------------------- closed forms

def _same_cov(mix, i: int, j: int) -> bool:
    if mix.cov is None:
        return bool(np.isclose(mix.var[i], mix.var[j], rtol=1e-12, atol=0))
    return bool(np.allclose(mix.cov[i], mix.cov[j], rtol=1e-12, atol=1e-14))


def _mahalanobis_t(mix, i: int, j: int, t: np.ndarray) -> np.ndarray:
    """Delta_t between components i and j at ou_times t (same covariance)."""
    a = np.exp(-t)
    dmu = mix.means[i] - mix.means[j]
    if mix.cov is None:
        v = a ** 2 * mix.var[i] + 1 - a ** 2
        return a * np.linalg.norm(dmu) / np.sqrt(v)
    out = np.empty_like(t)
    for n, (ai, ti) in enumerate(zip(a.ravel(), t.ravel())):
        c = ai ** 2 * mix.cov[i] + (1 - ai ** 2) * np.eye(mix.dim)
        out.ravel()[n] = ai * np.sqrt(dmu @ np.linalg.solve(c, dmu))
    return out


def _exact_pair(mix, a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == 1 and len(b) == 1 and _same_cov(mix, a[0], b[0])


def _tv_exact(mix, a, b, t) -> np.ndarray:
    """TV(N(a, C), N(b, C)) = 2 Phi(Delta/2) - 1 (THEORY.md, "Closed forms")."""
    return special.erf(_mahalanobis_t(mix, a[0], b[0], t) / (2 * np.sqrt(2)))


def _retention_exact(mix, init, targ, t) -> np.ndarray:
    """Two components, one covariance: the log posterior odds is Gaussian, N(+-Delta^2/2 +
    log(w_targ/w_rest), Delta^2) under y ~ p_t^{init}; E[sigmoid] by quadrature."""
    rest = _complement(mix, targ)
    delta = _mahalanobis_t(mix, targ[0], rest[0], t)
    sign = 1.0 if init[0] == targ[0] else -1.0
    mean = sign * delta ** 2 / 2 + np.log(mix.weights[targ[0]] / mix.weights[rest[0]])
    out = np.empty(np.shape(t))
    for i, (m, s) in enumerate(zip(np.ravel(mean), np.ravel(delta))):
        f = lambda z: stats.norm.pdf(z) * special.expit(m + s * z)  # noqa: E731
        kink = -m / s if s > 0 else 0.0
        out.flat[i] = integrate.quad(f, -40, 40, points=[np.clip(kink, -39, 39)], limit=200,
                                     epsabs=1e-12)[0]
    return out


# ---------------------------------------------------------------- Monte Carlo engine

class _Engine:
    """Common random numbers over a partition of the components into atoms.

    Each sampled atom a gets n fixed draws (component pick, data draw x, noise z); at
    ou_time t its samples are y = exp(-t) x + sqrt(1 - exp(-2t)) z ~ p_t^a, and `logp(t)`
    returns, per sampled atom, log p_t^b(y) for every atom b [n, A].
    """

    def __init__(self, mix, subsets, sampled, n: int, seed: int):
        k = mix.num_components
        member = np.zeros((k, len(subsets)), dtype=bool)
        for j, s in enumerate(subsets):
            member[s, j] = True
        used = member.any(1)
        keys, atom_of = np.unique(member[used], axis=0, return_inverse=True)
        comps = np.flatnonzero(used)
        self.mix, self.n = mix, n
        self.atoms = [comps[atom_of.ravel() == a] for a in range(len(keys))]
        self.order = np.concatenate(self.atoms)
        self.bounds = np.cumsum([0] + [len(a) for a in self.atoms])
        self.atom_w = np.array([_w(mix, a) for a in self.atoms])
        self.logw_within = np.concatenate([np.log(mix.weights[a] / mix.weights[a].sum())
                                           for a in self.atoms])
        self.sampled = [i for i, a in enumerate(self.atoms) if np.isin(a, sampled).any()]
        rng = np.random.default_rng(seed)
        self.x, self.z = [], []
        for i in self.sampled:
            a = self.atoms[i]
            x, _ = mix.sample(n, rng, a)
            self.x.append(x)
            self.z.append(rng.standard_normal((n, mix.dim)))
        self.m = mix.means[self.order]
        self.mm = np.einsum("ij,ij->i", self.m, self.m)
        cut = lambda arr: [arr[self.bounds[i]:self.bounds[i + 1]] for i in range(len(self.atoms))]  # noqa: E731
        self.m_t = [np.ascontiguousarray(m.T, dtype=np.float32) for m in cut(self.m)]
        self.mm_atoms, self.logw_atoms = cut(self.mm), cut(self.logw_within)
        self.cache, self.subset_cache = {}, {}

    def atom_mask(self, idx) -> np.ndarray:
        """Atoms inside the component subset idx (a union of atoms by construction)."""
        return np.array([np.isin(a, idx).all() for a in self.atoms])

    def logp(self, t: float) -> list:
        t = float(t)
        if t not in self.cache:
            if len(self.cache) >= 4:
                self.cache.clear()
                self.subset_cache.clear()
            with threadpool_limits(limits=1):
                self.cache[t] = [self._logp_block(x, z, t) for x, z in zip(self.x, self.z)]
        return self.cache[t]

    def _logp_block(self, x, z, t) -> np.ndarray:
        mix = self.mix
        if mix.cov is None and np.any(mix.var == 0):
            t = max(t, 1e-7)  # point masses: p_t has no density at t = 0
        a = np.exp(-t)
        y = a * x + np.sqrt(-np.expm1(-2 * t)) * z
        out = np.empty((len(y), len(self.atoms)))
        rows = max(1, 2 ** 22 // len(self.order))
        for r in range(0, len(y), rows):
            out[r:r + rows] = self._logp_rows(y[r:r + rows], a, t)
        return out

    def _logp_rows(self, y, a, t) -> np.ndarray:
        mix, d = self.mix, self.mix.dim
        out = np.empty((len(y), len(self.atoms)))
        v = None if mix.cov is not None else a ** 2 * mix.var[self.order] - np.expm1(-2 * t)
        if v is not None and np.ptp(v) == 0:
            # One variance: log N = y.m a/v - a^2 |m|^2/(2v) + (row terms). The |y|^2 terms
            # leave the log-sum-exp; distances through float32 matrix products per atom
            # (contiguous), log-sum-exp after subtracting the row maximum, sums in float64.
            v = v[0]
            y32 = y.astype(np.float32)
            row = -0.5 * (y * y).sum(1) / v - 0.5 * d * np.log(2 * np.pi * v)
            for i in range(len(self.atoms)):
                g = y32 @ (self.m_t[i] * np.float32(a / v))
                g += (self.logw_atoms[i] - (0.5 * a * a / v) * self.mm_atoms[i]).astype(np.float32)
                top = g.max(1)
                g -= top[:, None]
                np.exp(g, out=g)
                out[:, i] = np.log(g.sum(1, dtype=np.float64)) + top + row
            return out
        if v is not None:
            g = y @ self.m.T
            g *= -2 * a
            g += (y * y).sum(1)[:, None]
            g += a ** 2 * self.mm
            g /= -2 * v
            g += self.logw_within - 0.5 * d * np.log(2 * np.pi * v)
        else:
            g = np.empty((len(y), len(self.order)))
            for j, k in enumerate(self.order):
                c = a ** 2 * mix.cov[k] - np.expm1(-2 * t) * np.eye(d)
                chol = np.linalg.cholesky(c)
                r = np.linalg.solve(chol, (y - a * mix.means[k]).T)
                g[:, j] = (-0.5 * (r * r).sum(0) - np.log(np.diag(chol)).sum()
                           - 0.5 * d * np.log(2 * np.pi) + self.logw_within[j])
        for i in range(len(self.atoms)):  # log-sum-exp within each atom
            sub = g[:, self.bounds[i]:self.bounds[i + 1]]
            top = sub.max(1)
            sub -= top[:, None]
            np.exp(sub, out=sub)
            out[:, i] = np.log(sub.sum(1)) + top
        return out

    def log_subset(self, lp: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """log p_t^S for the atoms in mask, from one block of log p_t^atom [n, A]."""
        key = (id(lp), mask.tobytes())
        if key not in self.subset_cache:
            if len(self.subset_cache) > 4096:
                self.subset_cache.clear()
            self.subset_cache[key] = (lp, self._log_subset(lp, mask))  # lp kept: ids stay valid
        return self.subset_cache[key][1]

    def _log_subset(self, lp, mask):
        sub = lp[:, mask]
        if sub.shape[1] == 1:
            return sub[:, 0]
        top = sub.max(1)
        w = self.atom_w[mask] / self.atom_w[mask].sum()
        return np.log(np.exp(sub - top[:, None]) @ w) + top

    def tv(self, t, m1, m2):
        """TV(p_t^S1, p_t^S2) = E_{(P+Q)/2} |p - q| / (p + q), stratified over atoms."""
        value, var = 0.0, 0.0
        for blk, i in zip(self.logp(t), self.sampled):
            c = 0.5 * (m1[i] * self.atom_w[i] / self.atom_w[m1].sum()
                       + m2[i] * self.atom_w[i] / self.atom_w[m2].sum())
            if c == 0:
                continue
            f = np.abs(np.tanh(0.5 * (self.log_subset(blk, m1) - self.log_subset(blk, m2))))
            value += c * f.mean()
            var += c ** 2 * f.var(ddof=1) / len(f)
        return value, np.sqrt(var)

    def retention(self, t, m_init, m_targ):
        """E_{y ~ p_t^init} P(S_targ | y), stratified over the atoms of S_init."""
        value, var = 0.0, 0.0
        every = np.ones(len(self.atoms), dtype=bool)
        log_wt = np.log(self.atom_w[m_targ].sum() / self.atom_w.sum())
        for blk, i in zip(self.logp(t), self.sampled):
            if not m_init[i]:
                continue
            c = self.atom_w[i] / self.atom_w[m_init].sum()
            post = np.exp(log_wt + self.log_subset(blk, m_targ) - self.log_subset(blk, every))
            value += c * post.mean()
            var += c ** 2 * post.var(ddof=1) / len(post)
        return value, np.sqrt(var)


def _sample_size(pilot_se: float, n0: int, se_target: float, n_max: int) -> int:
    """Draws per atom so that the largest standard error meets se_target."""
    if pilot_se <= se_target:
        return n0
    return int(min(n_max, np.ceil(n0 * 1.3 * (pilot_se / se_target) ** 2)))


def _mc_curve(make, quantity, ts, n, se_target, n0=1000, n_max=200_000):
    """Evaluate quantity(engine, t) -> (value, se) at ts; size the draws from a pilot."""
    eng = make(n or n0)
    out = np.array([quantity(eng, t) for t in ts]).reshape(-1, 2)
    if n is None:
        n_new = _sample_size(out[:, 1].max(initial=0), n0, se_target, n_max)
        if n_new > n0:
            eng = make(n_new)
            out = np.array([quantity(eng, t) for t in ts]).reshape(-1, 2)
    return out[:, 0], out[:, 1], eng.n


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


def tv(mixture, s1, s2, ou_time, *, method="auto", se_target=SE_TARGET, n=None, seed=0):
    """TV(p_t^{S1}, p_t^{S2}) at ou_time t (scalar or array) -> Estimate.

    method: "auto" (closed form 2 Phi(Delta/2) - 1 when the two sides reduce to one
    Gaussian each with one covariance, else Monte Carlo), "exact" or "mc". Monte Carlo
    uses TV = E_{(P+Q)/2} |p - q| / (p + q) with common random numbers across times;
    n draws per atom (None: sized so that se <= se_target).

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

    def make(m):
        return _Engine(mixture, [a, b], np.union1d(a, b), m, seed)

    def quantity(eng, ti):
        return eng.tv(ti, eng.atom_mask(a), eng.atom_mask(b))

    v, se, used = _mc_curve(make, quantity, t.ravel(), n, se_target / scale)
    return Estimate((scale * v).reshape(t.shape)[()], (scale * se).reshape(t.shape)[()],
                    False, used)


def retention_curve(mixture, s_init, s_targ, ou_times, *, method="auto", se_target=SE_TARGET,
                    n=None, seed=0, return_se=False):
    """Exact forward-reverse retention of an ideal denoiser at each ou_time (THEORY.md):
    `R(t) = E_{y ~ p_t^{S_init}} P(S_targ | y)`, `P(S | y)` the whole mixture's posterior.

    method "auto": closed form (1-D quadrature) for two components with one covariance,
    else Monte Carlo with common random numbers ("exact" / "mc" force one). Returns an array shaped like ou_times (and its standard
    errors when return_se).

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
        def make(m):
            return _Engine(mixture, [init, targ, rest], init, m, seed)

        def quantity(eng, ti):
            return eng.retention(ti, eng.atom_mask(init), eng.atom_mask(targ))

        v, se, _ = _mc_curve(make, quantity, t.ravel(), n, se_target)
        v, se = v.reshape(t.shape), se.reshape(t.shape)
    return (v[()], se[()]) if return_se else v[()]


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
                    se_target=SE_TARGET, n=None, seed=0, grid_size=48, refine=False):
    """Predicted windows for every feature value, and every value nested inside a value of
    another feature (its labels a strict subset: S_before = that value) -> list of
    PredictedWindow (one record per value, then the nested pairs; see its fields).

    features: `diffusion_windows.features.Feature` objects or dicts {"name", "values":
    {value: label indices}}. Labels map to components through `mixture.indices` for an
    EmpiricalMixture, through component_labels [K] (default: label i = component i) for
    a GaussianMixture. ou_times: where to give the ideal retention curve. All TVs share one
    Monte Carlo engine (atoms = the label groups, common random numbers) evaluated on a
    log grid of grid_size ou_times; thresholds by monotone interpolation on that grid, or
    brentq on the estimate with refine=True (slower: a full evaluation per iteration).

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
        levels[qab].add(p["eps_b"])
        if qb is not None:
            levels[qb].add(1 - p["eps_b"] ** 2)
    # sized so that se <= se_target at the pilot times around each threshold's crossing
    fns = _TVFunctions(mixture, pairs, se_target, n, seed, g[::max(1, grid_size // 16)], levels)
    # retention curves: sized like the TVs, from one engine over all S_after
    ret = {}
    if len(ts):
        groups = list(subsets.values())
        eng = None
        m_used = 0
        if not all(retention_closed(mixture, a) for a in groups):
            def make(m):
                return _Engine(mixture, groups + [_complement(mixture, a) for a in groups],
                               everything, m, seed)
            m_used = n or 600
            eng = make(m_used)
            if n is None:  # pilot at (up to 24 of) the requested times
                pilot = ts[np.unique(np.linspace(0, len(ts) - 1, min(len(ts), 24)).astype(int))]
                se = max(eng.retention(t, eng.atom_mask(a), eng.atom_mask(a))[1]
                         for t in pilot for a in groups)
                m_used = _sample_size(se, 600, se_target, 200_000)
                eng = make(m_used)
        if eng is not None:  # times outer: all curves at one ou_time share its log-densities
            masks = {key: eng.atom_mask(a) for key, a in subsets.items()}
            est = {key: [] for key in subsets}
            for t in ts:
                for key, m in masks.items():
                    est[key].append(eng.retention(t, m, m))
        for key, a in subsets.items():
            if eng is None:
                v, se = retention_curve(mixture, a, a, ts, return_se=True)
            else:
                v, se = np.array(est[key]).T.reshape(2, -1)
            ret[key] = (tuple(map(float, v)), tuple(map(float, se)), m_used)
    if refine:
        def cross(j, level, kind):
            return _crossing(fns.value(j), level, kind, g)
    else:  # one pass over the grid: every TV at one ou_time shares its log-densities
        vals = np.array([[fns(j, t) for j in range(len(pairs))] for t in g])  # [G, P, 2]

        def cross(j, level, kind):
            return _crossing(None, level, kind, g, refine=False, values=vals[:, j, 0])

    def se_t(j, t):
        if refine or not np.isfinite(t) or t <= g[0] or t >= g[-1]:
            return fns.se_t(j, t) if refine else 0.0
        slope = np.interp(t, g, np.gradient(vals[:, j, 0], g))
        return float(np.interp(t, g, vals[:, j, 1]) / abs(slope)) if slope else np.inf

    out = []
    for p in plan:
        rec, (qa, qab, qb) = p["rec"], p["q"]
        t_after = cross(qa, 1 - p["eps_a"] ** 2, "sup_above")
        t1 = cross(qab, p["eps_b"], "inf_below")
        t_start = np.inf if qb is None else cross(qb, 1 - p["eps_b"] ** 2, "sup_above")
        t_before = t1 if t1 <= t_start else np.nan
        cov = mixture.covariance(p["before"])
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
            speciation_ou=float(0.5 * np.log(np.linalg.eigvalsh(cov)[-1])),
            ou_times=tuple(map(float, ts)), ideal_retention=r[0], ideal_retention_se=r[1],
            t_after_se=se_t(qa, t_after), t_before_se=se_t(qab, t_before),
            n_samples=max(fns.n, r[2])))
    return out


def retention_closed(mixture, s) -> bool:
    """Whether retention_curve(mixture, s, s, ...) has the closed form."""
    s = _subset(mixture, s)
    rest = _complement(mixture, s)
    return len(rest) == 0 or (len(s) == 1 and len(rest) == 1 and _same_cov(mixture, s[0], rest[0]))
