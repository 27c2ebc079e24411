"""What the Monte Carlo engine (`montecarlo`) and its full-covariance path (`fullcov`) share:
the block size of the random streams, one BLAS thread for products, the per-atom log-sum-exp.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

BLOCK = 128         # draws per block of the random stream (64 antithetic pairs)

_CONTROLLER = []


def _one_thread():
    """One BLAS thread (small products run faster on a shared CPU, and sum in one order):
    a context manager; the thread pools are inspected once per process."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a dependency (setup.cfg); an install without it runs on the BLAS's own threads
        return nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


def _lse_atoms(g, bounds):
    """Per-atom log-sum-exp of g [n, K] (atoms = column ranges bounds[i]:bounds[i+1]):
    offsets = the per-atom maxima, exponentials in float32, sums in float64."""
    top = np.maximum.reduceat(g, bounds[:-1], axis=1)
    e = np.empty(g.shape, np.float32)
    for i in range(len(bounds) - 1):
        np.subtract(g[:, bounds[i]:bounds[i + 1]], top[:, i:i + 1], out=e[:, bounds[i]:bounds[i + 1]],
                    casting="unsafe")
    np.exp(e, out=e)
    return np.log(np.add.reduceat(e, bounds[:-1], axis=1, dtype=np.float64)) + top
