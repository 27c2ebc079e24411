"""Truncate-and-resample for causal language models (THEORY.md, "Autoregressive models").

The forward process of a response ``X = (x_1, ..., x_L)`` after a prompt keeps its first
``kept`` tokens; the reverse process samples the rest from the model. `resample` runs the
reverse process for many truncation points and restarts at once:

1. one forward pass over each base sequence (prompt + response) gives the key/value cache
   of every prefix and the next-token logits at every cut, so the first resampled token
   needs no extra forward;
2. the rows of a batch (truncation point x restart) share one padded cache: each prefix's
   cache is cut from its base's, copied once per restart and right-aligned (left padding,
   masked out), and each row's new tokens get their own ``position_ids``;
3. every step feeds the last token of each unfinished row; rows that sample an eos token
   or reach ``max_new_tokens`` response tokens leave the batch (their cache rows are
   dropped, and columns that only the dropped rows used are trimmed).

Randomness: the token at step ``s`` of a continuation with seed ``seed`` is drawn by
inverse-CDF sampling with the uniform `uniforms(seed, s)` (a counter-based stream, so one
number per sample and step, the same on every device, batch and process). Temperature 0 is
greedy; ``top_p < 1`` keeps the smallest set of most likely tokens whose mass reaches
``top_p`` (as ``transformers``' ``TopPLogitsWarper``). Continuations therefore depend only
on the model, the prefix and the seed, never on which rows share a batch.

Public: `resample`, `Resampled`, `sample_tokens`, `uniforms`, `continuation_seed`,
`eos_ids`, `count_calls` (model calls and tokens fed, for any decoding loop).
"""
from __future__ import annotations

import hashlib
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["Resampled", "resample", "sample_tokens", "uniforms", "continuation_seed", "eos_ids",
           "count_calls"]


@dataclass(frozen=True)
class Resampled:
    """Continuations of every truncation point, and what they cost."""

    tokens: tuple      # tokens[i][k]: token ids after the cut of point i, restart k (eos included when drawn)
    decoded: int       # tokens sampled, all continuations together (the text analogue of denoiser evaluations)
    forwards: int      # model calls (base passes + decoding steps)
    prefill: int       # tokens run through the base passes


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


def eos_ids(model, eos_token_id=None) -> tuple[int, ...]:
    """The stop tokens: ``eos_token_id`` (int or list) if given, else the model's generation config's."""
    if eos_token_id is None:
        gen = getattr(model, "generation_config", None)
        eos_token_id = getattr(gen, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(model.config, "eos_token_id", None)
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, int):
        return (eos_token_id,)
    return tuple(int(e) for e in eos_token_id)


