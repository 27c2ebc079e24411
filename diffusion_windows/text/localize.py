"""Token-level localization: where in one response its outcome is decided.

For one base response of ``length`` tokens, ``retention(kept) -> (kept_count, total)``
counts the restarts from the prefix with ``kept`` response tokens that keep the base's
outcome (THEORY.md, "Autoregressive models": ``kept = L - t``). The outcome is decided at
the position ``j`` with the largest jump ``R(j) - R(j - 1)``: keeping token ``j`` raises
retention the most. A full scan costs ``length + 1`` calls; `localize` bisects instead.

Search (best-first bisection under monotone retention): measure ``R(0)`` and
``R(length)``; every bracket ``(a, b)`` of adjacent measured positions holds jumps of at
most ``upper(b) - lower(a)`` (confidence bounds of the two ends); the largest one-token
jump found so far is at least ``lower(b) - upper(a)``. Repeatedly split, at its middle,
the widest-possible bracket (largest upper bound) that could still hold a larger jump than
the best one found, until none can or the budget is spent. Candidates: every position in a
bracket whose upper bound reaches the best lower bound; the interval spans them. A step
function takes about ``2 + log2(length)`` calls; a ramp (no single decisive token) leaves
a wide interval.

Confidence bounds are Wilson score intervals at ``confidence``, Bonferroni-corrected over
the measured positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

__all__ = ["Localized", "localize", "wilson"]


@dataclass(frozen=True)
class Localized:
    """Where one response's outcome is decided (positions count response tokens kept)."""

    position: int                # j with the largest estimated jump R(j) - R(j-1) (middle of a wider bracket if unresolved)
    jump: float                  # estimated rise over the bracket that ends at `position`
    interval: tuple              # (lowest, highest) position whose jump cannot be excluded
    candidates: tuple            # (first, last) position ranges whose jump cannot be excluded (the interval's parts)
    resolved: bool               # the bracket of `position` is one token wide
    calls: int                   # calls of `retention`
    measured: tuple              # (kept, kept_count, total) for every measured position, by kept


def wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (``[0, 1]`` when ``n = 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def localize(retention: Callable[[int], tuple], length: int, *, budget: int | None = None,
             confidence: float = 0.95) -> Localized:
    """Bisect for the position of the largest retention jump of one response (module docstring).

    ``budget``: most calls of ``retention`` (default ``4 * ceil(log2(length + 1)) + 2``,
    at least 2); ``confidence``: of the interval, over all measured positions together.
    """
    if length < 1:
        raise ValueError(f"localize needs a response of at least one token, got length={length}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    budget = budget if budget is not None else 4 * math.ceil(math.log2(length + 1)) + 2
    if budget < 2:
        raise ValueError(f"localize needs a budget of at least 2 calls (both ends), got {budget}")
    counts: dict[int, tuple[int, int]] = {}

    def measure(kept: int) -> None:
        k, n = retention(kept)
        if not 0 <= k <= n:
            raise ValueError(f"retention({kept}) returned ({k}, {n}): need 0 <= kept <= total")
        counts[kept] = (int(k), int(n))

    measure(0)
    measure(length)
    while True:
        brackets = _brackets(counts, confidence)
        best_lower = max((lo for a, b, _, lo, _ in brackets if b - a == 1), default=-math.inf)
        open_ = [(up, a, b) for a, b, up, _, _ in brackets if b - a > 1 and up >= best_lower]
        if not open_ or len(counts) >= budget:
            break
        _, a, b = max(open_, key=lambda x: (x[0], x[2] - x[1], -x[1]))
        measure((a + b) // 2)

    brackets = _brackets(counts, confidence)
    best_lower = max((lo for a, b, _, lo, _ in brackets if b - a == 1), default=-math.inf)
    a, b, _, _, rise = max(brackets, key=lambda x: (x[4] if x[1] - x[0] == 1 else x[4] - 1e-9, -x[0]))
    candidates = [(a2, b2) for a2, b2, up, _, _ in brackets if up >= best_lower] or [(a, b)]
    return Localized(
        position=b if b - a == 1 else (a + b + 1) // 2,
        jump=rise,
        interval=(min(a2 for a2, _ in candidates) + 1, max(b2 for _, b2 in candidates)),
        candidates=_ranges(candidates),
        resolved=b - a == 1,
        calls=len(counts),
        measured=tuple((j, *counts[j]) for j in sorted(counts)),
    )


def _brackets(counts, confidence):
    """(a, b, upper bound, lower bound, estimate) of the rise over each pair of adjacent measured positions."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * len(counts)))
    pos = sorted(counts)
    bounds = {j: wilson(*counts[j], z) for j in pos}
    rate = {j: counts[j][0] / counts[j][1] if counts[j][1] else 0.5 for j in pos}
    return [(a, b, bounds[b][1] - bounds[a][0], bounds[b][0] - bounds[a][1], rate[b] - rate[a])
            for a, b in zip(pos, pos[1:])]


def _ranges(brackets) -> tuple:
    """Merge brackets (a, b) into sorted disjoint position ranges (a + 1, b)."""
    merged: list[list[int]] = []
    for a, b in sorted(brackets):
        if merged and a + 1 <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a + 1, b])
    return tuple(tuple(r) for r in merged)
