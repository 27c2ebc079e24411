"""The noise-process table: which family each scheduler class (and config) belongs to.

One `SchedulerKind` per scheduler class says how its sampling loop holds the state and how it
samples (the families and their ``s(t)``, ``sigma(t)``: `diffusion.noise`); everything the
toolkit derives from a scheduler's kind comes from here, and nothing else looks at scheduler
classes. A class's family is decided from the class *and* its config: DPM-Solver and UniPC keep
a beta-schedule ``alphas_cumprod`` even with ``use_flow_sigmas=True``, when their noise is flow
matching's (`SchedulerKind.flow`). Whether a restart samples the reverse process
(`is_stochastic`, THEORY.md "Stochastic and deterministic samplers") depends on the class *and*
its config or ``eta``; `default_eta` is the ``eta`` a restart passes by default (DDIM runs with
``eta = 1``, a sampler); `SchedulerKind.single_step` says whether ``step`` depends on
``(timestep, sample)`` alone, so that restarts from different timesteps can join one running
loop; `SchedulerKind.restart_anywhere` whether a flow restart may start at any sigma off the grid
(FlowMatch Euler and flow-ancestral: their step reads only the scheduler's ``sigmas``).

Below the time conversions (`diffusion.timesteps`) and the noise itself (`diffusion.noise`): it
imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from diffusers import (CogVideoXDDIMScheduler, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler,
                       UniPCMultistepScheduler)

from .cogvideox_dpm import CogVideoXDPMLoop
from .flow_ancestral import FlowAncestralScheduler

__all__ = ["SchedulerKind", "KINDS", "scheduler_kind", "is_flow", "is_stochastic", "default_eta"]


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
    CogVideoXDDIMScheduler: SchedulerKind("vp", True, _never),        # DDIM eta 0 (its step ignores eta)
    CogVideoXDPMLoop: SchedulerKind("vp", False, _always),            # second order (history), noise each step
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
