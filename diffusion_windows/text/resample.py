"""Truncate-and-resample for causal language models (THEORY.md, "Autoregressive models").

The forward process of a response ``X = (x_1, ..., x_L)`` after a prompt keeps its first
``kept`` tokens; the reverse process samples the rest from the model. `resample` runs the
reverse process for many truncation points and restarts at once:

1. one forward pass over each base sequence (prompt + response) gives the key/value cache
   of every prefix and the next-token logits at every cut, so the first resampled token
   needs no extra forward;
2. the rows of a batch (truncation point x restart; rows sorted by prefix length, then cut
   into fixed chunks of ``batch_size``) share one padded cache: each prefix's cache is cut
   from its base's, copied once per restart and right-aligned (left padding, masked out),
   and each row's new tokens get their own ``position_ids``;
3. every step feeds the last token of each row; a row ends at an eos token or at
   ``max_new_tokens`` response tokens, and finished rows leave the batch (moved out of the
   cache in place) once they are an eighth of it; leading columns that no remaining row
   uses are trimmed once they are a quarter of the cache. The cache is a ``transformers``
   ``DynamicCache`` whose layers write into preallocated room instead of concatenating at
   every step (`text.kvcache`).

Randomness (`text.sampling`): the token at step ``s`` of a continuation with seed ``seed`` is
drawn by inverse-CDF sampling with the uniform `uniforms(seed, s)` (a counter-based stream, so
one number per sample and step, the same on every device, batch and process). Temperature 0 is
greedy; ``top_p < 1`` keeps the smallest set of most likely tokens whose mass reaches
``top_p`` (as ``transformers``' ``TopPLogitsWarper``). Continuations therefore depend only
on the model, the prefix and the seed, never on which rows share a batch (up to rounding:
batched logits differ from unbatched ones in the last bits, which flips a draw only when its
uniform lies that close to a CDF boundary, or a greedy step only at a near tie).

Public: `resample`, `Resampled`, `sample_tokens`, `uniforms`, `continuation_seed`,
`eos_ids`, `count_calls` (model calls and tokens fed, for any decoding loop).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache

from .kvcache import _cache_kwarg, _growing_cache, _layers_kv, _output_cache, _trim_left
from .sampling import continuation_seed, sample_tokens, uniforms

__all__ = ["Resampled", "resample", "sample_tokens", "uniforms", "continuation_seed", "eos_ids",
           "count_calls"]


@dataclass(frozen=True)
class Resampled:
    """Continuations of every truncation point, and what they cost."""

    tokens: tuple      # tokens[i][k]: token ids after the cut of point i, restart k (eos included when drawn)
    decoded: int       # tokens sampled, all continuations together (the text analogue of denoiser evaluations)
    forwards: int      # model calls (base passes + decoding steps)
    prefill: int       # tokens run through the base passes


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
    ``max_new_tokens`` tokens; a prefix that already ends with eos has an empty one. Rows
    (point x restart) are sorted by prefix length and split into fixed chunks of
    ``batch_size``; each base's pass is computed once and kept until its last chunk (one
    row of cache per base). Greedy decoding (temperature
    0) has no randomness: one row per point is decoded and its continuation given to every
    restart (``decoded`` counts the tokens actually drawn).
    """
    bases = [(list(map(int, p)), list(map(int, r))) for p, r in bases]
    points = [(int(b), int(k)) for b, k in points]
    _check_points(bases, points, restarts, max_new_tokens, temperature, top_p, batch_size)
    _check_layer_types(model)
    seed_of = seed if callable(seed) else (lambda b, kept, k: continuation_seed(seed, b, kept, k))
    stops = eos_ids(model, eos_token_id)
    cache_kwarg = _cache_kwarg(model)

    distinct = 1 if temperature == 0 else restarts    # greedy restarts are all the same
    # Rows in order of prefix length: a chunk's prefixes need little left padding, and rows
    # with the same length have the same budget, so they tend to finish (and leave) together.
    order = sorted(range(len(points)), key=lambda i: (len(bases[points[i][0]][0]) + points[i][1], i))
    rows = [(i, k) for i in order for k in range(distinct)]
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
            if distinct == 1:
                out[i] = [tuple(cont)] * restarts
        for b in [b for b in passes if last_chunk[b] <= c]:
            del passes[b]
    return Resampled(tokens=tuple(tuple(r) for r in out), **counts)


