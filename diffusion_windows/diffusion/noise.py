"""The noise processes: every scheduler family as ``x_t = s(t) (x0 + sigma(t) eps)`` (EDM).

One `SchedulerKind` per scheduler class (the table, `diffusion.kinds`, re-exported here) says
how its sampling loop holds the state and how it samples; nothing else looks at scheduler
classes:

| family | loop state | ``s(t)`` | ``sigma(t)`` |
| --- | --- | --- | --- |
| ``vp`` (DDPM, DDIM, DPM-Solver, UniPC, PNDM) | ``sqrt(a) x0 + sqrt(1 - a) eps`` | ``sqrt(a)`` | ``sqrt((1 - a) / a)`` |
| ``ve`` (Euler, Euler ancestral, Heun) | ``x0 + sigma eps`` | 1 | ``sqrt((1 - a) / a)`` |
| ``flow`` (FlowMatch Euler, flow-ancestral; DPM, UniPC with flow sigmas) | ``(1 - s) x0 + s eps`` | ``1 - s`` | ``s / (1 - s)`` |

with ``a = alpha_bar(t)`` (`diffusion.schedule`; on a sampling grid, the sigma the scheduler
runs the grid timestep at) and, for flow matching, ``s = timestep / T`` its own noise level
(``a = (1 - s)^2 / ((1 - s)^2 + s^2)``, THEORY.md "Flow matching"). A class's family is
decided from the class *and* its config: DPM-Solver and UniPC keep a beta-schedule
``alphas_cumprod`` even with ``use_flow_sigmas=True``, when their noise is flow matching's
(`SchedulerKind.flow`). From the entry come `noise_to` (a draw of the forward process in
the loop's scale), `to_model_space` (a state no step ran on, at the scale a finished loop
returns: VP), whether a restart samples the reverse process (`is_stochastic`, THEORY.md
"Stochastic and deterministic samplers": it depends on the class *and* its config or
``eta``), the ``eta`` a restart passes by default (`default_eta`: DDIM runs with ``eta = 1``,
a sampler), and whether its ``step`` depends on ``(timestep, sample)`` alone, so that restarts
from different timesteps can join one running loop (`SchedulerKind.single_step`). Flow
matching's timestep names its noise level exactly (``1000 s``), so restarts start anywhere off
the grid where the step reads only the scheduler's ``sigmas`` (`SchedulerKind.restart_anywhere`:
FlowMatch Euler and flow-ancestral; DPM-Solver and UniPC snap to their grid). Model
evaluations per restart come from its restart plan (`schedule.restart_plan`: one model call
per entry, Heun's second stages and PNDM's warm-up included).

Example::

    kind = scheduler_kind(pipe.scheduler)          # SchedulerKind(family="vp", ...)
    x_t = noise_to(pipe.scheduler, x0, 500, noise=torch.randn_like(x0), num_inference_steps=20)
"""
from __future__ import annotations

import numpy as np
import torch

from . import schedule
from .kinds import KINDS, SchedulerKind, default_eta, is_flow, is_stochastic, scheduler_kind  # noqa: F401 - the table

__all__ = ["SchedulerKind", "KINDS", "scheduler_kind", "noise_to", "to_model_space", "is_stochastic",
           "default_eta", "loop_scale", "is_flow"]


def loop_scale(scheduler, timestep, num_inference_steps: int | None = None, grid_kwargs=None) -> np.ndarray:
    """``(s(t), sigma(t))`` of the loop state at training ``timestep`` (module docstring)."""
    family = scheduler_kind(scheduler).family
    if family == "flow":
        s = schedule.flow_sigma(scheduler, timestep, num_inference_steps, grid_kwargs)
        with np.errstate(divide="ignore"):
            return 1.0 - s, s / (1.0 - s)
    sig = schedule.sigma(scheduler, timestep, num_inference_steps)
    if family == "ve":
        return np.ones_like(sig), sig
    return np.sqrt(schedule.alpha_bar_from_sigma(sig)), sig


def noise_to(scheduler, x0: torch.Tensor, timesteps, noise: torch.Tensor,
             num_inference_steps: int | None = None, grid_kwargs=None) -> torch.Tensor:
    """``s(t) (x0 + sigma(t) noise)`` per sample (``timesteps``: one per sample), in x0's dtype."""
    family = scheduler_kind(scheduler).family
    shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    coef = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(shape).to(x0.device, x0.dtype)  # noqa: E731
    if family == "flow":  # (1 - s) x0 + s eps, the formula (scale_noise ignores its timestep after set_begin_index)
        s = schedule.flow_sigma(scheduler, timesteps, num_inference_steps, grid_kwargs)
        return coef(1.0 - s) * x0 + coef(s) * noise.to(x0)
    s, sig = loop_scale(scheduler, timesteps, num_inference_steps)
    if family == "ve":
        return x0 + coef(sig) * noise.to(x0)
    # s (x0 + sigma eps) = sqrt(a) x0 + sqrt(1 - a) eps, written as diffusers' add_noise writes it
    a = schedule.alpha_bar_from_sigma(sig)
    return coef(np.sqrt(a)) * x0 + coef(np.sqrt(1.0 - a)) * noise.to(x0)


def to_model_space(scheduler, x: torch.Tensor, timestep: float) -> torch.Tensor:
    """A loop state that no step ran on, at the scale a finished loop returns (VP): Euler-type
    loops hold ``x0 + sigma eps``, i.e. VP state / ``sqrt(alpha_bar)``; VP and flow states are
    returned as they are (at timestep 0 a flow state is ``x0``). ``scheduler`` has its grid set
    (a grid timestep takes the grid's own sigma)."""
    if scheduler_kind(scheduler).family == "ve":
        n = getattr(scheduler, "num_inference_steps", None)
        return x * float(np.sqrt(schedule.alpha_bar(scheduler, timestep, n)))
    return x
