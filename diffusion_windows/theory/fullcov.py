"""Full covariances ([K, d, d]) for the Monte Carlo engine: the old path, draws in R^d.

A draw of atom A is `x = m_j + Sigma_j^(1/2) u`, `z` (antithetic pairs `(u, z)`,
`(-u, -z)`, blocks as in `montecarlo`), `y = a x + s z`; log-densities by Cholesky factors
of `a^2 Sigma_k + s^2 I` (kept for the last few ou_times), log-sum-exp per atom.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .blocks import BLOCK, _lse_atoms


class _FullModel:
    """Full covariances: draws in R^d (x = m_j + Sigma_j^(1/2) u, z), Cholesky per component."""

    def __init__(self, eng):
        mix = eng.mix
        self.eng, self.mix = eng, mix
        w = mix.weights[eng.order]
        self.logw = np.concatenate([np.log(w[eng.bounds[i]:eng.bounds[i + 1]]
                                           / w[eng.bounds[i]:eng.bounds[i + 1]].sum())
                                    for i in range(len(eng.atoms))])
        self.roots = {}
        self._chol = OrderedDict()

    def _root(self, k):
        if k not in self.roots:
            vals, vecs = np.linalg.eigh(self.mix.cov[k])
            self.roots[k] = vecs * np.sqrt(np.clip(vals, 0, None))
        return self.roots[k]

    def block(self, atom: int, b: int) -> dict:
        rng = np.random.default_rng(np.random.SeedSequence(self.eng.seed, spawn_key=(atom, b)))
        h, d, comps = BLOCK // 2, self.mix.dim, self.eng.atoms[atom]
        w = self.mix.weights[comps] / self.mix.weights[comps].sum()
        j = comps[rng.choice(len(comps), size=h, p=w)]
        u = rng.standard_normal((h, d))
        z = rng.standard_normal((h, d))
        x = np.empty((h, d))
        for k in np.unique(j):
            x[j == k] = u[j == k] @ self._root(k).T
        sign = np.tile([1.0, -1.0], h)[:, None]
        jj = np.repeat(j, 2)
        return {"j": jj, "x": self.mix.means[jj] + np.repeat(x, 2, axis=0) * sign,
                "z": np.repeat(z, 2, axis=0) * sign}

    def project(self, dr) -> dict:
        return {"x": dr["x"], "z": dr["z"]}

    def _factors(self, t):
        if t not in self._chol:
            if len(self._chol) > 8:
                self._chol.popitem(last=False)
            a, d = np.exp(-t), self.mix.dim
            f = []
            for k in self.eng.order:
                c = a * a * self.mix.cov[k] - np.expm1(-2 * t) * np.eye(d)
                chol = np.linalg.cholesky(c)
                f.append((chol, np.log(np.diag(chol)).sum()))
            self._chol[t] = f
        return self._chol[t]

    def logp(self, proj, lo: int, hi: int, t: float) -> np.ndarray:
        t = float(t)
        a = np.exp(-t)
        y = a * proj["x"][lo:hi] + np.sqrt(-np.expm1(-2 * t)) * proj["z"][lo:hi]
        g = np.empty((len(y), len(self.eng.order)))
        for col, (k, (chol, logdet)) in enumerate(zip(self.eng.order, self._factors(t))):
            res = np.linalg.solve(chol, (y - a * self.mix.means[k]).T)
            g[:, col] = -0.5 * (res * res).sum(0) - logdet + self.logw[col]
        return _lse_atoms(g, self.eng.bounds)
