"""The key/value cache of `text.resample` over transformers' cache classes.

Thin adapters over a model call (the cache argument was renamed in transformers 5.x), and a
``DynamicCache`` whose layers write into preallocated room instead of concatenating at every
decoding step (`_GrowingLayer`); finished rows leave it by block moves in place, and leading
columns that no row attends to are trimmed (`_trim_left`).
"""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _layers_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    kv = []
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise ValueError(f"resample needs full-attention cache layers, got {type(layer).__name__}")
        kv.append((layer.keys, layer.values))
    return kv


def _trim_left(cache, mask):
    """Drop the leading columns no remaining row attends to, when they are a quarter or more."""
    first = int((mask.cumsum(1) == 0).sum(1).min())
    if first == 0 or 4 * first < mask.shape[1]:
        return cache, mask
    kv = [(layer.keys[:, :, first:], layer.values[:, :, first:]) for layer in cache.layers]
    room = cache.layers[0].capacity - cache.layers[0].get_seq_length()
    return _growing_cache(kv, room), mask[:, first:]


def _growing_cache(kv, room):
    """A DynamicCache whose layers append in place into preallocated room (`_GrowingLayer`)."""
    cache = DynamicCache()
    cache.layers = [_GrowingLayer(k, v, room) for k, v in kv]
    return cache


class _GrowingLayer(DynamicLayer):
    """A DynamicLayer over a preallocated buffer [rows, heads, capacity, dim]: ``update`` writes
    in place where DynamicLayer concatenates (a copy of the whole cache at every decoding step),
    and dropping rows moves the kept ones down in place (fresh large tensors cost page faults)."""

    def __init__(self, keys, values, room):
        super().__init__()
        self.capacity = keys.shape[2] + max(room, 1)
        self._rows, self._n = keys.shape[0], 0
        self._k = keys.new_empty(keys.shape[:2] + (self.capacity,) + keys.shape[3:])
        self._v = values.new_empty(values.shape[:2] + (self.capacity,) + values.shape[3:])
        self.is_initialized, self.device = True, keys.device
        self.update(keys, values)

    def _views(self):
        self.keys = self._k[:self._rows, :, :self._n]
        self.values = self._v[:self._rows, :, :self._n]
        return self.keys, self.values

    def update(self, key_states, value_states, *args, **kwargs):
        m = key_states.shape[2]
        if self._n + m > self.capacity:   # more tokens than announced (never in `resample`): grow
            self.capacity = 2 * (self._n + m)
            self._k, self._v = (torch.cat([t[:, :, :self._n], t.new_empty(t.shape[:2] + (self.capacity - self._n,)
                                                                             + t.shape[3:])], 2)
                                for t in (self._k, self._v))
        self._k[:self._rows, :, self._n:self._n + m] = key_states
        self._v[:self._rows, :, self._n:self._n + m] = value_states
        self._n += m
        return self._views()

    def get_seq_length(self) -> int:
        return self._n

    def batch_select_indices(self, indices):
        keep = [int(i) for i in indices]
        if keep != sorted(set(keep)):
            raise ValueError("_GrowingLayer keeps rows in order only")
        for src, dst, size in _moves(keep):
            for t in (self._k, self._v):
                t[dst:dst + size, :, :self._n] = t[src:src + size, :, :self._n]
        self._rows = len(keep)
        self._views()


def _moves(keep):
    """Block copies (src, dst, size) that move sorted rows ``keep`` to 0..len-1 in place, in order,
    no block overlapping its destination (a block moved by g rows goes in pieces of at most g)."""
    moves, dst, j = [], 0, 0
    while j < len(keep):
        e = j
        while e + 1 < len(keep) and keep[e + 1] == keep[e] + 1:
            e += 1
        src, size, gap = keep[j], e - j + 1, keep[j] - dst
        if gap:
            moves += [(src + o, dst + o, min(gap, size - o)) for o in range(0, size, gap)]
        dst, j = dst + size, e + 1
    return moves
