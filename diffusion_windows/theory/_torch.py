"""The Monte Carlo engine's heavy products in torch (`device="cpu"`, `"cuda"`, ...).

Same draws as the numpy path (numpy generates them), same formulas (`montecarlo._IsoModel`):
projections `x.(L_k - L_j)` as float32 matrix products with the own term in float64,
log-densities relative to the draw's own component in float32, exponentials in float32,
sums and offsets in float64. Results match numpy to ~1e-6 (float32 rounding), not bit
for bit. Imported only when a device is asked for; full covariances stay on numpy.
"""
from __future__ import annotations

import numpy as np
import torch


class TorchKernel:
    """Projections and log-densities of an `_IsoModel` on a torch device."""

    def __init__(self, eng, device):
        self.eng, self.model = eng, eng.model
        self.device = torch.device(device)
        m = self.model
        dev = self.device
        self.L32 = torch.as_tensor(m.L, dtype=torch.float32, device=dev)
        self.L64 = torch.as_tensor(m.L, dtype=torch.float64, device=dev)
        self.table = None if m.table is None else torch.as_tensor(m.table, device=dev)
        self.LL = torch.as_tensor(m.LL, dtype=torch.float64, device=dev)
        self.logw = torch.as_tensor(m.logw, dtype=torch.float64, device=dev)
        self.logw32 = None if m.logw32 is None else torch.as_tensor(m.logw32, device=dev)
        self.bounds = [int(b) for b in eng.bounds]

    def _t(self, x, dtype=None):
        return None if x is None else torch.as_tensor(x, dtype=dtype, device=self.device)

    def _rows(self, j):
        """D_jk (one variance, float32) or G_jk (several, float64) for components j."""
        if self.table is not None:
            return self.table[j]
        g = self.L64[j] @ self.L64.T
        if not self.model.one_var:
            return g
        return (self.LL[j][:, None] + self.LL[None, :] - 2 * g).clamp_min(0).to(torch.float32)

    def project(self, dr) -> dict:
        m = self.model
        j = self._t(dr["j"], torch.int64)
        beta, alpha = self._t(dr["beta"], torch.float64), self._t(dr["alpha"], torch.float64)
        if m.one_var:
            def rel(x):
                p = x.to(torch.float32) @ self.L32.T
                return p - (x * self.L64[j]).sum(1).to(torch.float32)[:, None]
            out = {"j": j, "pb": rel(beta), "pa": None, "bb": (beta * beta).sum(1)}
            if alpha is not None:
                out.update(pa=rel(alpha), aa=(alpha * alpha).sum(1), ab=(alpha * beta).sum(1))
            return out
        rows = torch.arange(len(j), device=self.device)
        sd = torch.sqrt(self._t(m.var, torch.float64)[j])
        pb = beta @ self.L64.T
        pa = None if alpha is None else alpha @ self.L64.T
        al = torch.zeros_like(beta) if alpha is None else alpha
        wish = torch.zeros((len(j), 3), dtype=torch.float64, device=self.device) if dr["wish"] is None \
            else self._t(dr["wish"], torch.float64)
        pa_own = torch.zeros(len(j), dtype=torch.float64, device=self.device) if pa is None else pa[rows, j]
        q = torch.stack([self.LL[j] + sd ** 2 * ((al * al).sum(1) + wish[:, 0]) + 2 * sd * pa_own,
                         2 * (pb[rows, j] + sd * ((al * beta).sum(1) + wish[:, 1])),
                         (beta * beta).sum(1) + wish[:, 2]], 1)
        return {"h": self._rows(j), "pb": pb, "pa": pa, "sd": sd, "q": q}

    def _lse(self, g, fast):
        """Per-atom log-sum-exp of g [n, K]: float32 exponentials, float64 sums (offsets: none
        when fast, else the per-atom maxima)."""
        b = self.bounds
        out = torch.empty((g.shape[0], len(b) - 1), dtype=torch.float64, device=self.device)
        for i in range(len(b) - 1):
            seg = g[:, b[i]:b[i + 1]]
            if fast:
                out[:, i] = torch.log(torch.exp(seg).sum(1, dtype=torch.float64))
            else:
                top = seg.max(1).values.to(torch.float64)
                e = torch.exp((seg - top[:, None].to(seg.dtype)).to(torch.float32))
                out[:, i] = torch.log(e.sum(1, dtype=torch.float64)) + top
        return out

    def logp(self, proj, lo: int, hi: int, t: float) -> np.ndarray:
        m = self.model
        a, s, v = m.coefficients(t)
        if m.one_var:
            vv, sd = float(v[0]), float(np.sqrt(m.var[0]))
            g = proj["pb"][lo:hi] * np.float32(a * s / vv)
            g -= np.float32(0.5 * a * a / vv) * self._rows(proj["j"][lo:hi])
            ee = s * s * proj["bb"][lo:hi]
            if proj["pa"] is not None:
                g += np.float32(a * a * sd / vv) * proj["pa"][lo:hi]
                ee = ee + a * a * sd * sd * proj["aa"][lo:hi] + 2 * a * s * sd * proj["ab"][lo:hi]
            if self.logw32 is not None:
                g += self.logw32
            fast = self.logw32 is None and float(ee.max()) / (2 * vv) < 80
            out = self._lse(g, fast)
        else:
            vt = torch.as_tensor(v, dtype=torch.float64, device=self.device)
            g = proj["pb"][lo:hi] * s
            if proj["pa"] is not None:
                g += a * proj["sd"][lo:hi, None] * proj["pa"][lo:hi]
            g += a * proj["h"][lo:hi]
            q = proj["q"][lo:hi] @ torch.tensor([a * a, a * s, s * s], dtype=torch.float64, device=self.device)
            g *= a / vt
            g -= q[:, None] * (0.5 / vt)[None, :]
            g -= 0.5 * a * a * self.LL / vt + 0.5 * m.d * torch.log(vt) - self.logw
            return self._lse(g, False).cpu().numpy()
        return out.cpu().numpy() + m.atom_shift
