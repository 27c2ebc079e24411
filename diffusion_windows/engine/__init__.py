"""The engine: the forward-reverse experiment in the abstract, for any kind of model.

A run: base samples, a grid of restart times, ``K`` restarts from each, a label per restart.
The engine plans rounds of units (one base sample x the times of a round), splits them into
fixed batch groups and across processes, keeps results in a store that survives kills, and
plans the adaptive search's rounds; a *backend* (`backend.Backend`) makes and restarts the
samples of one kind of model. Nothing here imports diffusers or transformers.

- `backend`: the `Backend` protocol and `UnitResult`
- `engine`: `Engine`, `Settings`, `RunError`
- `seeds`: `unit_seed`, `batch_groups`, `time_key`
- `store`: `ResultStore` (files), `MemoryStore`, `UnitRecord`
- `processes`: several processes (accelerate)
- `adaptive`: the adaptive search (``timesteps="auto"``)
- `fingerprint`: content fingerprints of weights and images (resume safety)
"""
from .backend import Backend, UnitResult
from .engine import Engine, RunError, Settings
from .seeds import batch_groups, time_key, unit_seed
from .store import MemoryStore, ResultStore, UnitRecord

__all__ = ["Backend", "UnitResult", "Engine", "RunError", "Settings", "batch_groups", "time_key", "unit_seed",
           "MemoryStore", "ResultStore", "UnitRecord"]
