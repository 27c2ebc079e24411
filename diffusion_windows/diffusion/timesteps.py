"""Time conversions and sampling grids for diffusers schedulers (DESIGN.md, "Time, in one place").

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
import hashlib
import math

import numpy as np
import torch
from diffusers import PNDMScheduler

from . import kinds

_GRID_TOL = 1e-3  # a timestep within this of a grid value is that grid value (float32 grids)


# ----------------------------------------------------------------------------- conversions
def _flow(scheduler) -> bool:
    return kinds.is_flow(scheduler)


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
    kind = kinds.scheduler_kind(scheduler)
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


def state_key(scheduler) -> tuple:
    """What every grid, sigma and restart plan of ``scheduler`` depends on, by value: its class, its
    config, a flow scheduler's ``set_shift`` and its ``alphas_cumprod``. A key by value, not by the
    object: a scheduler changed in place (``register_to_config``, a new ``alphas_cumprod``) gets a
    new key, never the results cached for its old settings.

    Reading the config and hashing the table cost ~60 us, and restart costs are asked for per
    restart: the key is remembered per scheduler while its config object (immutable: diffusers
    replaces it on ``register_to_config``), its table tensor (and that tensor's in-place version
    counter) and its shift stay the ones it was computed from."""
    cfg, ac, shift = scheduler.config, getattr(scheduler, "alphas_cumprod", None), getattr(scheduler, "_shift", None)
    version = getattr(ac, "_version", None) if torch.is_tensor(ac) else None
    memo = _KEYS.get(id(scheduler))
    if (memo is not None and memo[0] is scheduler and memo[1] is cfg and memo[2] is ac and memo[3] == version
            and memo[4] == repr(shift) and (ac is None or version is not None)):
        return memo[5]
    digest = None if ac is None else hashlib.blake2b(
        np.ascontiguousarray(torch.as_tensor(ac).double().cpu().numpy()).tobytes(), digest_size=16).hexdigest()
    key = (type(scheduler), repr(sorted(dict(cfg).items())), repr(shift), digest)
    if len(_KEYS) > 64:
        _KEYS.clear()
    _KEYS[id(scheduler)] = (scheduler, cfg, ac, version, repr(shift), key)
    return key


_KEYS: dict = {}  # id(scheduler) -> (scheduler, config, table, its version, shift, key): `state_key`'s memo


def frozen_kwargs(grid_kwargs) -> tuple:
    """A pipeline's ``set_timesteps`` keywords as a key: arrays by their full values (a repr abbreviates)."""
    out = []
    for k, v in sorted(dict(grid_kwargs or {}).items()):
        try:
            out.append((k, tuple(np.asarray(v, dtype=np.float64).ravel().tolist())))
        except (TypeError, ValueError):
            out.append((k, repr(v)))
    return tuple(out)


def _grid_key(scheduler, num_inference_steps: int, grid_kwargs) -> tuple:
    """What a scheduler's N-step grid depends on: its settings (`state_key`), the step count and the
    pipeline's grid keywords."""
    return (*state_key(scheduler), int(num_inference_steps), frozen_kwargs(grid_kwargs))


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
    return kinds.scheduler_kind(scheduler).family == "ve"


def is_flow(scheduler) -> bool:
    """Flow-matching noise, ``(1 - s) x0 + s eps`` (`diffusion.noise`; decided from class and config)."""
    return _flow(scheduler)


def is_stochastic(scheduler, eta: float | None = None) -> bool:
    """Whether the reverse loop injects fresh noise (THEORY.md, "Stochastic and deterministic
    samplers"); `diffusion.noise.is_stochastic`."""
    return kinds.is_stochastic(scheduler, eta)


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


def _pndm_grid(s: PNDMScheduler) -> np.ndarray:
    """The grid of a PNDM scheduler whose ``set_timesteps`` ran, descending, without half steps."""
    return np.asarray(s._timesteps, dtype=np.float64)[::-1].copy()


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
