"""Monte Carlo with common random numbers for TV and retention of mixtures (THEORY.md).

`_Engine` draws, once, per atom of a partition of the components: a component pick, a data
draw and a noise draw; every ou_time reuses them, so curves over time are smooth and
differences between sub-populations are estimated with correlated errors. Log-densities
by log-sum-exp, distances by matrix products, float64.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .mixtures import _w

try:  # small matrix products: one BLAS thread is much faster on a shared, loaded CPU
    from threadpoolctl import threadpool_limits
except ImportError:  # optional (comes with scikit-learn)
    def threadpool_limits(limits=None):
        return nullcontext()

SE_TARGET = 0.003  # default Monte Carlo standard error on TV and retention values


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

