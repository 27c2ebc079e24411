"""Seeded token sampling for truncate-and-resample (`text.resample`): one uniform per sample and step.

The token at step ``s`` of a continuation with seed ``seed`` is drawn by inverse-CDF sampling with
the uniform `uniforms(seed, s)` (a counter-based stream, so one number per sample and step, the
same on every device, batch and process); `continuation_seed` derives a continuation's seed from
the run seed and (base, kept, restart) only. Temperature 0 is greedy; ``top_p < 1`` keeps the
smallest set of most likely tokens whose mass reaches ``top_p`` (as ``transformers``'
``TopPLogitsWarper``). numpy and torch only.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["continuation_seed", "uniforms", "sample_tokens"]


def continuation_seed(seed: int, base: int, kept: int, restart: int) -> int:
    """A 63-bit seed of one continuation from the run seed and (base, kept, restart) only.

    The same recipe and value as ``diffusion_windows.measure.unit_seed(seed, base, kept,
    restart)``, without importing the diffusion stack.
    """
    text = repr((int(seed), int(base), int(kept), int(restart)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # Steele, Lea & Flood (2014) SplitMix64 finaliser: a bijection of uint64 that mixes well.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seeds, steps) -> np.ndarray:
    """Uniforms in [0, 1), one per (seed, step): ``splitmix64(splitmix64(seed) + step)``, top 53 bits."""
    mask = (1 << 64) - 1
    s = np.array([int(v) & mask for v in np.atleast_1d(seeds)], dtype=np.uint64)
    t = np.array([int(v) & mask for v in np.atleast_1d(steps)], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix64(_splitmix64(s) + t)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def sample_tokens(logits: torch.Tensor, u, *, temperature: float = 1.0,
                  top_p: float = 1.0) -> torch.Tensor:
    """Next tokens [B] from logits [B, V], one uniform per row (inverse-CDF sampling).

    Temperature 0: argmax (the first of tied maxima). Otherwise softmax(logits / temperature),
    restricted by top-p to the smallest set of most likely tokens with mass >= ``top_p``;
    the token is the first (in vocabulary order) whose cumulative mass exceeds ``u`` times
    the total, so a token's chance is its probability and a given ``u`` picks the same token
    whatever else is in the batch.
    """
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
        probs = probs.masked_fill(drop, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.as_tensor(np.asarray(u, dtype=np.float64), device=cdf.device).to(cdf.dtype)
    idx = torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).contiguous(), right=True).squeeze(-1)
    # u * total can round up to the total: fall back to the last token with mass.
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1)
    return torch.minimum(idx, last)
