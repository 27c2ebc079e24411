"""The noise-process table: every scheduler family as ``x_t = s(t) (x0 + sigma(t) eps)`` (EDM).

One `SchedulerKind` per scheduler class says how its sampling loop holds the state and how
it samples; everything the toolkit derives from a scheduler's kind comes from here, and
nothing else looks at scheduler classes:

| family | loop state | ``s(t)`` | ``sigma(t)`` |
| --- | --- | --- | --- |
| ``vp`` (DDPM, DDIM, DPM-Solver, UniPC, PNDM) | ``sqrt(a) x0 + sqrt(1 - a) eps`` | ``sqrt(a)`` | ``sqrt((1 - a) / a)`` |
| ``ve`` (Euler, Euler ancestral, Heun) | ``x0 + sigma eps`` | 1 | ``sqrt((1 - a) / a)`` |

with ``a = alpha_bar(t)`` (`diffusion.schedule`; on a sampling grid, the sigma the scheduler
runs the grid timestep at). From the entry come `noise_to` (a draw of the forward process in
the loop's scale), `to_model_space` (a state no step ran on, at the scale a finished loop
returns: VP), whether a restart samples the reverse process (`is_stochastic`, THEORY.md
"Stochastic and deterministic samplers": it depends on the class *and* its config or
``eta``), the ``eta`` a restart passes by default (`default_eta`: DDIM runs with ``eta = 1``,
a sampler), and whether its ``step`` depends on ``(timestep, sample)`` alone, so that restarts
from different timesteps can join one running loop (`SchedulerKind.single_step`). Model
evaluations per restart come from its restart plan (`schedule.restart_plan`: one model call
per entry, Heun's second stages and PNDM's warm-up included).

Example::

    kind = scheduler_kind(pipe.scheduler)          # SchedulerKind(family="vp", ...)
    x_t = noise_to(pipe.scheduler, x0, 500, noise=torch.randn_like(x0), num_inference_steps=20)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

from . import schedule

__all__ = ["SchedulerKind", "KINDS", "scheduler_kind", "noise_to", "to_model_space", "is_stochastic",
           "default_eta", "loop_scale"]


@dataclass(frozen=True)
class SchedulerKind:
    """How one scheduler class holds and samples the reverse process (module docstring)."""

    family: str                                   # "vp" or "ve"
    single_step: bool                             # step() depends on (timestep, sample) only
    stochastic: Callable                          # (scheduler, eta) -> whether restarts sample
    default_eta: float | None = None              # eta passed to step() when none is given


def _always(scheduler, eta):
    return True


def _never(scheduler, eta):
    return False


def _eta_positive(scheduler, eta):
    return eta is not None and float(eta) > 0


def _sde_algorithm(scheduler, eta):
    return str(getattr(scheduler.config, "algorithm_type", "") or "").startswith("sde")


KINDS: dict = {
    DDPMScheduler: SchedulerKind("vp", True, _always),
    DDIMScheduler: SchedulerKind("vp", True, _eta_positive, default_eta=1.0),
    EulerDiscreteScheduler: SchedulerKind("ve", True, _never),        # the hooks never pass s_churn
    EulerAncestralDiscreteScheduler: SchedulerKind("ve", True, _always),
    HeunDiscreteScheduler: SchedulerKind("ve", False, _never),        # second-order stages
    DPMSolverMultistepScheduler: SchedulerKind("vp", False, _sde_algorithm),  # multistep history
    UniPCMultistepScheduler: SchedulerKind("vp", False, _never),
    PNDMScheduler: SchedulerKind("vp", False, _never),
}


def scheduler_kind(scheduler) -> SchedulerKind:
    """The table's entry for ``scheduler`` (its class or nearest listed base class); ValueError otherwise."""
    for cls in type(scheduler).__mro__:
        if cls in KINDS:
            return KINDS[cls]
    names = ", ".join(c.__name__ for c in KINDS)
    raise ValueError(f"scheduler {type(scheduler).__name__} is not supported; supported: {names}")


def is_stochastic(scheduler, eta: float | None = None) -> bool:
    """Whether restarts sample the reverse process (DDPM yes; DDIM iff ``eta > 0``; Euler ancestral
    yes; Euler, Heun, UniPC, PNDM no; DPM-Solver iff its ``algorithm_type`` is an SDE one)."""
    return bool(scheduler_kind(scheduler).stochastic(scheduler, eta))


def default_eta(scheduler, eta: float | None = None) -> float | None:
    """``eta`` if given, else the kind's default (DDIM: 1.0, so that restarts sample)."""
    return scheduler_kind(scheduler).default_eta if eta is None else eta


def loop_scale(scheduler, timestep, num_inference_steps: int | None = None) -> np.ndarray:
    """``(s(t), sigma(t))`` of the loop state at training ``timestep`` (module docstring)."""
    sig = schedule.sigma(scheduler, timestep, num_inference_steps)
    if scheduler_kind(scheduler).family == "ve":
        return np.ones_like(sig), sig
    return np.sqrt(schedule.alpha_bar_from_sigma(sig)), sig


def noise_to(scheduler, x0: torch.Tensor, timesteps, noise: torch.Tensor,
             num_inference_steps: int | None = None) -> torch.Tensor:
    """``s(t) (x0 + sigma(t) noise)`` per sample (``timesteps``: one per sample), in x0's dtype."""
    s, sig = loop_scale(scheduler, timesteps, num_inference_steps)
    shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    coef = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(shape).to(x0.device, x0.dtype)  # noqa: E731
    if scheduler_kind(scheduler).family == "ve":
        return x0 + coef(sig) * noise.to(x0)
    # s (x0 + sigma eps) = sqrt(a) x0 + sqrt(1 - a) eps, written as diffusers' add_noise writes it
    a = schedule.alpha_bar_from_sigma(sig)
    return coef(np.sqrt(a)) * x0 + coef(np.sqrt(1.0 - a)) * noise.to(x0)


def to_model_space(scheduler, x: torch.Tensor, timestep: float) -> torch.Tensor:
    """A loop state that no step ran on, at the scale a finished loop returns (VP): Euler-type
    loops hold ``x0 + sigma eps``, i.e. VP state / ``sqrt(alpha_bar)``. ``scheduler`` has its
    grid set (a grid timestep takes the grid's own sigma)."""
    if scheduler_kind(scheduler).family == "ve":
        n = getattr(scheduler, "num_inference_steps", None)
        return x * float(np.sqrt(schedule.alpha_bar(scheduler, timestep, n)))
    return x
