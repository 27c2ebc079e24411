"""The noise-process table: every scheduler family as ``x_t = s(t) (x0 + sigma(t) eps)`` (EDM).

One `SchedulerKind` per scheduler class says how its sampling loop holds the state and how
it samples; everything the toolkit derives from a scheduler's kind comes from here, and
nothing else looks at scheduler classes:

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

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from . import schedule
from .flow_ancestral import FlowAncestralScheduler

__all__ = ["SchedulerKind", "KINDS", "scheduler_kind", "noise_to", "to_model_space", "is_stochastic",
           "default_eta", "loop_scale", "is_flow"]


@dataclass(frozen=True)
class SchedulerKind:
    """How one scheduler class holds and samples the reverse process (module docstring)."""

    family: str                                   # "vp", "ve" or "flow"
    single_step: bool                             # step() depends on (timestep, sample) only
    stochastic: Callable                          # (scheduler, eta) -> whether restarts sample
    default_eta: float | None = None              # eta passed to step() when none is given
    flow: "SchedulerKind | None" = None           # the kind under use_flow_sigmas=True (DPM-Solver, UniPC)
    restart_anywhere: bool = False                # flow: a restart may start at any sigma (step reads sigmas only)


def _always(scheduler, eta):
    return True


def _never(scheduler, eta):
    return False


def _eta_positive(scheduler, eta):
    return eta is not None and float(eta) > 0


def _sde_algorithm(scheduler, eta):
    return str(getattr(scheduler.config, "algorithm_type", "") or "").startswith("sde")


def _stochastic_sampling(scheduler, eta):
    # FlowMatch Euler re-noises x0_hat completely with stochastic_sampling=True: random, though
    # not the posterior (PIPELINES.md); flow-ancestral is the posterior step
    return bool(getattr(scheduler.config, "stochastic_sampling", False))


KINDS: dict = {
    DDPMScheduler: SchedulerKind("vp", True, _always),
    DDIMScheduler: SchedulerKind("vp", True, _eta_positive, default_eta=1.0),
    EulerDiscreteScheduler: SchedulerKind("ve", True, _never),        # the hooks never pass s_churn
    EulerAncestralDiscreteScheduler: SchedulerKind("ve", True, _always),
    HeunDiscreteScheduler: SchedulerKind("ve", False, _never),        # second-order stages
    DPMSolverMultistepScheduler: SchedulerKind("vp", False, _sde_algorithm,  # multistep history
                                               flow=SchedulerKind("flow", False, _sde_algorithm)),
    UniPCMultistepScheduler: SchedulerKind("vp", False, _never, flow=SchedulerKind("flow", False, _never)),
    PNDMScheduler: SchedulerKind("vp", False, _never),
    FlowMatchEulerDiscreteScheduler: SchedulerKind("flow", True, _stochastic_sampling, restart_anywhere=True),
    FlowAncestralScheduler: SchedulerKind("flow", True, _always, restart_anywhere=True),
}


def scheduler_kind(scheduler) -> SchedulerKind:
    """The table's entry for ``scheduler`` (its class or nearest listed base class, its flow variant
    when its config says ``use_flow_sigmas``); ValueError otherwise."""
    for cls in type(scheduler).__mro__:
        if cls in KINDS:
            kind = KINDS[cls]
            if kind.flow is not None and getattr(scheduler.config, "use_flow_sigmas", False):
                return kind.flow
            return kind
    names = ", ".join(c.__name__ for c in KINDS)
    raise ValueError(f"scheduler {type(scheduler).__name__} is not supported; supported: {names}")


def is_flow(scheduler) -> bool:
    """Whether ``scheduler``'s noise is flow matching's, ``(1 - s) x0 + s eps`` (module docstring)."""
    return scheduler_kind(scheduler).family == "flow"


def is_stochastic(scheduler, eta: float | None = None) -> bool:
    """Whether restarts sample the reverse process (DDPM yes; DDIM iff ``eta > 0``; Euler ancestral
    yes; Euler, Heun, UniPC, PNDM no; DPM-Solver iff its ``algorithm_type`` is an SDE one;
    flow-ancestral yes; FlowMatch Euler iff ``stochastic_sampling``)."""
    return bool(scheduler_kind(scheduler).stochastic(scheduler, eta))


def default_eta(scheduler, eta: float | None = None) -> float | None:
    """``eta`` if given, else the kind's default (DDIM: 1.0, so that restarts sample)."""
    return scheduler_kind(scheduler).default_eta if eta is None else eta


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
