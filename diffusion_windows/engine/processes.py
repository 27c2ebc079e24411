"""Processes of one sweep: accelerate's `PartialState` under ``torchrun``/``accelerate launch``.

`state()` returns a `Dist` with ``rank``, ``world``, ``is_main``, `Dist.share` (this
process's contiguous share of a list of units, `split_between_processes`) and
`Dist.wait` (a barrier). A single process needs no process group at all. On machines
without CUDA the state is created with ``cpu=True`` (otherwise every worker reports a
world of one; ENV.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    _state: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, units: list) -> list:
        """This process's units: a fixed, contiguous split of ``units`` (the same on every run)."""
        if self.world == 1:
            return list(units)
        with self._state.split_between_processes(list(units)) as mine:
            return list(mine)

    def wait(self):
        if self.world > 1:
            self._state.wait_for_everyone()

    def device(self, requested: str) -> str:
        """Each process drives its own GPU when ``requested`` is plain ``cuda``."""
        if self.world > 1 and requested == "cuda":
            return str(self._state.device)
        return requested


def state() -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch
    from accelerate import PartialState

    ps = PartialState(cpu=not torch.cuda.is_available())
    return Dist(rank=ps.process_index, world=ps.num_processes, _state=ps)
