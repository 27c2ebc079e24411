"""The schedulers a run may swap in by name (``--scheduler``), built from the pipeline's own.

`make_scheduler(name, config)` builds one of :data:`SCHEDULERS` from a scheduler (or its config)
so that it runs the pipeline's grid: same class, a copy; another class of the same noise family,
the settings the pipeline changed kept (below); flow matching, its shift and grid carried over.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping

import torch

from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                       HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

from .flow_ancestral import FlowAncestralScheduler
from .kinds import is_flow as _flow

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
        if "snr_shift_scale" in config.config:
            return cls.from_config(_shifted_config(config))
        source, config = type(config), config.config
    return cls.from_config(_explicit_config(config, source))


def _shifted_config(scheduler) -> dict:
    """5. CogVideoX's schedulers shift their ``alphas_cumprod`` (``snr_shift_scale``, then zero terminal
    SNR) after building them from the betas: another class built from the same config would run
    another noise process. The swap gets the betas of the shifted ``alphas_cumprod`` as
    ``trained_betas``, so that its ``alphas_cumprod`` are the source's."""
    a = scheduler.alphas_cumprod.double()
    betas = 1.0 - a / torch.cat([a.new_ones(1), a[:-1]])
    cfg = _explicit_config(scheduler.config, type(scheduler))
    for key in ("snr_shift_scale", "rescale_betas_zero_snr", "beta_schedule", "beta_start", "beta_end"):
        cfg.pop(key, None)
    return {**cfg, "trained_betas": betas.tolist()}


# ----------------------------------------------------------------------------- diffusers internals
# Two things diffusers (0.42) offers no public call for, kept here and pinned by tests against the
# stock pipelines (tests/test_schedule.py, "stock"):
# 1. A scheduler's config as it runs: `from_config` drops the keys that the config's
#    `_use_default_values` lists, even those a pipeline changed after construction
#    (StableDiffusionPipeline sets steps_offset=1 that way), so a swapped scheduler would run
#    another grid. A swap to the same class is a deepcopy (public); to another class, the keys
#    the source never changed stay defaults of the target class, as `from_config` does.
# 4. A flow scheduler's grid carried over to flow-ancestral (`_flow_config`).
# 5. CogVideoX's SNR-shifted noise carried over to another VP scheduler (`_shifted_config`).

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
