"""Monte Carlo estimates of TV and retention at many ou_times, each sized on its own.

`_Quantities` turns pairs of sub-populations (unions of the engine's atoms) into the
estimators of THEORY.md, stratified over atoms (`w_a` the weight of atom a):

- `TV(p_t^{S1}, p_t^{S2}) = E_{(P+Q)/2} |p - q| / (p + q)
  = sum_a c_a E_{y ~ p_t^a} |tanh((log p^{S1}(y) - log p^{S2}(y)) / 2)|`,
  `c_a = (w_a 1[a in S1] / w(S1) + w_a 1[a in S2] / w(S2)) / 2`;
- `R(t) = E_{y ~ p_t^{S_init}} P(S_targ | y) = sum_{a in S_init} (w_a / w(S_init)) E_{p_t^a} P(S_targ | y)`,
  `P(S | y) = w(S) p^S(y) / p(y)`.
- With `S_init = S_targ = S` and draws of every atom (`both=True`), a second, independent
  estimate from the draws outside S: `E_p P(S | y) = w(S)`, so
  `R(t) = 1 - sum_{a not in S} (w_a / w(S)) E_{p_t^a} P(S | y)`. The two are combined with
  inverse-variance weights (variance `V1 V2 / (V1 + V2)`: measured 1.3-2.5 times smaller
  on the digits), except within RARE_BAND of 0 or 1, where the variance estimates rest on
  rare draws and the weights would follow their luck.

`_estimate` evaluates them at every ou_time on a pilot of `N_PILOT` draws per atom, then
adds draws only where an estimate misses its target standard error: per ou_time, the
fewest draws per atom that meet every target there (`_allocate`: Neyman allocation
`n_a ~ sqrt(sum_q lam_q c_qa^2 sigma_qa^2)` over the estimates at that ou_time, sigma the
standard deviation of one antithetic pair's mean), and near 0 or 1 at least 3 / se_target
draws per atom (a pilot may see none of the rare draws that make such a value and its se;
the rule of three bounds what they can hide by se_target). The draws of an atom are one
stream for every ou_time (common random numbers; at each ou_time a prefix of it), so the
pilot is kept, not redrawn, and an easy ou_time costs only the pilot.
"""
from __future__ import annotations

import numpy as np

from .blocks import BLOCK, _one_thread

N_PILOT = 128       # draws per atom at every ou_time before sizing
N_MAX = 200_000     # most draws per atom and ou_time
SAFETY = 1.15       # sized draws = SAFETY x the estimated need
ROUNDS = 12
TINY_SE = 1e-7      # below this a variance estimate is not trusted to weight a combination
RARE_BAND = 0.03    # values this close to 0 or 1 rest on rare events: at least 3 / se_target draws


