"""Monte Carlo with common random numbers for TV and retention of mixtures (THEORY.md).

`_Engine` partitions the components into atoms and gives each sampled atom one fixed,
endless stream of draws (blocks of `BLOCK` draws, block b of atom a seeded by
`(seed, a, b)`); every ou_time reuses them, so curves over time are smooth and
differences between sub-populations have correlated errors. Draws come in antithetic
pairs (noise `+xi`, `-xi` with one component pick): the unit of every variance estimate
is the pair's mean.

Isotropic mixtures (`GaussianMixture` with a scalar or [K] variances, `EmpiricalMixture`):
memory and time linear in d, nothing of size `n x d`. Component k is `N(m_k, v_k I)`
(`v_k = 0`: a point mass); at ou_time t, `a = exp(-t)`, `s^2 = 1 - a^2`,
`p_t^k = N(a m_k, V_k I)` with `V_k = a^2 v_k + s^2`, and a draw of atom A is
`y = a (m_j + sqrt(v_j) u) + s z`, `j ~ w|A`, `u, z ~ N(0, I_d)`. Move the origin to
`c = sum_k w_k m_k` (the OU map sends `c` to `a c`, TV and posteriors do not change),
`y~ = y - a c`, and let `L` [K, r] be the coordinates of the centred means `m_k - c` in an
orthonormal basis `Q` [d, r] of their span (thin SVD, r = numerical rank, so
`L L^T = G`, the Gram matrix of the centred means; Q itself is never formed). Split
`u = Q alpha + u_perp`, `z = Q beta + z_perp` with `alpha, beta ~ N(0, I_r)`, and
`(u_perp, z_perp)` independent of them in the other `d - r` dimensions. Then

    log p_t^k(y) = -(|y~|^2 - 2 a y~.L_k + a^2 |L_k|^2) / (2 V_k) - (d/2) log(2 pi V_k),
    y~.L_k  = a G_jk + a sqrt(v_j) alpha.L_k + s beta.L_k,
    |y~|^2  = |a L_j + a sqrt(v_j) alpha + s beta|^2
              + a^2 v_j |u_perp|^2 + 2 a s sqrt(v_j) u_perp.z_perp + s^2 |z_perp|^2,

and the last three terms are one 2 x 2 Wishart(I, d - r) matrix, drawn by Bartlett's
decomposition: `|u_perp|^2 = c1^2`, `u_perp.z_perp = c1 n21`, `|z_perp|^2 = n21^2 + c2^2`,
`c1^2 ~ chi2(d - r)`, `c2^2 ~ chi2(d - r - 1)`, `n21 ~ N(0, 1)`. So each draw keeps a
component index, `alpha, beta` in R^r and three numbers; its projections `alpha.L_k`,
`beta.L_k` [n, K] are formed once (float64 products) and serve every ou_time.

With one variance `V` for all components (`EmpiricalMixture`, a scalar cov) `|y~|^2` is
the same for every k and cancels (TV and posteriors use differences of log-densities of
one draw; `logp` is exact up to a constant per draw), the perpendicular part is not drawn,
and the log-density is taken relative to the draw's own component j, with
`e = a sqrt(v) alpha + s beta` its noise and `D_jk = |L_j - L_k|^2`:

    log p_t^k(y) - log p_t^j(y) = (a/V) e.(L_k - L_j) - a^2 D_jk / (2V)  <=  |e|^2 / (2V).

Nothing large cancels here, so the projections `alpha.(L_k - L_j)`, `beta.(L_k - L_j)`
are kept in float32 (float32 products, the own term in float64) and the terms formed and
exponentiated in float32 (relative error ~1e-7, far below the Monte Carlo error); sums
over components in float64. The bound (`|e|^2 / V ~ chi2(r)`) makes a row offset
unnecessary while `|e|^2 / (2V) < 80`: no overflow, the own term is exp(0) = 1, and an
atom whose float32 sum underflows is below 1e-38 of it (-inf: negligible in every TV and
posterior). Otherwise (and with several variances, in float64) the offsets are per-atom
maxima.

Full covariances ([K, d, d]) keep the old path (`fullcov.py`): draws in R^d, Cholesky
factors of `a^2 Sigma_k + s^2 I`.

Matrix products run on one BLAS thread: results do not depend on the thread count (and
small products run faster on a shared CPU). `device` (a torch device) runs projections
and log-densities in torch (`_torch.py`: the same draws, the same formulas).

Measured on the default digits theory (1,347 points, d = 64, 2 shared cores), before:
13-30 s, of which 80 % in the retention curves (15,522 draws per atom at all 20 ou_times,
sized for the hardest one) and 20 % in the 48-point TV grid (1,412 draws per atom at
every point), ~3.5 ns per component and draw and ou_time (float32 distances by a matrix
product per ou_time, log-sum-exp). After: 0.6 M draw x ou_time evaluations instead of
4.1 M (per-ou_time sizing, `sizing.py`; antithetic pairs: 1.5-2 x less variance for
retention at its steepest; the pilot kept), ~2.5 ns each (projections once per draw, two
float32 passes, one float32 exp, one float64 segment sum), 3.5-4.5 s in all.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .blocks import BLOCK, _lse_atoms, _one_thread
from .mixtures import _w

SE_TARGET = 0.003   # default Monte Carlo standard error on TV and retention values
CHUNK = 1024        # draws whose projections are formed together
ROWS = 128          # draws per pass of the log-sum-exp (cache-sized)
GRAM_MAX = 4096     # keep the K x K Gram matrix when K is at most this
CACHE_BYTES = 2 ** 27  # projections kept between calls (per engine)


class _Engine:
    """Common random numbers over a partition of the components into atoms.

    `logp(t, atom, lo, hi)` -> [hi - lo, A]: for draws lo..hi-1 of the stream of `atom`,
    log p_t^b(y) for every atom b (exact up to a constant per draw; `p^b` the mixture
    restricted to b). `atom_mask(idx)` -> which atoms make up the component subset idx.
    """

    def __init__(self, mix, subsets, sampled, seed: int, device=None):
        k = mix.num_components
        member = np.zeros((k, len(subsets)), dtype=bool)
        for j, s in enumerate(subsets):
            member[s, j] = True
        used = member.any(1)
        keys, atom_of = np.unique(member[used], axis=0, return_inverse=True)
        comps = np.flatnonzero(used)
        self.mix, self.seed = mix, int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed!r}")
        self.atoms = [comps[atom_of.ravel() == a] for a in range(len(keys))]
        self.order = np.concatenate(self.atoms)
        self.bounds = np.cumsum([0] + [len(a) for a in self.atoms])
        self.atom_w = np.array([_w(mix, a) for a in self.atoms])
        self.sampled = np.array([np.isin(a, sampled).any() for a in self.atoms])
        if mix.cov is not None:
            from .fullcov import _FullModel
            self.model = _FullModel(self)
        else:
            self.model = _IsoModel(self)
        self.device, self.kernel = device, None
        if device is not None and mix.cov is None:  # full covariances stay on numpy
            from ._torch import TorchKernel
            self.kernel = TorchKernel(self, device)
        self.chunk = CHUNK if self.kernel is None else 8 * CHUNK
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0

    def atom_mask(self, idx) -> np.ndarray:
        """Atoms inside the component subset idx (a union of atoms by construction)."""
        return np.array([np.isin(a, idx).all() for a in self.atoms])

    # ------------------------------------------------------------ draws

    def draws(self, atom: int, lo: int, hi: int) -> dict:
        """Draws lo..hi-1 of the atom's stream (blocks of BLOCK, antithetic pairs interleaved)."""
        parts = [self.model.block(atom, b) for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1)]
        start = lo - (lo // BLOCK) * BLOCK
        return {key: (None if parts[0][key] is None else
                      np.concatenate([p[key] for p in parts])[start:start + hi - lo])
                for key in parts[0]}

    def projected(self, atom: int, c0: int):
        """Projections of the chunk of draws c0..c0+chunk-1 (c0 a multiple of self.chunk),
        kept (least recently used first out) while they fit in CACHE_BYTES."""
        key = (atom, c0)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        with _one_thread():
            proj = (self.kernel or self.model).project(self.draws(atom, c0, c0 + self.chunk))
        size = _nbytes(proj)
        if size <= CACHE_BYTES:
            self._cache[key] = (proj, size)
            self._cache_bytes += size
            while self._cache_bytes > CACHE_BYTES:
                _, (_, old) = self._cache.popitem(last=False)
                self._cache_bytes -= old
        return proj

    # ------------------------------------------------------------ log-densities

    def logp_rows(self, proj, lo: int, hi: int, t: float) -> np.ndarray:
        """log p_t^b [hi - lo, A] for rows lo..hi-1 of one chunk's projections."""
        if self.kernel is not None:
            return self.kernel.logp(proj, lo, hi, t)
        return self.model.logp(proj, lo, hi, t)

    def logp(self, t: float, atom: int, lo: int, hi: int) -> np.ndarray:
        """log p_t^b(y) [hi - lo, A] for draws lo..hi-1 of atom (up to a constant per draw)."""
        out = np.empty((hi - lo, len(self.atoms)))
        pos = lo
        while pos < hi:
            c0 = (pos // self.chunk) * self.chunk
            end = min(hi, c0 + self.chunk)
            out[pos - lo:end - lo] = self.logp_rows(self.projected(atom, c0), pos - c0, end - c0, t)
            pos = end
        return out


def _axpy(alpha: float, x: np.ndarray, y: np.ndarray, tmp: np.ndarray):
    """y += alpha x (float32) through the buffer tmp."""
    np.multiply(x, np.float32(alpha), out=tmp)
    y += tmp


def _nbytes(proj) -> int:
    return int(sum(getattr(v, "nbytes", 0) or (v.numel() * v.element_size() if hasattr(v, "numel") else 0)
                   for v in proj.values() if v is not None and not np.isscalar(v)))


def _safe_time(mix, t: float) -> float:
    if mix.cov is None and np.any(mix.var == 0):
        return max(float(t), 1e-7)  # point masses: p_t has no density at t = 0
    return float(t)


class _IsoModel:
    """Isotropic components: draws and log-densities in the r-dim span of the centred means
    (module docstring)."""

    def __init__(self, eng):
        mix = eng.mix
        self.eng, self.d = eng, mix.dim
        order, bounds = eng.order, eng.bounds
        means = mix.means[order]
        centre = mix.weights[order] @ means / mix.weights[order].sum()
        with _one_thread():
            u, sv, _ = np.linalg.svd(means - centre, full_matrices=False)
        tol = sv.max(initial=0.0) * max(means.shape) * np.finfo(float).eps
        self.r = int((sv > tol).sum())
        self.L = u[:, :self.r] * sv[:self.r]                     # [K, r], L L^T = G
        self.LL = np.einsum("ij,ij->i", self.L, self.L)          # |L_k|^2
        self.L32 = self.L.astype(np.float32)
        self.var = mix.var[order].copy()
        self.one_var = bool(np.ptp(self.var) == 0)
        self.noisy = self.var > 0
        w = mix.weights[order]
        self.w_within = [w[bounds[i]:bounds[i + 1]] / w[bounds[i]:bounds[i + 1]].sum()
                         for i in range(len(eng.atoms))]
        self.logw = np.log(np.concatenate(self.w_within))
        # equal weights inside every atom: add log(1/|A|) after the log-sum-exp
        flat = all(np.ptp(x) == 0 for x in self.w_within)
        self.atom_shift = np.log([x[0] for x in self.w_within]) if flat else 0.0
        self.logw32 = None if flat else self.logw.astype(np.float32)
        self.table = None  # D_jk = |L_j - L_k|^2 (one variance, float32) or G_jk (several)
        if len(order) <= GRAM_MAX:
            self.table = self._rows(np.arange(len(order)))

    def _rows(self, j):
        with _one_thread():
            g = self.L[j] @ self.L.T
        if not self.one_var:
            return g
        return np.maximum(self.LL[j][:, None] + self.LL[None, :] - 2 * g, 0).astype(np.float32)

    def block(self, atom: int, b: int) -> dict:
        """Block b of atom's stream: BLOCK draws, pairs (+xi, -xi) interleaved."""
        rng = np.random.default_rng(np.random.SeedSequence(self.eng.seed, spawn_key=(atom, b)))
        h, r, eng = BLOCK // 2, self.r, self.eng
        j = eng.bounds[atom] + rng.choice(len(self.w_within[atom]), size=h, p=self.w_within[atom])
        beta = rng.standard_normal((h, r))
        noisy = bool(self.noisy[eng.bounds[atom]:eng.bounds[atom + 1]].any())
        alpha = rng.standard_normal((h, r)) if noisy else None
        wish = None
        if not self.one_var and self.d > r:  # Bartlett: the 2 x 2 Wishart(I, d - r) of (u_perp, z_perp)
            c1 = np.sqrt(rng.chisquare(self.d - r, h))
            n21 = rng.standard_normal(h)
            c2 = np.sqrt(rng.chisquare(self.d - r - 1, h)) if self.d - r > 1 else np.zeros(h)
            wish = np.stack([c1 * c1, c1 * n21, n21 * n21 + c2 * c2], 1)
        sign = np.tile([1.0, -1.0], h)[:, None]
        twice = lambda x: None if x is None else np.repeat(x, 2, axis=0)  # noqa: E731
        return {"j": np.repeat(j, 2), "beta": twice(beta) * sign,
                "alpha": None if alpha is None else twice(alpha) * sign, "wish": twice(wish)}

    def project(self, dr) -> dict:
        """Projections of a chunk of draws, formed once for every ou_time.

        One variance: `beta.(L_k - L_j)`, `alpha.(L_k - L_j)` [n, K] in float32 (the
        log-density relative to the draw's own component, see `_logp_one`; `D_jk` is gathered
        when used). Several variances: `G_jk`, `beta.L_k`, `alpha.L_k` in float64
        and the coefficients of `|y~|^2 = q0 a^2 + q1 a s + q2 s^2`."""
        j, beta, alpha = dr["j"], dr["beta"], dr["alpha"]
        rows = np.arange(len(j))
        if self.one_var:
            def rel(x):  # x.(L_k - L_j): float32 product, own term in float64
                with _one_thread():
                    p = x.astype(np.float32) @ self.L32.T
                p -= np.einsum("ij,ij->i", x, self.L[j]).astype(np.float32)[:, None]
                return p
            out = {"j": j, "pb": rel(beta), "pa": None, "bb": (beta * beta).sum(1)}
            if alpha is not None:
                out.update(pa=rel(alpha), aa=(alpha * alpha).sum(1), ab=(alpha * beta).sum(1))
            return out
        table = self.table[j] if self.table is not None else self._rows(j)
        with _one_thread():
            pb = beta @ self.L.T
            pa = None if alpha is None else alpha @ self.L.T
        sd = np.sqrt(self.var[j])
        al = np.zeros_like(beta) if alpha is None else alpha
        wish = np.zeros((len(j), 3)) if dr["wish"] is None else dr["wish"]
        pa_own = np.zeros(len(j)) if pa is None else pa[rows, j]
        q = np.stack([self.LL[j] + sd ** 2 * ((al * al).sum(1) + wish[:, 0]) + 2 * sd * pa_own,
                      2 * (pb[rows, j] + sd * ((al * beta).sum(1) + wish[:, 1])),
                      (beta * beta).sum(1) + wish[:, 2]], 1)
        return {"h": table, "pb": pb, "pa": pa, "sd": sd, "q": q}

    def coefficients(self, t: float):
        """a, s and the per-component V_k at ou_time t."""
        t = _safe_time(self.eng.mix, t)
        a, s2 = np.exp(-t), -np.expm1(-2 * t)
        return a, np.sqrt(s2), a * a * self.var + s2

    def logp(self, proj, lo: int, hi: int, t: float) -> np.ndarray:
        """log p_t^atom [hi - lo, A], up to a constant per draw."""
        a, s, v = self.coefficients(t)
        out = np.empty((hi - lo, len(self.eng.atoms)))
        for r0 in range(lo, hi, ROWS):
            r1 = min(hi, r0 + ROWS)
            if self.one_var:
                out[r0 - lo:r1 - lo] = self._logp_one(proj, r0, r1, a, s, v[0])
            else:
                out[r0 - lo:r1 - lo] = self._logp_several(proj, r0, r1, a, s, v)
        return out

    def _logp_one(self, proj, r0, r1, a, s, v):
        """One variance V. Relative to the draw's own component j (e = y~ - a L_j, the noise):
        g_k = log p^k - log p^j = (a/V) e.(L_k - L_j) - a^2 D_jk / (2V): no |y~|^2, no large
        common terms, so float32 loses only ~1e-7 of the terms that matter. And
        g_k <= |e|^2 / (2V) ~ chi2(r) / 2: while that stays below 80 the exponentials need no
        offset (no float32 overflow; the own term is exp(0); an atom whose sum underflows
        is below 1e-38 of it and negligible in every TV and posterior)."""
        sd = np.sqrt(self.var[0])
        g = np.multiply(proj["pb"][r0:r1], np.float32(a * s / v))
        j = proj["j"][r0:r1]
        dj = self.table[j] if self.table is not None else self._rows(j)   # D_jk, gathered here
        _axpy(-0.5 * a * a / v, dj, g, dj)
        if proj["pa"] is not None:
            _axpy(a * a * sd / v, proj["pa"][r0:r1], g, dj)
        if self.logw32 is not None:
            g += self.logw32
        ee = s * s * proj["bb"][r0:r1]
        if proj["pa"] is not None:
            ee = ee + a * a * sd * sd * proj["aa"][r0:r1] + 2 * a * s * sd * proj["ab"][r0:r1]
        if self.logw32 is None and ee.max() / (2 * v) < 80:
            np.exp(g, out=g)
            with np.errstate(divide="ignore"):
                sums = np.add.reduceat(g, self.eng.bounds[:-1], axis=1, dtype=np.float64)
                return np.log(sums) + self.atom_shift
        return _lse_atoms(g, self.eng.bounds) + self.atom_shift

    def _logp_several(self, proj, r0, r1, a, s, v):
        """Several variances: -(|y~|^2 - 2 a y~.L_k + a^2 |L_k|^2) / (2 V_k) - (d/2) log V_k in float64."""
        sd = proj["sd"][r0:r1, None]
        g = np.multiply(proj["pb"][r0:r1], s)
        if proj["pa"] is not None:
            g += a * sd * proj["pa"][r0:r1]
        g += a * proj["h"][r0:r1]
        q = proj["q"][r0:r1] @ np.array([a * a, a * s, s * s])
        g *= a / v
        g -= np.multiply.outer(q, 0.5 / v)
        g -= 0.5 * a * a * self.LL / v + 0.5 * self.d * np.log(v) - self.logw
        return _lse_atoms(g, self.eng.bounds)
