"""Time conversions and restart grids for diffusers schedulers (DESIGN.md, "Time, in one place").

Units: ``timestep`` is the training timestep in ``[0, num_train_timesteps)`` (fractional
only for the grids of Euler-type schedulers), ``step`` an index into
``scheduler.timesteps``, ``ou_time`` the Ornstein-Uhlenbeck time with
``alpha_bar = exp(-2 ou_time)``, and ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` the
noise level of variance-exploding (Euler-type) schedulers.

Flow matching (`diffusion.noise`: FlowMatch Euler, flow-ancestral, DPM-Solver/UniPC with
``use_flow_sigmas``): the timestep is ``T * s`` with ``s`` = `flow_sigma` in ``[0, 1]``, any
float in ``[0, T]`` (``T`` = ``num_train_timesteps``, 1000: pure noise), the loop state
``(1 - s) x0 + s eps``; ``alpha_bar = (1 - s)^2 / ((1 - s)^2 + s^2)``, ``sigma = s / (1 - s)``
and ``ou_time = 0.5 ln(1 + (s / (1 - s))^2)``, exact (THEORY.md, "Flow matching"). On the grid
of DPM-Solver/UniPC, whose integer timesteps truncate ``T s``, a grid timestep is its own ``s``.

A pipeline's grid may need more than the number of steps: Flux passes ``sigmas`` and ``mu``
(from the image's sequence length) to ``set_timesteps``. Those keywords are ``grid_kwargs``
(from the adapter, `denoisers`: ``adapter.grid_kwargs(N, hw)``) wherever a grid is built.

Fractional timesteps are interpolated exactly as diffusers' Euler schedulers do
(``interpolation_type="linear"``): linear in ``sigma`` over ``timestep``. All conversions
take numpy-compatible input, work in float64 and are vectorised. Nothing here modifies
the scheduler it is given; grids are computed on ``copy.deepcopy`` copies (ENV.md:
``from_config`` would silently drop settings such as ``steps_offset``).
"""
from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                       HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

from .flow_ancestral import FlowAncestralScheduler

SCHEDULERS: dict[str, type] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "pndm": PNDMScheduler,
    "flow-ancestral": FlowAncestralScheduler,     # flow matching, sampled (the DDPM posterior step)
    "flow-euler": FlowMatchEulerDiscreteScheduler,  # flow matching's ODE (SD3, Flux)
}
FLOW_SCHEDULERS = ("flow-ancestral", "flow-euler")

_GRID_TOL = 1e-3  # a timestep within this of a grid value is that grid value (float32 grids)


# ----------------------------------------------------------------------------- conversions
def _flow(scheduler) -> bool:
    from .noise import is_flow

    return is_flow(scheduler)


def num_train_timesteps(scheduler) -> int:
    """Number of training timesteps ``T``; valid integer timesteps are ``0 .. T-1`` (flow matching:
    any float in ``[0, T]``)."""
    if _flow(scheduler):
        return int(scheduler.config.num_train_timesteps)
    return int(len(scheduler.alphas_cumprod))


def _sigma_table(scheduler) -> np.ndarray:
    """``sigma`` at every integer training timestep, float64, increasing in timestep."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"scheduler {type(scheduler).__name__} has no alphas_cumprod")
    ac = np.asarray(torch.as_tensor(scheduler.alphas_cumprod).double().cpu().numpy())
    ac = np.clip(ac, 1e-300, 1.0)  # zero-SNR schedules end at alpha_bar = 0
    return np.sqrt((1.0 - ac) / ac)


def _as_timesteps(scheduler, timestep) -> np.ndarray:
    t = np.asarray(timestep.cpu() if torch.is_tensor(timestep) else timestep, dtype=np.float64)
    T = num_train_timesteps(scheduler)
    top = T if _flow(scheduler) else T - 1
    bad = ~np.isfinite(t) | (t < 0) | (t > top)
    if bad.any():
        raise ValueError(f"timestep {t[bad].ravel()[0]!r} outside [0, {T}{']' if top == T else ')'}")
    return t


def flow_sigma(scheduler, timestep, num_inference_steps: int | None = None, grid_kwargs=None) -> np.ndarray:
    """Flow matching's noise level ``s = timestep / T`` in ``[0, 1]`` (the loop state is
    ``(1 - s) x0 + s eps``). With ``num_inference_steps``, a grid timestep of DPM-Solver/UniPC
    with ``use_flow_sigmas`` (integers that truncate ``T s``) takes the grid's own ``s``."""
    from .noise import scheduler_kind

    kind = scheduler_kind(scheduler)
    if kind.family != "flow":
        raise ValueError(f"scheduler {type(scheduler).__name__} is not a flow-matching scheduler")
    t = _as_timesteps(scheduler, timestep)
    out = t / num_train_timesteps(scheduler)
    if num_inference_steps is not None and not kind.restart_anywhere:
        _on_grid(out, t, *grid_sigmas(scheduler, num_inference_steps, grid_kwargs))
    return out


