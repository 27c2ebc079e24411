"""Time conversions and restart grids for diffusers schedulers (DESIGN.md, "Time, in one place").

Units: ``timestep`` is the training timestep in ``[0, num_train_timesteps)`` (fractional
only for the grids of Euler-type schedulers), ``step`` an index into
``scheduler.timesteps``, ``ou_time`` the Ornstein-Uhlenbeck time with
``alpha_bar = exp(-2 ou_time)``, and ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` the
noise level of variance-exploding (Euler-type) schedulers.

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
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

SCHEDULERS: dict[str, type] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "pndm": PNDMScheduler,
}

_GRID_TOL = 1e-3  # a timestep within this of a grid value is that grid value (float32 grids)


# ----------------------------------------------------------------------------- conversions
def num_train_timesteps(scheduler) -> int:
    """Number of training timesteps ``T``; valid integer timesteps are ``0 .. T-1``."""
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
    bad = ~np.isfinite(t) | (t < 0) | (t > T - 1)
    if bad.any():
        raise ValueError(f"timestep {t[bad].ravel()[0]!r} outside [0, {T})")
    return t


def sigma(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """``sigma(timestep)``; fractional timesteps linear in sigma, as diffusers' Euler does.

    With ``num_inference_steps``, a timestep of that grid takes the sigma the scheduler itself
    runs it at (`grid_sigmas`): Karras, exponential or beta sigmas differ from the training
    table there (4.5% at timestep 2 for DPM++ with Karras sigmas).
    """
    t = _as_timesteps(scheduler, timestep)
    table = _sigma_table(scheduler)
    out = np.interp(t, np.arange(len(table), dtype=np.float64), table)
    if num_inference_steps is not None:
        grid_t, grid_s = grid_sigmas(scheduler, num_inference_steps)
        if len(grid_t):
            flat = out.reshape(-1)
            for i, v in enumerate(t.reshape(-1)):
                near = np.abs(grid_t - v)
                if near.min() <= _GRID_TOL:
                    flat[i] = grid_s[int(near.argmin())]
    return out


def alpha_bar(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """``alpha_bar(timestep)`` = ``alphas_cumprod[timestep]`` (interpolated in sigma; on the
    ``num_inference_steps`` grid, the scheduler's own sigma there, see `sigma`)."""
    return alpha_bar_from_sigma(sigma(scheduler, timestep, num_inference_steps))


def ou_time(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """OU time of a training timestep: ``-log(alpha_bar) / 2`` (``num_inference_steps``: see `sigma`).

    Example::

        ou_time(pipe.scheduler, [0, 500, 999])   # -> array of OU times
    """
    return ou_time_from_alpha_bar(alpha_bar(scheduler, timestep, num_inference_steps))


def grid_sigmas(scheduler, num_inference_steps: int):
    """``(timesteps, sigmas)`` of the N-step grid as the scheduler runs it, for schedulers that
    keep a ``sigmas`` array (Euler-type, DPM-Solver, UniPC); empty arrays for those that read
    ``alphas_cumprod`` at the timestep itself (DDPM, DDIM, PNDM), where the table is exact."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(int(num_inference_steps))
    sig = getattr(s, "sigmas", None)
    ts = s.timesteps.double().cpu().numpy()
    if sig is None or len(sig) < len(ts):
        return np.zeros(0), np.zeros(0)
    return ts, torch.as_tensor(sig).double().cpu().numpy()[:len(ts)]


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
    """Inverse of :func:`sigma`: float timestep, clipped to ``[0, T-1]``."""
    table = _sigma_table(scheduler)
    return np.interp(np.asarray(s, dtype=np.float64), table, np.arange(len(table), dtype=np.float64))


def timestep_from_alpha_bar(scheduler, a) -> np.ndarray:
    """Inverse of :func:`alpha_bar`: float timestep, clipped to ``[0, T-1]``."""
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


def is_stochastic(scheduler, eta: float | None = None) -> bool:
    """Whether the reverse loop injects fresh noise (THEORY.md, "Stochastic and deterministic
    samplers"); `diffusion.noise.is_stochastic`."""
    from .noise import is_stochastic as stochastic

    return stochastic(scheduler, eta)


def make_scheduler(name: str, config=None):
    """A fresh scheduler of the kind ``name`` (one of :data:`SCHEDULERS`) built from
    ``config`` (a scheduler's config, or a scheduler); ``None`` uses the class defaults."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    if config is None:
        return cls()
    source = None
    if hasattr(config, "config") and not isinstance(config, Mapping):
        if type(config) is cls:
            return copy.deepcopy(config)  # the same kind: exactly its settings
        source, config = type(config), config.config
    return cls.from_config(_explicit_config(config, source))


# ----------------------------------------------------------------------------- grids
def _grid_of(scheduler) -> np.ndarray:
    """Grid of a scheduler whose ``set_timesteps`` ran: one timestep per step, descending."""
    if isinstance(scheduler, PNDMScheduler):  # Runge-Kutta half steps are not grid points
        return _pndm_grid(scheduler)
    ts = scheduler.timesteps.double().cpu().numpy()
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]  # 2nd-order schedulers (Heun) repeat timesteps
    return ts[keep]


def inference_timesteps(scheduler, num_inference_steps: int) -> np.ndarray:
    """The N-step grid's own timesteps (descending, float64, one per step), computed on a copy.

    Example::

        inference_timesteps(pipe.scheduler, 20)   # DDPM: [950, 900, ..., 0]
    """
    if int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps {num_inference_steps!r} must be >= 1")
    s = copy.deepcopy(scheduler)
    s.set_timesteps(int(num_inference_steps))
    return _grid_of(s)


def check_timestep(scheduler, timestep, grid: np.ndarray | None = None) -> float:
    """Validate one training timestep: an integer in ``[0, T)`` or one of ``grid``'s own
    values; with ``grid=None`` fractional values are accepted only for Euler-type
    schedulers (whose grids are fractional). Returns it as a float (snapped to the grid)."""
    if torch.is_tensor(timestep):
        if timestep.numel() != 1:
            raise ValueError(f"timestep {timestep!r} must be a single value")
        timestep = timestep.item()
    try:
        t = float(timestep)
    except (TypeError, ValueError):
        raise ValueError(f"timestep {timestep!r} is not a number") from None
    T = num_train_timesteps(scheduler)
    if not math.isfinite(t) or t < 0 or t >= T:
        raise ValueError(f"timestep {timestep!r} outside [0, {T})")
    if grid is not None and len(grid):
        near = np.abs(grid - t)
        if near.min() <= _GRID_TOL:
            return float(grid[int(near.argmin())])
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


def restart_plan(scheduler, timestep, num_inference_steps: int, device=None):
    """``(scheduler_copy, timesteps_to_run, start_timestep)`` for a restart at ``timestep``.

    The copy is fresh (no multistep history) and positioned to run exactly the
    returned timesteps (on ``device``, as stock pipelines place them). See
    :func:`restart_timestep` for the rule off the grid."""
    s = copy.deepcopy(scheduler)
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


def restart_timestep(scheduler, timestep, num_inference_steps: int) -> float:
    """The training timestep a restart at ``timestep`` on the N-step grid starts from.

    A grid timestep starts there. An integer off the grid starts exactly there where the
    scheduler accepts custom timesteps (DDPM, Euler, Heun, DPM-Solver++; not with Karras
    or similar sigmas): the run is ``[timestep] + grid timesteps below it``. Otherwise
    (DDIM, Euler ancestral, UniPC, PNDM) it starts from the largest grid timestep
    ``<= timestep``, i.e. runs exactly the grid's steps whose timesteps are ``<= timestep``
    and treats ``x_t`` as being at that grid timestep: noise to the returned value for an
    exact restart. Below the grid's last timestep no step runs and ``timestep`` is returned.

    Example::

        restart_timestep(DDIMScheduler(), 517, 20)   # -> 500.0, the grid timestep a restart starts from
    """
    return restart_plan(scheduler, timestep, num_inference_steps)[2]


# ----------------------------------------------------------------------------- diffusers internals
# Two things diffusers (0.42) offers no public call for, each kept here, in one place, and
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
