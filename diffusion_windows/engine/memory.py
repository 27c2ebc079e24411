"""``--batch-size auto``: the largest batch that fits on the device, found once and kept.

`find_batch_size(probe, start)` tries ``probe(b)`` from ``b = start``, halving on out-of-memory,
and returns the first size that runs. A backend's probe runs the heaviest single steps of a
restart at that size (diffusion: one model call at the top of the grid, with guidance's doubled
rows, one VAE decode and one classification). `choose_batch_size(out, o, probe, on_cuda)`
resolves ``"auto"``: the size recorded in ``out/options.json`` by an earlier run into the folder
(a resume runs the same batches, hence the same numbers), else the probe's answer on CUDA, else
the default; the answer is written into ``options.json`` (``batch_size`` and
``batch_size_auto: true``).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["find_batch_size", "choose_batch_size", "is_out_of_memory", "DEFAULT_BATCH"]

DEFAULT_BATCH = 512


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA (or other device) out-of-memory error, whatever class the torch version raises."""
    return type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def find_batch_size(probe, start: int = DEFAULT_BATCH, minimum: int = 1, empty_cache=None) -> int:
    """The largest of ``start, start/2, start/4, ...`` for which ``probe(b)`` does not run out of memory."""
    b = int(start)
    while True:
        try:
            probe(b)
            return b
        except Exception as e:  # noqa: BLE001 - only out-of-memory is retried
            if not is_out_of_memory(e):
                raise
            if empty_cache is not None:
                empty_cache()
            if b <= minimum:
                raise RuntimeError(f"--batch-size auto: even a batch of {b} runs out of memory") from None
            b = max(minimum, b // 2)


def choose_batch_size(out, o: dict, probe, on_cuda: bool, start: int = DEFAULT_BATCH, empty_cache=None) -> int:
    """``o["batch_size"]`` resolved (module docstring); writes it into ``out/options.json``."""
    if o["batch_size"] != "auto":
        return int(o["batch_size"])
    path = Path(out) / "options.json" if out is not None else None
    recorded = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if isinstance(recorded.get("batch_size"), int) and recorded.get("batch_size_auto"):
        return recorded["batch_size"]
    size = find_batch_size(probe, start, empty_cache=empty_cache) if on_cuda else start
    if path is not None and path.exists():
        path.write_text(json.dumps({**recorded, "batch_size": size, "batch_size_auto": True}, indent=1))
    return size
