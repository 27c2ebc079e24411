"""Restarts on a scheduler's grid: where a restart at a timestep starts and which steps it runs.

A restart runs on a fresh copy of the pipeline's scheduler (no multistep history), positioned to
run the grid's steps below its timestep (`restart_plan`; `restart_timestep` says the rule off the
grid, `restart_length` counts its model calls). Units as in `diffusion.timesteps`: ``timestep`` is
the training timestep (flow matching: ``T s``). Results are cached by the scheduler's settings
(`timesteps.state_key`), the step count and the timestep, never by the scheduler object.
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import torch
from diffusers import PNDMScheduler

from . import kinds
from .timesteps import _GRID_TOL, _flow, _grid_key, _grid_of, _pndm_grid, check_timestep, set_grid


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _custom_start(scheduler, start: float, grid: np.ndarray, device=None):
    """A copy running ``[start] + (grid values below start)`` via custom timesteps, or None
    where the scheduler (or its config, e.g. Karras sigmas) does not accept them."""
    if not _accepts(scheduler.set_timesteps, "timesteps"):
        return None
    wanted = np.concatenate([[start], grid[grid < start]])
    s = copy.deepcopy(scheduler)
    try:
        s.set_timesteps(timesteps=[float(v) if v != round(v) else int(v) for v in wanted], device=device)
    except (ValueError, TypeError):
        return None
    got = _grid_of(s)
    if len(got) != len(wanted) or np.abs(got - wanted).max() > _GRID_TOL:
        return None
    return s


def restart_plan(scheduler, timestep, num_inference_steps: int, device=None, grid_kwargs=None):
    """``(scheduler_copy, timesteps_to_run, start_timestep)`` for a restart at ``timestep``.

    The copy is fresh (no multistep history) and positioned to run exactly the
    returned timesteps (on ``device``, as stock pipelines place them) of the pipeline's grid
    (``grid_kwargs``, module docstring). See :func:`restart_timestep` for the rule off the grid."""
    s = copy.deepcopy(scheduler)
    if _flow(scheduler):
        return _flow_plan(scheduler, s, timestep, num_inference_steps, device, grid_kwargs)
    s.set_timesteps(int(num_inference_steps), device=device)
    grid = _grid_of(s)
    t = check_timestep(scheduler, timestep, grid)
    if not np.any(np.abs(grid - t) <= _GRID_TOL):  # off-grid integer
        custom = _custom_start(scheduler, t, grid, device)
        if custom is not None:
            if hasattr(custom, "set_begin_index"):
                custom.set_begin_index(0)
            return custom, custom.timesteps, t
        below = grid[grid <= t]
        if len(below) == 0:  # below the grid's last timestep: nothing to run
            return s, s.timesteps[:0], t
        t = float(below.max())
    if isinstance(s, PNDMScheduler):
        _pndm_from(s, t)
        return s, s.timesteps, t
    seq = s.timesteps.double().cpu().numpy()
    begin = int(np.nonzero(np.abs(seq - t) <= _GRID_TOL)[0][-1])  # last: 2nd-order repeats
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(begin)
    return s, s.timesteps[begin:], t


def restart_timestep(scheduler, timestep, num_inference_steps: int, grid_kwargs=None) -> float:
    """The training timestep a restart at ``timestep`` on the N-step grid starts from.

    A grid timestep starts there. An integer off the grid starts exactly there where the
    scheduler accepts custom timesteps (DDPM, Euler, Heun, DPM-Solver++; not with Karras
    or similar sigmas): the run is ``[timestep] + grid timesteps below it``. Otherwise
    (DDIM, Euler ancestral, UniPC, PNDM) it starts from the largest grid timestep
    ``<= timestep``, i.e. runs exactly the grid's steps whose timesteps are ``<= timestep``
    and treats ``x_t`` as being at that grid timestep: noise to the returned value for an
    exact restart. Below the grid's last timestep no step runs and ``timestep`` is returned.

    Flow matching (``timestep`` = ``T s``, any number in ``[0, T]``): FlowMatch Euler and
    flow-ancestral start exactly at any ``timestep > 0`` (``[timestep] + grid timesteps below
    it``, the pipeline's grid from ``grid_kwargs``); DPM-Solver/UniPC with flow sigmas start
    from the largest grid timestep ``<= timestep``; at 0 (``x = x0``) no step runs.

    Example::

        restart_timestep(DDIMScheduler(), 517, 20)   # -> 500.0, the grid timestep a restart starts from
    """
    key = (*_grid_key(scheduler, num_inference_steps, grid_kwargs), repr(timestep))
    if key not in _STARTS:
        if len(_STARTS) > 4096:
            _STARTS.clear()
        _STARTS[key] = restart_plan(scheduler, timestep, num_inference_steps, grid_kwargs=grid_kwargs)[2]
    return _STARTS[key]


_STARTS: dict = {}  # restart_timestep's results by (grid key, timestep): read once per restart


def restart_length(scheduler, timestep, num_inference_steps: int, grid_kwargs=None) -> int:
    """Model evaluations of one restart at ``timestep`` on the N-step grid: the length of its
    `restart_plan` (grid steps at or below it, Heun's second stages, PNDM's warm-up, an off-grid
    start's own first step), cached by the scheduler's settings and grid."""
    key = (*_grid_key(scheduler, num_inference_steps, grid_kwargs), repr(timestep))
    if key not in _LENGTHS:
        if len(_LENGTHS) > 4096:
            _LENGTHS.clear()
        _LENGTHS[key] = len(restart_plan(scheduler, timestep, num_inference_steps, grid_kwargs=grid_kwargs)[1])
    return _LENGTHS[key]


_LENGTHS: dict = {}  # restart_length's results by (grid key, timestep)


# ----------------------------------------------------------------------------- diffusers internals
# Three things diffusers (0.42) offers no public call for in a restart, each kept here, in one place,
# and pinned by tests against the stock pipelines (tests/test_schedule.py and tests/test_hooks.py,
# "stock"; the fourth, a scheduler's config as it runs, is in `diffusion.schedulers`):
# 2. PNDM: `set_timesteps` takes no custom timesteps, and its grid without the Runge-Kutta half
#    steps lives only in its private `_timesteps`. A restart on the sub-grid below a timestep
#    rebuilds the schedule exactly as `PNDMScheduler.set_timesteps` builds a whole one.
# 3. Flow matching off the grid: a restart at any sigma sets the copy's `sigmas`/`timesteps`
#    directly (`_flow_start`), as `FlowMatchEulerDiscreteScheduler.set_timesteps` would leave them.

def _flow_plan(scheduler, s, timestep, num_inference_steps, device, grid_kwargs):
    """`restart_plan` of a flow scheduler ``s`` (a copy): on the grid, ``set_begin_index``; off it,
    FlowMatch-type schedulers start exactly there (`_flow_start`), DPM/UniPC snap below."""
    set_grid(s, num_inference_steps, device, grid_kwargs)
    grid = _grid_of(s)
    t = check_timestep(scheduler, timestep, grid)
    if not np.any(np.abs(grid - t) <= _GRID_TOL):
        below = grid[grid <= t]
        if t <= 0 or (len(below) == 0 and not kinds.scheduler_kind(scheduler).restart_anywhere):
            return s, s.timesteps[:0], t  # x = x0 (or below the grid's end): nothing to run
        if kinds.scheduler_kind(scheduler).restart_anywhere:
            _flow_start(s, t)
            return s, s.timesteps, t
        t = float(below.max())
    seq = s.timesteps.double().cpu().numpy()
    begin = int(np.nonzero(np.abs(seq - t) <= _GRID_TOL)[0][-1])
    s.set_begin_index(begin)
    return s, s.timesteps[begin:], t


def _flow_start(s, t: float) -> None:
    """3. Flow matching off the grid: make ``s`` (after ``set_timesteps``) run
    ``sigmas = [t / T] + grid sigmas below it + [0]``, ``timesteps = T sigmas[:-1]``, from index 0.
    Not ``set_timesteps(sigmas=...)`` (it shifts custom sigmas again) nor ``timesteps=``
    (its meaning changed across releases); FlowMatch Euler's ``step`` reads only ``sigmas``."""
    T = s.config.num_train_timesteps
    below = s.timesteps < t
    head_t = torch.tensor([t], dtype=s.timesteps.dtype, device=s.timesteps.device)
    head_s = torch.tensor([t / T], dtype=s.sigmas.dtype, device=s.sigmas.device)
    s.timesteps = torch.cat([head_t, s.timesteps[below]])
    s.sigmas = torch.cat([head_s, s.sigmas[:-1][below.to(s.sigmas.device)], s.sigmas[-1:]])
    s.num_inference_steps = len(s.timesteps)
    s._step_index = None
    s.set_begin_index(0)


def _pndm_from(s: PNDMScheduler, start: float) -> None:
    """Make ``s`` (after ``set_timesteps(N)``) a fresh PNDM run on the grid's values <= start,
    following ``PNDMScheduler.set_timesteps`` for that sub-grid (its warm-up restarts)."""
    ts = _pndm_grid(s)[::-1]
    ts = ts[ts <= start + _GRID_TOL].astype(np.int64)
    n, order = s.num_inference_steps, s.pndm_order
    if not s.config.skip_prk_steps and len(ts) < order:
        # PNDM's Runge-Kutta warm-up needs `order` grid points (stock PNDM fails for N < 4):
        # shorter restarts warm up with the PLMS-only start of `skip_prk_steps=True`.
        s.register_to_config(skip_prk_steps=True)
    if s.config.skip_prk_steps:
        s.prk_timesteps = np.array([])
        s.plms_timesteps = np.concatenate([ts[:-1], ts[-2:-1], ts[-1:]])[::-1].copy()
    else:
        prk = np.array(ts[-order:]).repeat(2) + np.tile(
            np.array([0, s.config.num_train_timesteps // n // 2]), order)
        s.prk_timesteps = (prk[:-1].repeat(2)[1:-1])[::-1].copy()
        s.plms_timesteps = ts[:-3][::-1].copy()
    s._timesteps = ts
    seq = np.concatenate([s.prk_timesteps, s.plms_timesteps]).astype(np.int64)
    s.timesteps = torch.from_numpy(seq).to(s.timesteps.device)
    s.ets, s.counter, s.cur_model_output, s.cur_sample = [], 0, 0, None