def _decode_chunk(model, bases, points, chunk, passes, seed_of, stops, max_new_tokens,
                  temperature, top_p, cache_kwarg, counts) -> list[list[int]]:
    """Decode one chunk of rows together; returns each row's continuation."""
    conts: list[list[int]] = [[] for _ in chunk]
    budget = []
    for i, k in chunk:
        b, kept = points[i]
        ended = kept > 0 and bases[b][1][kept - 1] in stops
        budget.append(0 if ended else max(max_new_tokens - kept, 0))
    rows = [r for r in range(len(chunk)) if budget[r] > 0]
    if not rows:
        return conts
    point = [points[i] for i, _ in chunk]
    seeds = [seed_of(*point[r], chunk[r][1]) for r in rows]

    # Step 0: the base passes already hold the logits after every cut.
    logits = torch.stack([passes[point[r][0]].logits[point[r][1]] for r in rows])
    tok = sample_tokens(logits, uniforms(seeds, [0] * len(rows)), temperature=temperature, top_p=top_p)
    alive = _record(conts, budget, rows, [True] * len(rows), tok, stops, counts)
    keep = [j for j, a in enumerate(alive) if a]
    rows, seeds, tok = [rows[j] for j in keep], [seeds[j] for j in keep], tok[keep]
    if not rows:
        return conts

    # The shared cache: each row's prefix right-aligned in `width` columns, room for the rest.
    lengths = [passes[point[r][0]].prompt_len + point[r][1] for r in rows]
    width = max(lengths)
    room = max(budget[r] for r in rows) - 1
    kv = []
    for layer in range(len(passes[point[rows[0]][0]].kv)):
        keys, values = (_aligned([passes[point[r][0]].kv[layer][m] for r in rows], lengths, width)
                        for m in (0, 1))
        kv.append((keys, values))
    cache = _growing_cache(kv, room)
    device = tok.device
    n = torch.tensor(lengths, dtype=torch.long, device=device)
    mask = (torch.arange(width, device=device)[None] >= (width - n)[:, None]).long()
    alive = [True] * len(rows)

    while True:
        steps = [len(conts[r]) for r in rows]          # finished rows keep their last position
        position = n + torch.tensor(steps, dtype=torch.long, device=device) - 1
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=position[:, None],
                    use_cache=True, **{cache_kwarg: cache})
        counts["forwards"] += 1
        drawn = sample_tokens(out.logits[:, -1], uniforms(seeds, steps), temperature=temperature, top_p=top_p)
        alive = _record(conts, budget, rows, alive, drawn, stops, counts)
        tok = torch.where(torch.tensor(alive, device=device), drawn, tok)
        finished = alive.count(False)
        if finished == len(rows):
            return conts
        # Drop finished rows once they are an eighth of the batch: a row costs ~1/len(rows) of a
        # step, a compaction about a fifth of one (it copies the cache).
        if 8 * finished >= len(rows):
            keep = [j for j, a in enumerate(alive) if a]
            index = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(index)
            rows, seeds, alive = [rows[j] for j in keep], [seeds[j] for j in keep], [True] * len(keep)
            tok, mask, n = tok[index], mask[index], n[index]
            cache, mask = _trim_left(cache, mask)


def _aligned(tensors, lengths, width) -> torch.Tensor:
    """Stack [1, H, >=n, D] caches into [B, H, width, D], each row's first n columns right-aligned."""
    first = tensors[0]
    out = first.new_zeros((len(tensors), first.shape[1], width, first.shape[3]))
    j = 0
    while j < len(tensors):   # restarts of one prefix are adjacent: copy once, broadcast
        e = j
        while e + 1 < len(tensors) and tensors[e + 1] is tensors[j] and lengths[e + 1] == lengths[j]:
            e += 1
        out[j:e + 1, :, width - lengths[j]:] = tensors[j][:, :, :lengths[j]]
        j = e + 1
    return out


def _record(conts, budget, rows, alive, tok, stops, counts) -> list[bool]:
    """Append each alive row's new token; return which rows are still going."""
    going = []
    for r, a, t in zip(rows, alive, tok.tolist()):
        if a:
            conts[r].append(t)
            counts["decoded"] += 1
            a = t not in stops and len(conts[r]) < budget[r]
        going.append(a)
    return going
