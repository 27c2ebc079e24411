"""The ancestral sampler of the masked (absorbing-state) process (THEORY.md, "Masked diffusion"),
batched over restarts and times.

Forward: each response token is masked independently with probability ``t`` (the fraction
masked; the prompt never). Reverse, from ``t`` to ``s < t``: each still-masked token is revealed
with probability ``(t - s) / t``, drawn from the model's ``p(x_i | unmasked tokens)`` (the mask
token itself excluded, as MDLM's zero-masking parameterisation). Run down to 0, a masked token's
reveal time is uniform on ``(0, t)``, independently of the others; on a grid of ``steps`` steps
(``k / steps``) the tokens whose reveal times fall in one step are drawn together from one
forward pass. ``steps=None`` is the exact continuous-time sampler: one token per forward pass, in
a uniformly random order, which with an exact model samples the posterior of the whole response
given its kept tokens (chain rule). The models sampled take no time input (LLaDA, MDLM with
time-independent denoisers, a BERT-style masked LM), so a step that reveals nothing changes
nothing and costs no forward pass.

Randomness: a restart with seed ``seed`` draws three uniforms per response position from
``numpy.random.default_rng(seed)`` (whether it is masked, its reveal time, its token by inverse
CDF, `text.sampling.sample_tokens`), so a restart depends only on the model, its start and its
seed, never on which restarts share a batch (up to the last bits of batched logits).

Public: `Restart`, `reveal_schedule`, `ancestral`, `Sampled`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..text.sampling import sample_tokens

__all__ = ["Restart", "Sampled", "reveal_schedule", "ancestral"]


@dataclass(frozen=True)
class Restart:
    """One reverse run: ``prompt`` ids (never masked), the ``response`` ids it re-masks (length L), the
    fraction masked ``t`` in [0, 1], and its ``seed``."""

    prompt: tuple
    response: tuple
    t: float
    seed: int


@dataclass(frozen=True)
class Sampled:
    """What `ancestral` gave: ``responses[i]`` the sampled response of restart ``i`` (length L), ``rows[i]``
    the forward rows it took (model evaluations: one per step that revealed a token), ``calls`` the
    batched model calls."""

    responses: tuple
    rows: tuple
    calls: int


def reveal_schedule(length: int, t: float, seed: int, steps: int | None = None) -> tuple:
    """``(masked, buckets, u)`` of a restart: the positions masked [bool L], the masked positions grouped by
    reverse step (first step first: the latest reveal times, nearest ``t``), and the token uniforms [L]."""
    if not 0 <= t <= 1:
        raise ValueError(f"the fraction masked must lie in [0, 1], got {t!r}")
    u = np.random.default_rng(int(seed)).random((3, int(length)))
    masked = u[0] < t
    reveal = u[1] * t                                     # uniform on (0, t): when the token is revealed
    pos = np.flatnonzero(masked)
    if steps is None:
        order = pos[np.argsort(-reveal[pos], kind="stable")]
        buckets = tuple((int(p),) for p in order)
    else:
        step = np.ceil(reveal[pos] * int(steps)).astype(int)   # revealed in ((step-1)/n, step/n]
        buckets = tuple(tuple(int(p) for p in pos[step == s]) for s in sorted(set(step.tolist()), reverse=True))
    return masked, buckets, u[2]


@torch.no_grad()
def ancestral(model, restarts, *, mask_id: int, steps: int | None = None, temperature: float = 1.0,
              top_p: float = 1.0, batch_size: int = 64) -> Sampled:
    """Run every restart's reverse process to ``t = 0`` (module docstring); restarts with the same prompt and
    response lengths share forward passes, up to ``batch_size`` rows at a time (a finished row's place is
    taken by the next restart). ``model(input_ids=, attention_mask=, position_ids=)`` returns ``.logits``
    ``[B, T, V]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    out, rows, calls = [None] * len(restarts), [0] * len(restarts), 0
    groups = {}
    for i, r in enumerate(restarts):
        groups.setdefault((len(r.prompt), len(r.response)), []).append(i)
    for (p_len, length), members in sorted(groups.items()):
        state = {}
        for i in members:
            r = restarts[i]
            masked, buckets, u = reveal_schedule(length, r.t, r.seed, steps)
            x = np.asarray(list(r.prompt) + list(r.response), dtype=np.int64)
            x[p_len:][masked] = mask_id
            state[i] = [x, list(buckets), u]
            rows[i] = len(buckets)
        queue = [i for i in members if state[i][1]]
        for i in members:
            if not state[i][1]:
                out[i] = tuple(int(v) for v in state[i][0][p_len:])
        active = []
        total = p_len + length
        positions = torch.arange(total, device=device)[None]
        while queue or active:
            while queue and len(active) < batch_size:
                active.append(queue.pop(0))
            ids = torch.from_numpy(np.stack([state[i][0] for i in active])).to(device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           position_ids=positions.expand(len(active), -1)).logits
            calls += 1
            rows_b, cols, us = [], [], []
            for j, i in enumerate(active):
                for p in state[i][1][0]:
                    rows_b.append(j), cols.append(p_len + p), us.append(state[i][2][p])
            picked = logits[torch.tensor(rows_b, device=device), torch.tensor(cols, device=device)].float()
            picked[:, mask_id] = -torch.inf
            tokens = sample_tokens(picked, us, temperature=temperature, top_p=top_p).tolist()
            for j, c, tok in zip(rows_b, cols, tokens):
                state[active[j]][0][c] = tok
            still = []
            for i in active:
                state[i][1].pop(0)
                if state[i][1]:
                    still.append(i)
                else:
                    out[i] = tuple(int(v) for v in state[i][0][p_len:])
            active = still
    return Sampled(tuple(out), tuple(rows), calls)