@contextmanager
def count_calls(model):
    """Count a model's calls and the tokens fed through them (``input_ids.numel()``), whoever calls it.

    ``with count_calls(model) as c: ...`` then ``c["calls"]``, ``c["tokens"]``.
    """
    counts = {"calls": 0, "tokens": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counts["calls"] += 1
        counts["tokens"] += int(ids.numel()) if ids is not None else 0

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


# --- thin adapters over transformers' model call (the cache argument was renamed in 5.x) ---

def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _layers_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from transformers.cache_utils import DynamicLayer

    kv = []
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise ValueError(f"resample needs full-attention cache layers, got {type(layer).__name__}")
        kv.append((layer.keys, layer.values))
    return kv


def _new_cache(kv):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _check_layer_types(model) -> None:
    types = getattr(model.config.get_text_config(decoder=True), "layer_types", None) or ()
    other = sorted(set(types) - {"full_attention", "sliding_attention"})
    if other:
        raise ValueError(f"resample supports attention-only models; this one has layer types {other}")


@dataclass
class _Base:
    kv: list            # per layer (keys, values) [1, H, T, D] of the whole base sequence
    logits: dict        # kept -> next-token logits [V] after the prefix with `kept` response tokens
    prompt_len: int


def _base_pass(model, prompt, response, cuts, cache_kwarg) -> _Base:
    """One forward over prompt + response: the cache of every prefix and the logits at the cuts."""
    from transformers import DynamicCache

    device = _device(model)
    ids = torch.tensor([list(prompt) + list(response)], dtype=torch.long, device=device)
    cuts = sorted(set(cuts))
    positions = torch.tensor([len(prompt) - 1 + k for k in cuts], dtype=torch.long, device=device)
    kwargs = {cache_kwarg: DynamicCache(), "use_cache": True,
              "position_ids": torch.arange(ids.shape[1], device=device)[None]}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        out = model(input_ids=ids, logits_to_keep=positions, **kwargs)
        logits = out.logits[0]
    else:
        out = model(input_ids=ids, **kwargs)
        logits = out.logits[0, positions]
    return _Base(kv=_layers_kv(_output_cache(out)), logits=dict(zip(cuts, logits)),
                 prompt_len=len(prompt))


def _check_points(bases, points, restarts, max_new_tokens, temperature, top_p, batch_size):
    if restarts < 1 or batch_size < 1 or max_new_tokens < 0:
        raise ValueError(f"resample needs restarts >= 1, batch_size >= 1, max_new_tokens >= 0; "
                         f"got {restarts}, {batch_size}, {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"resample needs temperature >= 0 and 0 < top_p <= 1; got {temperature}, {top_p}")
    for p, (b, kept) in enumerate(points):
        if not 0 <= b < len(bases):
            raise ValueError(f"point {p}: base {b} out of range (there are {len(bases)} bases)")
        prompt, response = bases[b]
        if len(prompt) == 0:
            raise ValueError(f"base {b} has an empty prompt (give at least a BOS token)")
        if not 0 <= kept <= len(response):
            raise ValueError(f"point {p}: kept={kept} outside 0..{len(response)} for base {b}")


@torch.no_grad()
def resample(model, bases: Sequence, points: Sequence, *, restarts: int, max_new_tokens: int,
             seed: int | Callable[[int, int, int], int] = 0,
             temperature: float = 1.0,            # 0: greedy
             top_p: float = 1.0,                  # nucleus mass; tiny values are greedy
             eos_token_id=None,                   # int or list; None: the model's generation config
             batch_size: int = 64) -> Resampled:  # rows (point x restart) decoded together
    """Resample every truncation point ``restarts`` times; continuations in point order.

    ``bases``: (prompt ids, response ids) pairs; ``points``: (base index, response tokens
    kept) pairs; ``seed``: a run seed (continuation ``k`` of point ``(b, kept)`` uses
    `continuation_seed(seed, b, kept, k)`) or a function ``(b, kept, k) -> int``. A
    continuation ends after an eos token or when the response (kept + new tokens) has
    ``max_new_tokens`` tokens; a prefix that already ends with eos has an empty one. Rows are
    split into fixed chunks of ``batch_size`` in point-major order; order ``points`` by base
    so that each base's cache is computed once and freed early.
    """
    bases = [(list(map(int, p)), list(map(int, r))) for p, r in bases]
    points = [(int(b), int(k)) for b, k in points]
    _check_points(bases, points, restarts, max_new_tokens, temperature, top_p, batch_size)
    _check_layer_types(model)
    seed_of = seed if callable(seed) else (lambda b, kept, k: continuation_seed(seed, b, kept, k))
    stops = eos_ids(model, eos_token_id)
    cache_kwarg = _cache_kwarg(model)

    rows = [(i, k) for i in range(len(points)) for k in range(restarts)]
    chunks = [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
    cuts: dict[int, list[int]] = {}
    last_chunk: dict[int, int] = {}
    for c, chunk in enumerate(chunks):
        for i, _ in chunk:
            last_chunk[points[i][0]] = c
    for b, kept in points:
        cuts.setdefault(b, []).append(kept)

    out = [[()] * restarts for _ in points]
    passes: dict[int, _Base] = {}
    counts = {"decoded": 0, "forwards": 0, "prefill": 0}
    for c, chunk in enumerate(chunks):
        for b in dict.fromkeys(points[i][0] for i, _ in chunk):
            if b not in passes:
                passes[b] = _base_pass(model, *bases[b], cuts[b], cache_kwarg)
                counts["forwards"] += 1
                counts["prefill"] += len(bases[b][0]) + len(bases[b][1])
        conts = _decode_chunk(model, bases, points, chunk, passes, seed_of, stops, max_new_tokens,
                              temperature, top_p, cache_kwarg, counts)
        for (i, k), cont in zip(chunk, conts):
            out[i][k] = tuple(cont)
        for b in [b for b in passes if last_chunk[b] <= c]:
            del passes[b]
    return Resampled(tokens=tuple(tuple(r) for r in out), **counts)


def _decode_chunk(model, bases, points, chunk, passes, seed_of, stops, max_new_tokens,
                  temperature, top_p, cache_kwarg, counts) -> list[list[int]]:
    """Decode one chunk of rows together; returns each row's continuation."""
    conts: list[list[int]] = [[] for _ in chunk]
    budget, live = [], []
    for r, (i, k) in enumerate(chunk):
        b, kept = points[i]
        response = bases[b][1]
        ended = kept > 0 and response[kept - 1] in stops
        budget.append(0 if ended else max(max_new_tokens - kept, 0))
        if budget[-1] > 0:
            live.append(r)
    if not live:
        return conts
    seeds = [seed_of(points[chunk[r][0]][0], points[chunk[r][0]][1], chunk[r][1]) for r in live]

    # Step 0: the base passes already hold the logits after every cut.
    logits = torch.stack([passes[points[chunk[r][0]][0]].logits[points[chunk[r][0]][1]] for r in live])
    tok = sample_tokens(logits, uniforms(seeds, [0] * len(live)), temperature=temperature, top_p=top_p)
    live, seeds, tok = _record(conts, budget, live, seeds, tok, stops, counts)
    if not live:
        return conts

    # The shared cache: each live row's prefix right-aligned in `width` columns.
    lengths = [passes[points[chunk[r][0]][0]].prompt_len + points[chunk[r][0]][1] for r in live]
    width = max(lengths)
    ref = passes[points[chunk[live[0]][0]][0]].kv
    device = ref[0][0].device
    kv = []
    for layer in range(len(ref)):
        keys = ref[layer][0].new_zeros((len(live),) + ref[layer][0].shape[1:2] + (width,) + ref[layer][0].shape[3:])
        values = ref[layer][1].new_zeros((len(live),) + ref[layer][1].shape[1:2] + (width,) + ref[layer][1].shape[3:])
        for j, r in enumerate(live):
            base_kv = passes[points[chunk[r][0]][0]].kv[layer]
            n = lengths[j]
            keys[j, :, width - n:] = base_kv[0][0, :, :n]
            values[j, :, width - n:] = base_kv[1][0, :, :n]
        kv.append((keys, values))
    cache = _new_cache(kv)
    n = torch.tensor(lengths, dtype=torch.long, device=device)
    mask = (torch.arange(width, device=device)[None] >= (width - n)[:, None]).long()

    while live:
        steps = [len(conts[r]) for r in live]
        position = n + torch.tensor(steps, dtype=torch.long, device=device) - 1
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=position[:, None],
                    use_cache=True, **{cache_kwarg: cache})
        counts["forwards"] += 1
        tok = sample_tokens(out.logits[:, -1], uniforms(seeds, steps), temperature=temperature, top_p=top_p)
        before = live
        live, seeds, tok = _record(conts, budget, live, seeds, tok, stops, counts)
        if len(live) < len(before):
            going = set(live)
            keep = torch.tensor([j for j, r in enumerate(before) if r in going], dtype=torch.long,
                                device=device)
            if not live:
                break
            cache.batch_select_indices(keep)
            mask, n = mask[keep], n[keep]
            cache, mask = _trim_left(cache, mask)
    return conts


def _record(conts, budget, live, seeds, tok, stops, counts):
    """Append each live row's new token; return the rows that go on (with their seeds, tokens)."""
    keep_rows, keep_seeds, keep = [], [], []
    for j, (r, t) in enumerate(zip(live, tok.tolist())):
        conts[r].append(t)
        counts["decoded"] += 1
        if t not in stops and len(conts[r]) < budget[r]:
            keep_rows.append(r)
            keep_seeds.append(seeds[j])
            keep.append(j)
    return keep_rows, keep_seeds, tok[keep]


def _trim_left(cache, mask):
    """Drop the leading columns no remaining row attends to, when they are a quarter or more."""
    first = int((mask.cumsum(1) == 0).sum(1).min())
    if first == 0 or 4 * first < mask.shape[1]:
        return cache, mask
    kv = [(k[:, :, first:], v[:, :, first:]) for k, v in _layers_kv(cache)]
    return _new_cache(kv), mask[:, first:]