def _on_grid(out: np.ndarray, t: np.ndarray, grid_t: np.ndarray, grid_s: np.ndarray) -> None:
    """Where a timestep of ``t`` is one of the grid's (``grid_t``), its value in ``out`` becomes
    the sigma the scheduler runs there (``grid_s``); in place."""
    flat = out.reshape(-1)
    for i, v in enumerate(t.reshape(-1)):
        near = np.abs(grid_t - v) if len(grid_t) else None
        if near is not None and near.min() <= _GRID_TOL:
            flat[i] = grid_s[int(near.argmin())]


def sigma(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """``sigma(timestep)``; fractional timesteps linear in sigma, as diffusers' Euler does.

    With ``num_inference_steps``, a timestep of that grid takes the sigma the scheduler itself
    runs it at (`grid_sigmas`): Karras, exponential or beta sigmas differ from the training
    table there (4.5% at timestep 2 for DPM++ with Karras sigmas). Flow matching: the VE sigma
    ``s / (1 - s)`` of `flow_sigma` ``s`` (infinite at ``timestep = T``).
    """
    if _flow(scheduler):
        s = flow_sigma(scheduler, timestep, num_inference_steps)
        with np.errstate(divide="ignore"):
            return s / (1.0 - s)
    t = _as_timesteps(scheduler, timestep)
    table = _sigma_table(scheduler)
    out = np.interp(t, np.arange(len(table), dtype=np.float64), table)
    if num_inference_steps is not None:
        _on_grid(out, t, *grid_sigmas(scheduler, num_inference_steps))
    return out


def alpha_bar(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """``alpha_bar(timestep)`` = ``alphas_cumprod[timestep]`` (interpolated in sigma; on the
    ``num_inference_steps`` grid, the scheduler's own sigma there, see `sigma`). Flow matching:
    ``(1 - s)^2 / ((1 - s)^2 + s^2)``, the VP state ``x / sqrt((1 - s)^2 + s^2)``'s."""
    if _flow(scheduler):
        s = flow_sigma(scheduler, timestep, num_inference_steps)
        return (1.0 - s) ** 2 / ((1.0 - s) ** 2 + s ** 2)
    return alpha_bar_from_sigma(sigma(scheduler, timestep, num_inference_steps))


def ou_time(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """OU time of a training timestep: ``-log(alpha_bar) / 2`` (``num_inference_steps``: see `sigma`).

    Example::

        ou_time(pipe.scheduler, [0, 500, 999])   # -> array of OU times
    """
    with np.errstate(divide="ignore"):
        return ou_time_from_alpha_bar(alpha_bar(scheduler, timestep, num_inference_steps))


def grid_sigmas(scheduler, num_inference_steps: int, grid_kwargs=None):
    """``(timesteps, sigmas)`` of the N-step grid as the scheduler runs it, for schedulers that
    keep a ``sigmas`` array (Euler-type, DPM-Solver, UniPC; flow schedulers: flow sigmas ``s``);
    empty arrays for those that read ``alphas_cumprod`` at the timestep itself (DDPM, DDIM,
    PNDM), where the table is exact.

    The grid depends on the scheduler's class and config (and a flow scheduler's ``set_shift``)
    only, so it is computed once per those and the step count: restarting reads it per restart.
    """
    key = _grid_key(scheduler, num_inference_steps, grid_kwargs)
    if key not in _GRIDS:
        s = copy.deepcopy(scheduler)
        set_grid(s, num_inference_steps, grid_kwargs=grid_kwargs)
        sig = getattr(s, "sigmas", None)
        ts = s.timesteps.double().cpu().numpy()
        if sig is None or len(sig) < len(ts):
            ts, sig = np.zeros(0), np.zeros(0)
        else:
            sig = torch.as_tensor(sig).double().cpu().numpy()[:len(ts)]
        if len(_GRIDS) > 64:
            _GRIDS.clear()
        _GRIDS[key] = (ts, sig)
    ts, sig = _GRIDS[key]
    return ts.copy(), sig.copy()


_GRIDS: dict = {}   # grid_sigmas' results by `_grid_key`


def _grid_key(scheduler, num_inference_steps: int, grid_kwargs) -> tuple:
    """What a scheduler's N-step grid depends on: its class and config, a flow scheduler's
    ``set_shift``, the step count and the pipeline's grid keywords."""
    return (type(scheduler), repr(sorted(dict(scheduler.config).items())), repr(getattr(scheduler, "_shift", None)),
            int(num_inference_steps), repr(sorted(dict(grid_kwargs or {}).items())))


def ou_time_from_alpha_bar(a) -> np.ndarray:
    """``ou_time = -log(alpha_bar) / 2`` (DESIGN.md)."""
    return -0.5 * np.log(np.asarray(a, dtype=np.float64))


def alpha_bar_from_ou_time(t) -> np.ndarray:
    """``alpha_bar = exp(-2 ou_time)``."""
    return np.exp(-2.0 * np.asarray(t, dtype=np.float64))


def sigma_from_alpha_bar(a) -> np.ndarray:
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)``."""
    a = np.asarray(a, dtype=np.float64)
    return np.sqrt((1.0 - a) / a)


def alpha_bar_from_sigma(s) -> np.ndarray:
    """``alpha_bar = 1 / (1 + sigma^2)``."""
    return 1.0 / (1.0 + np.asarray(s, dtype=np.float64) ** 2)


def timestep_from_sigma(scheduler, s) -> np.ndarray:
    """Inverse of :func:`sigma`: float timestep, clipped to ``[0, T-1]`` (flow matching: ``T s / (1 + s)``
    in ``[0, T]``)."""
    if _flow(scheduler):
        s = np.asarray(s, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(np.isinf(s), 1.0, s / (1.0 + s))
        return np.clip(f, 0.0, 1.0) * num_train_timesteps(scheduler)
    table = _sigma_table(scheduler)
    return np.interp(np.asarray(s, dtype=np.float64), table, np.arange(len(table), dtype=np.float64))


def timestep_from_alpha_bar(scheduler, a) -> np.ndarray:
    """Inverse of :func:`alpha_bar`: float timestep, clipped to ``[0, T-1]``."""
    with np.errstate(divide="ignore"):
        return timestep_from_sigma(scheduler, sigma_from_alpha_bar(a))


def timestep_from_ou_time(scheduler, t) -> np.ndarray:
    """Inverse of :func:`ou_time`: float timestep, clipped to ``[0, T-1]``.

    Example::

        timestep_from_ou_time(pipe.scheduler, 0.5)   # the training timestep with alpha_bar = e^-1
    """
    return timestep_from_alpha_bar(scheduler, alpha_bar_from_ou_time(t))


# ----------------------------------------------------------------------------- scheduler kinds
def is_variance_exploding(scheduler) -> bool:
    """Euler-type schedulers keep latents at VE scale, ``x_ve = x_vp / sqrt(alpha_bar)``
    (`diffusion.noise`, the noise-process table)."""
    from .noise import scheduler_kind

    return scheduler_kind(scheduler).family == "ve"


def is_flow(scheduler) -> bool:
    """Flow-matching noise, ``(1 - s) x0 + s eps`` (`diffusion.noise`; decided from class and config)."""
    return _flow(scheduler)


def is_stochastic(scheduler, eta: float | None = None) -> bool:
    """Whether the reverse loop injects fresh noise (THEORY.md, "Stochastic and deterministic
    samplers"); `diffusion.noise.is_stochastic`."""
    from .noise import is_stochastic as stochastic

    return stochastic(scheduler, eta)


def make_scheduler(name: str, config=None):
    """A fresh scheduler of the kind ``name`` (one of :data:`SCHEDULERS`) built from
    ``config`` (a scheduler's config, or a scheduler); ``None`` uses the class defaults.

    A scheduler replaces one of its own noise family only (a flow model's scheduler by
    ``flow-ancestral`` or ``flow-euler``, a VP/VE model's by the others): ValueError otherwise.
    ``flow-ancestral`` keeps the grid of the flow scheduler it replaces (shift, dynamic shifting,
    ``shift_terminal``; DPM-Solver's flow grid with its ``flow_shift``)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    if config is None:
        return cls()
    source = None
    if hasattr(config, "config") and not isinstance(config, Mapping):
        if type(config) is cls:
            return copy.deepcopy(config)  # the same kind: exactly its settings
        flow_source, flow_target = _flow(config), name in FLOW_SCHEDULERS
        if flow_source != flow_target:
            fam = "flow matching" if flow_source else "VP/VE diffusion"
            valid = ", ".join(n for n in SCHEDULERS if (n in FLOW_SCHEDULERS) == flow_source)
            raise ValueError(f"--scheduler {name!r} cannot replace {type(config).__name__}: the model was trained "
                             f"for {fam}; valid: {valid}")
        if flow_source:
            return cls.from_config(_flow_config(name, config))
        source, config = type(config), config.config
    return cls.from_config(_explicit_config(config, source))


# ----------------------------------------------------------------------------- grids
def set_grid(scheduler, num_inference_steps: int, device=None, grid_kwargs=None) -> None:
    """``scheduler.set_timesteps`` for the pipeline's N-step grid (``grid_kwargs``: the pipeline's
    extra keywords, Flux's ``sigmas`` and ``mu``); modifies ``scheduler`` (pass a copy)."""
    scheduler.set_timesteps(int(num_inference_steps), device=device, **dict(grid_kwargs or {}))


def _grid_of(scheduler) -> np.ndarray:
    """Grid of a scheduler whose ``set_timesteps`` ran: one timestep per step, descending."""
    if isinstance(scheduler, PNDMScheduler):  # Runge-Kutta half steps are not grid points
        return _pndm_grid(scheduler)
    ts = scheduler.timesteps.double().cpu().numpy()
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]  # 2nd-order schedulers (Heun) repeat timesteps
    return ts[keep]


def inference_timesteps(scheduler, num_inference_steps: int, grid_kwargs=None) -> np.ndarray:
    """The N-step grid's own timesteps (descending, float64, one per step), computed on a copy
    (``grid_kwargs``: the pipeline's own ``set_timesteps`` keywords, module docstring).

    Example::

        inference_timesteps(pipe.scheduler, 20)   # DDPM: [950, 900, ..., 0]
    """
    if int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps {num_inference_steps!r} must be >= 1")
    s = copy.deepcopy(scheduler)
    set_grid(s, num_inference_steps, grid_kwargs=grid_kwargs)
    return _grid_of(s)


def check_timestep(scheduler, timestep, grid: np.ndarray | None = None) -> float:
    """Validate one training timestep: an integer in ``[0, T)`` or one of ``grid``'s own
    values; with ``grid=None`` fractional values are accepted only for Euler-type
    schedulers (whose grids are fractional). Flow matching: any number in ``[0, T]``
    (``T s``). Returns it as a float (snapped to the grid)."""
    if torch.is_tensor(timestep):
        if timestep.numel() != 1:
            raise ValueError(f"timestep {timestep!r} must be a single value")
        timestep = timestep.item()
    try:
        t = float(timestep)
    except (TypeError, ValueError):
        raise ValueError(f"timestep {timestep!r} is not a number") from None
    T = num_train_timesteps(scheduler)
    if _flow(scheduler):
        if not math.isfinite(t) or t < 0 or t > T:
            raise ValueError(f"timestep {timestep!r} outside [0, {T}] (flow matching: {T} sigma)")
    elif not math.isfinite(t) or t < 0 or t >= T:
        raise ValueError(f"timestep {timestep!r} outside [0, {T})")
    if grid is not None and len(grid):
        near = np.abs(grid - t)
        if near.min() <= _GRID_TOL:
            return float(grid[int(near.argmin())])
    if _flow(scheduler):
        return t
    if t == round(t):
        return float(round(t))
    if grid is None and is_variance_exploding(scheduler):
        return t
    raise ValueError(f"timestep {timestep!r} is neither an integer nor a grid timestep")


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


# ----------------------------------------------------------------------------- diffusers internals
# Four things diffusers (0.42) offers no public call for, each kept here, in one place, and
# pinned by tests against the stock pipelines (tests/test_schedule.py and tests/test_hooks.py,
# "stock"):
# 1. A scheduler's config as it runs: `from_config` drops the keys that the config's
#    `_use_default_values` lists, even those a pipeline changed after construction
#    (StableDiffusionPipeline sets steps_offset=1 that way), so a swapped scheduler would run
#    another grid. A swap to the same class is a deepcopy (public); to another class, the keys
#    the source never changed stay defaults of the target class, as `from_config` does.
# 2. PNDM: `set_timesteps` takes no custom timesteps, and its grid without the Runge-Kutta half
#    steps lives only in its private `_timesteps`. A restart on the sub-grid below a timestep
#    rebuilds the schedule exactly as `PNDMScheduler.set_timesteps` builds a whole one.
# 3. Flow matching off the grid: a restart at any sigma sets the copy's `sigmas`/`timesteps`
#    directly (`_flow_start`), as `FlowMatchEulerDiscreteScheduler.set_timesteps` would leave them.
# 4. A flow scheduler's grid carried over to flow-ancestral (`_flow_config`).

def _flow_plan(scheduler, s, timestep, num_inference_steps, device, grid_kwargs):
    """`restart_plan` of a flow scheduler ``s`` (a copy): on the grid, ``set_begin_index``; off it,
    FlowMatch-type schedulers start exactly there (`_flow_start`), DPM/UniPC snap below."""
    from .noise import scheduler_kind

    set_grid(s, num_inference_steps, device, grid_kwargs)
    grid = _grid_of(s)
    t = check_timestep(scheduler, timestep, grid)
    if not np.any(np.abs(grid - t) <= _GRID_TOL):
        below = grid[grid <= t]
        if t <= 0 or (len(below) == 0 and not scheduler_kind(scheduler).restart_anywhere):
            return s, s.timesteps[:0], t  # x = x0 (or below the grid's end): nothing to run
        if scheduler_kind(scheduler).restart_anywhere:
            _flow_start(s, t)
            return s, s.timesteps, t
        t = float(below.max())
    seq = s.timesteps.double().cpu().numpy()
    begin = int(np.nonzero(np.abs(seq - t) <= _GRID_TOL)[0][-1])
    s.set_begin_index(begin)
    return s, s.timesteps[begin:], t


def _init_defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _explicit_config(config: Mapping, source: type | None = None) -> dict:
    """The config without diffusers' ``_use_default_values`` bookkeeping, keeping keys that a
    pipeline changed after construction (ENV.md: SD's ``steps_offset=1``). ``source`` is the
    class the config belongs to (else guessed from its keys among :data:`SCHEDULERS`)."""
    config = dict(config)
    recorded = set(config.pop("_use_default_values", []) or [])
    keys = {k for k in config if not k.startswith("_")}
    if source is None:
        source = next((c for c in SCHEDULERS.values() if set(_init_defaults(c)) == keys), None)
    defaults = _init_defaults(source) if source is not None else {}
    out = {}
    for key, value in config.items():
        if key in recorded and (key not in defaults or defaults[key] == value):
            continue  # a true default: let the target class use its own
        out[key] = value
    return out



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


def _flow_config(name: str, scheduler) -> dict:
    """4. The config of ``scheduler`` (a flow scheduler) for ``name``, so that the grid stays the
    pipeline's: FlowMatch keys as they are; DPM-Solver/UniPC's flow grid as ``sigma_schedule
    "dpm-flow"`` with its ``flow_shift`` (flow-ancestral only: FlowMatch Euler has no such grid)."""
    cfg = _explicit_config(scheduler.config, type(scheduler))
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        if name == "flow-euler" and cfg.get("sigma_schedule", "flow-match") != "flow-match":
            raise ValueError(f"--scheduler flow-euler: {type(scheduler).__name__} runs DPM-Solver's flow grid, "
                             "which FlowMatchEulerDiscreteScheduler does not build; valid: flow-ancestral")
        if name == "flow-euler":
            cfg.pop("sigma_schedule", None)
        return cfg
    if name != "flow-ancestral":
        raise ValueError(f"--scheduler {name!r} cannot build {type(scheduler).__name__}'s flow grid; "
                         "valid: flow-ancestral")
    c = scheduler.config
    return {"num_train_timesteps": c.num_train_timesteps, "shift": float(c.flow_shift),
            "sigma_schedule": "dpm-flow", "use_dynamic_shifting": bool(getattr(c, "use_dynamic_shifting", False)),
            "time_shift_type": getattr(c, "time_shift_type", "exponential")}


def _pndm_grid(s: PNDMScheduler) -> np.ndarray:
    """The grid of a PNDM scheduler whose ``set_timesteps`` ran, descending, without half steps."""
    return np.asarray(s._timesteps, dtype=np.float64)[::-1].copy()


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