class _Quantities:
    """TV pairs and retention pairs over atom masks of one engine -> per-draw values and
    the estimates (module docstring). Base quantities: `offset + sum_a coef_a E_a[f]`;
    `partner[q]` >= 0 marks a second estimate of quantity q, combined in `estimate`."""

    def __init__(self, eng, tvs=(), rets=(), both=False):
        n_atoms = len(eng.atoms)
        w = eng.atom_w
        masks = []

        def index(m):
            m = np.asarray(m, dtype=bool)
            for i, old in enumerate(masks):
                if np.array_equal(old, m):
                    return i
            masks.append(m)
            return len(masks) - 1

        self.all = index(np.ones(n_atoms, dtype=bool))
        rows = []  # (coef, kind, subset a, subset b, log weight, offset)
        for m1, m2 in tvs:
            c = 0.5 * (m1 * w / w[m1].sum() + m2 * w / w[m2].sum())
            rows.append((c, 0, index(m1), index(m2), 0.0, 0.0))
        for mi, mt in rets:
            rows.append((mi * w / w[mi].sum(), 1, index(mt), self.all, np.log(w[mt].sum() / w.sum()), 0.0))
        self.n_public = len(rows)
        self.partner = np.full(len(rows), -1)
        for q, (mi, mt) in enumerate(rets, start=len(tvs)):
            if both and np.array_equal(mi, mt) and not mi.all():
                self.partner[q] = len(rows)
                c = -1.0 * (~mi) * w / w[mi].sum()
                rows.append((c, 1, index(mt), self.all, np.log(w[mt].sum() / w.sum()), 1.0))
        cols = list(zip(*rows)) if rows else [np.zeros((0, n_atoms))] + [np.zeros(0)] * 5
        coef, kind, a, b, log_wt, offset = (np.array(x) for x in cols)
        self.coef = np.asarray(coef, dtype=float).reshape(-1, n_atoms)
        self.kind, self.a, self.b = kind.astype(int), a.astype(int), b.astype(int)
        self.log_wt, self.offset = log_wt.astype(float), offset.astype(float)
        mk = np.array(masks)
        self.w_sub = (mk * w[None, :] / (mk * w).sum(1, keepdims=True)).T   # [A, subsets]
        with np.errstate(divide="ignore"):
            self.logw_sub = np.log(self.w_sub.T)
        self.per_atom = [np.flatnonzero(self.coef[:, i] != 0) for i in range(n_atoms)]
        self.tv = self.kind == 0

    def __len__(self):
        return len(self.coef)

    def log_subsets(self, lp):
        """log p^S(y) [n, subsets] from log p^atom(y) [n, A] (one product; a subset whose
        sum underflows is redone with its own maximum)."""
        top = lp.max(1, keepdims=True)  # finite: the draw's own atom is never -inf
        sums = np.exp(lp - top) @ self.w_sub
        low = sums < 1e-200
        with np.errstate(divide="ignore"):
            ls = np.log(sums) + top
        if low.any():  # an atom that underflowed in the engine has log p = -inf: p^S = 0 exactly
            rows, cols = np.nonzero(low)
            x = lp[rows] + self.logw_sub[cols]
            m = x.max(1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                ls[rows, cols] = np.where(np.isfinite(m), np.log(np.exp(x - m).sum(1, keepdims=True)) + m,
                                          -np.inf)[:, 0]
        return ls

    def values(self, lp: np.ndarray, atom: int):
        """Per antithetic pair, the value of every quantity that samples `atom` -> (idx, [n/2, len(idx)])."""
        idx = self.per_atom[atom]
        ls = self.log_subsets(lp)
        d = ls[:, self.a[idx]] - ls[:, self.b[idx]]
        tv = self.tv[idx]
        if tv.all():
            f = np.abs(np.tanh(0.5 * d))
        else:
            with np.errstate(over="ignore"):
                f = np.minimum(np.exp(d + self.log_wt[idx]), 1.0)
            f[:, tv] = np.abs(np.tanh(0.5 * d[:, tv]))
        return idx, 0.5 * (f[0::2] + f[1::2])

    def estimate(self, acc):
        """-> values, se [T, public Q]; for sizing, each direct estimate's coefficients
        [Q, A] and per-pair variances [T, Q, A], and the variance of its partner estimate
        [T, Q] (inf: none; the partner uses draws sized for other quantities)."""
        mean, var, n = acc.moments(floor=~self.tv)  # retention values are reported with their se
        value = self.offset + (mean * self.coef).sum(2)
        v_se = (var * self.coef ** 2 / n).sum(2)
        p = self.n_public
        out_v, out_var = value[:, :p].copy(), v_se[:, :p].copy()
        partner_var = np.full(out_v.shape, np.inf)
        for q in np.flatnonzero(self.partner[:p] >= 0):
            r = self.partner[q]
            v1, v2 = v_se[:, q], v_se[:, r]
            # combine only away from 0 and 1: there the variance estimates rest on rare events
            ok = (np.minimum(v1, v2) > TINY_SE ** 2) & (np.abs(value[:, q] - 0.5) < 0.5 - RARE_BAND)
            lam = np.where(ok, v2 / np.where(ok, v1 + v2, 1), 1.0)   # weight of the direct estimate
            out_v[:, q] = lam * value[:, q] + (1 - lam) * value[:, r]
            out_var[:, q] = np.where(ok, v1 * v2 / np.where(ok, v1 + v2, 1), v1)
            partner_var[:, q] = np.where(ok, v2, np.inf)
        return out_v, np.sqrt(out_var), self.coef[:p], var[:, :p], partner_var


class _Accumulator:
    """Sums of pair values per (ou_time, quantity, atom), shifted for stable variances."""

    def __init__(self, n_t, n_q, n_a):
        self.n = np.zeros((n_t, n_q, n_a))
        self.s1 = np.zeros((n_t, n_q, n_a))
        self.s2 = np.zeros((n_t, n_q, n_a))
        self.shift = np.full((n_t, n_q, n_a), np.nan)

    def add(self, ti, atom, idx, vals):
        sh = self.shift[ti, idx, atom]
        new = np.isnan(sh)
        if new.any():
            sh = np.where(new, vals.mean(0), sh)
            self.shift[ti, idx, atom] = sh
        dv = vals - sh
        self.n[ti, idx, atom] += len(vals)
        self.s1[ti, idx, atom] += dv.sum(0)
        self.s2[ti, idx, atom] += (dv * dv).sum(0)

    def moments(self, floor=None):
        """-> mean, per-pair variance, pairs (at least 1) [T, Q, A]. Every value lies in
        [0, 1]; for the quantities in floor [Q] (bool), within RARE_BAND of a bound, where
        the sample variance rests on rare draws, the variance is floored by the largest a
        mean that close allows, the distance taken at least 1 / pairs (no rare draw seen):
        delta (1 - delta)."""
        n = np.maximum(self.n, 1)
        mean = np.nan_to_num(self.shift) + self.s1 / n
        var = np.clip((self.s2 - self.s1 ** 2 / n) / np.maximum(self.n - 1, 1), 0, None)
        if floor is not None and floor.any():
            delta = np.minimum(mean, 1 - mean)
            rare = (delta < RARE_BAND) & floor[None, :, None]
            delta = np.clip(np.maximum(delta, 1 / n), 0, 0.5)
            var = np.where(rare, np.maximum(var, delta * (1 - delta)), var)
        return mean, var, n


def _fill(eng, quants, ts, have, need, acc, backwards=False):
    """Evaluate draws have[t, a]..need[t, a]-1 of every atom at every ou_time (atoms in
    reverse order when backwards: the projections cached last are used first)."""
    atoms = range(len(eng.atoms))
    for a in (reversed(atoms) if backwards else atoms):
        lo, hi = have[:, a], need[:, a]
        todo = np.flatnonzero(hi > lo)
        if len(todo) == 0 or len(quants.per_atom[a]) == 0:
            continue
        start, stop = int(lo[todo].min()), int(hi[todo].max())
        for c0 in range((start // eng.chunk) * eng.chunk, stop, eng.chunk):
            c1 = min(c0 + eng.chunk, stop)
            rows = [(ti, max(int(lo[ti]), c0), min(int(hi[ti]), c1)) for ti in todo]
            rows = [(ti, r0, r1) for ti, r0, r1 in rows if r1 > r0]
            if not rows:
                continue
            proj = eng.projected(a, c0)
            for ti, r0, r1 in rows:
                lp = eng.logp_rows(proj, r0 - c0, r1 - c0, ts[ti])
                idx, vals = quants.values(lp, a)
                acc.add(ti, a, idx, vals)
    have[:] = np.maximum(have, need)


def _allocate(b, floor, target2, iters=200):
    """Fewest pairs n_a >= floor_a with sum_a b_qa / n_a <= target2_q for every q
    (b_qa = c_qa^2 sigma_qa^2): the Lagrangian solution n_a = max(floor_a,
    sqrt(sum_q lam_q b_qa)), its multipliers lam_q found by multiplicative updates."""
    floor = np.maximum(floor, 1.0)
    lam = np.zeros(len(b))
    bad = (b / floor).sum(1) > target2
    if not bad.any():
        return floor
    lam[bad] = ((b[bad].sum(1) ** 0.5 * np.sqrt(b[bad]).sum(1)) / target2[bad]) ** 1.0 / max(1, bad.sum())
    n = floor
    for _ in range(iters):
        n = np.maximum(floor, np.sqrt(lam @ b))
        ratio = (b / n).sum(1) / target2
        if np.all(ratio <= 1.0001):
            break
        lam = lam * np.clip(ratio, 0.25, 4.0) ** 2
        lam[(ratio < 1) & (lam < 1e-30)] = 0.0
    scale = max(1.0, ((b / n).sum(1) / target2).max())  # not converged: scale up, all constraints met
    return n * scale


def _even(n) -> int:
    return int(2 * np.ceil(n / 2))


def _estimate(eng, quants, ts, se_target, n=None, require=None, n0=N_PILOT, n_max=N_MAX):
    """Values and standard errors [T, Q] of quants at ou_times ts, and draws per atom [T, A].

    n: draws per sampled atom at every ou_time (None: sized, see module docstring; an int
    or an array [A]). require(values, se) -> (targets [T, Q], least draws [T, Q]): the
    standard error each estimate must reach (inf: none) and the draws per atom it needs at
    least; None: se_target everywhere.
    """
    ts = np.asarray(ts, dtype=np.float64).ravel()
    n_atoms = len(eng.atoms)
    active = np.array([len(quants.per_atom[a]) > 0 for a in range(n_atoms)])
    acc = _Accumulator(len(ts), len(quants), n_atoms)
    have = np.zeros((len(ts), n_atoms), dtype=np.int64)
    with _one_thread():
        if n is not None:
            fixed = np.broadcast_to(np.asarray(n), (n_atoms,))
            need = np.tile([_even(m) for m in fixed], (len(ts), 1)) * active
            _fill(eng, quants, ts, have, need, acc)
            v, se = quants.estimate(acc)[:2]
            return v, se, need
        need = np.tile(np.where(active, _even(n0), 0), (len(ts), 1))
        for r in range(ROUNDS):
            _fill(eng, quants, ts, have, need, acc, backwards=r % 2 == 1)
            v, se, coef, var, partner = quants.estimate(acc)
            target, least = (np.full(v.shape, se_target), np.zeros(v.shape, np.int64)) if require is None \
                else require(v, se)
            # near 0 or 1 a pilot may see none of the rare draws that make the value (and its
            # se): 3 / se_target draws per atom bound what it can miss by se_target (rule of three)
            rare = np.isfinite(target) & (np.abs(v - 0.5) >= 0.5 - RARE_BAND)
            least = np.where(rare, np.maximum(least, np.ceil(3 / se_target)), least)
            new = need.copy()
            for ti, q in zip(*np.nonzero(least > 0)):
                want = min(int(np.ceil(least[ti, q] / BLOCK) * BLOCK), n_max)
                new[ti] = np.maximum(new[ti], np.where(coef[q] != 0, want, 0))
            # a value near 0 or 1 is sized by its se only once it has its least draws (its
            # floored variance falls with the draws: sized from the pilot it would overshoot)
            short = np.array([[rare[ti, q] and (need[ti][coef[q] != 0] < least[ti, q]).any()
                               for q in range(v.shape[1])] for ti in range(len(ts))]).reshape(v.shape)
            for ti in np.flatnonzero(((se > target) & ~short).any(1)):
                qs = np.flatnonzero(np.isfinite(target[ti]) & ~short[ti])
                tq = target[ti, qs]
                # combined with a partner of variance V2: the direct estimate must reach
                # V1 <= T^2 V2 / (V2 - T^2) (when V2 > T^2; else the direct one alone: T)
                v2 = partner[ti, qs]
                far = np.isfinite(v2) & (v2 > 1.0001 * tq ** 2)
                tq = np.where(far, tq * np.sqrt(v2 / np.where(far, v2 - tq ** 2, 1)), tq)
                b = coef[qs] ** 2 * var[ti, qs]
                units = _allocate(b, new[ti] / 2, tq ** 2 / SAFETY)
                want = np.minimum(np.ceil(2 * units / BLOCK) * BLOCK, n_max).astype(np.int64)
                new[ti] = np.where(active, np.maximum(new[ti], want), 0)
            if np.array_equal(new, need):
                break
            need = new
    return v, se, need
