"""Data models of the theory: Gaussian and empirical mixtures, sub-populations, closed forms.

`GaussianMixture(means, weights, cov)`, `EmpiricalMixture(points, labels)`; sub-populations
are collections of component indices. Closed forms (THEORY.md, "Closed forms"): TV and
ideal-denoiser retention for two Gaussians with one covariance.
"""
from __future__ import annotations

import numpy as np
from scipy import integrate, special, stats


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


def _top_eigenvalue(mix, subset=None) -> float:
    """Largest eigenvalue of the covariance of `p^S`. Isotropic components: `sum_k w_k v_k`
    plus the top eigenvalue of the between-component part `D^T D`, `D = W^(1/2) (M - mean)`,
    taken from the smaller of `D D^T` [|S|, |S|] and `D^T D` [d, d] (never d x d when
    |S| < d)."""
    idx = np.arange(mix.num_components) if subset is None else _subset(mix, subset)
    if mix.cov is not None:
        return float(np.linalg.eigvalsh(mix.covariance(idx))[-1])
    w = mix.weights[idx] / mix.weights[idx].sum()
    m = mix.means[idx]
    dev = np.sqrt(w)[:, None] * (m - w @ m)
    small = dev @ dev.T if len(idx) <= mix.dim else dev.T @ dev
    return float(w @ mix.var[idx] + np.linalg.eigvalsh(small)[-1])


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



def retention_closed(mixture, s) -> bool:
    """Whether retention_curve(mixture, s, s, ...) has the closed form."""
    s = _subset(mixture, s)
    rest = _complement(mixture, s)
    return len(rest) == 0 or (len(s) == 1 and len(rest) == 1 and _same_cov(mixture, s[0], rest[0]))
