"""An ancestral (stochastic) sampler for flow-matching models: the DDPM posterior step taken in
the VP coordinates of the same noise level (THEORY.md, "Flow matching (time mapping)").

A flow model's state ``x = (1 - sigma) x0 + sigma eps`` is, divided by
``r = sqrt((1 - sigma)^2 + sigma^2)``, exactly the VP state ``y = sqrt(a) x0 + sqrt(1 - a) eps``
with ``a = (1 - sigma)^2 / r^2``. One step from ``sigma`` to ``sigma' < sigma``:

1. ``x0 = x - sigma v`` (the model predicts the velocity ``v = eps - x0``);
2. ``y = x / r``; the DDPM posterior ``q(y' | y, x0)`` between ``a`` and ``a'``
   (Ho et al. 2020, eq. 6-7): mean ``sqrt(a') (1 - a/a') / (1 - a) x0 + sqrt(a/a') (1 - a') / (1 - a) y``,
   variance ``(1 - a') (1 - a/a') / (1 - a)``; draw ``y'``;
3. ``x' = r' y'``.

Exact under the mapping: with the true ``E[x0 | x]`` it is DDPM's ancestral sampler, and the
flow Euler step is DDIM with ``eta = 0`` between the same levels. At ``sigma = 1`` (``a = 0``)
the step draws ``y' = sqrt(a') x0 + sqrt(1 - a') z``; the last step (``sigma' = 0``) returns ``x0``.

`FlowAncestralScheduler` is a `FlowMatchEulerDiscreteScheduler` with this ``step``: its grid
(``set_timesteps`` with static ``shift``, dynamic ``mu``, ``shift_terminal``, custom ``sigmas``)
is the flow scheduler's, so a pipeline that passes ``sigmas=``/``mu=`` (Flux) gets its own
grid. ``sigma_schedule="dpm-flow"`` builds instead the grid of DPM-Solver/UniPC with
``use_flow_sigmas`` (Sana): ``flow_shift`` applied to ``linspace(1 - 1/T, 0, N + 1)[:-1]``.
Its ``timesteps`` are ``1000 sigma`` (floats), ``init_noise_sigma`` is 1 and
``scale_model_input`` is the identity.

Example::

    pipe.scheduler = FlowAncestralScheduler.from_config(pipe.scheduler.config)
    x = scheduler.step(v, t, x, generator=gens).prev_sample
"""
from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["FlowAncestralScheduler", "vp_alpha_bar"]


def vp_alpha_bar(sigma: float) -> float:
    """``alpha_bar`` of the VP state at the flow noise level ``sigma``: ``(1-s)^2 / ((1-s)^2 + s^2)``."""
    return (1.0 - sigma) ** 2 / ((1.0 - sigma) ** 2 + sigma ** 2)


class FlowAncestralScheduler(FlowMatchEulerDiscreteScheduler):
    """Flow matching's grid with the DDPM posterior step in matched VP coordinates (module docstring)."""

    order = 1
    init_noise_sigma = 1.0

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float | None = 0.5, max_shift: float | None = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, invert_sigmas: bool = False, shift_terminal: float | None = None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False,
                 use_beta_sigmas: bool = False, time_shift_type: str = "exponential",
                 stochastic_sampling: bool = False, sigma_schedule: str = "flow-match"):
        if invert_sigmas:
            raise ValueError("FlowAncestralScheduler: invert_sigmas=True is not a denoising grid")
        if sigma_schedule not in ("flow-match", "dpm-flow"):
            raise ValueError(f"sigma_schedule {sigma_schedule!r} is not 'flow-match' or 'dpm-flow'")
        super().__init__(num_train_timesteps=num_train_timesteps, shift=shift,
                         use_dynamic_shifting=use_dynamic_shifting, base_shift=base_shift, max_shift=max_shift,
                         base_image_seq_len=base_image_seq_len, max_image_seq_len=max_image_seq_len,
                         shift_terminal=shift_terminal, use_karras_sigmas=use_karras_sigmas,
                         use_exponential_sigmas=use_exponential_sigmas, use_beta_sigmas=use_beta_sigmas,
                         time_shift_type=time_shift_type)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The identity: flow models take the state as it is."""
        return sample

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, sigmas=None, mu: float | None = None,
                      timesteps=None):
        """The flow scheduler's grid; with ``sigma_schedule="dpm-flow"`` (and no custom sigmas or
        timesteps) DPM-Solver's ``use_flow_sigmas`` grid, shifted by ``shift`` (its ``flow_shift``)."""
        if self.config.sigma_schedule != "dpm-flow" or sigmas is not None or timesteps is not None:
            return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu,
                                         timesteps=timesteps)
        shift = math.exp(mu) if mu is not None else self.shift
        T = self.config.num_train_timesteps
        u = 1.0 - np.linspace(1, 1 / T, num_inference_steps + 1)
        u = np.flip(shift * u / (1 + (shift - 1) * u))[:-1].copy()  # as DPMSolverMultistepScheduler
        sig = torch.from_numpy(u.astype(np.float32)).to(device=device)
        self.num_inference_steps = num_inference_steps
        self.timesteps = sig * T
        self.sigmas = torch.cat([sig, torch.zeros(1, device=sig.device)])
        self._step_index = None
        self._begin_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True, **unused):
        """One ancestral step from ``sigmas[step_index]`` to ``sigmas[step_index + 1]`` (module docstring)."""
        if isinstance(timestep, int) or (torch.is_tensor(timestep) and not timestep.is_floating_point()):
            raise ValueError("FlowAncestralScheduler.step takes a timestep of scheduler.timesteps, not an index")
        if self.step_index is None:
            self._init_step_index(timestep)
        s, s_next = float(self.sigmas[self.step_index]), float(self.sigmas[self.step_index + 1])
        x = sample.to(torch.float32)
        x0 = x - s * model_output.to(torch.float32)
        if s_next <= 0.0:
            prev = x0
        else:
            a, a_next = vp_alpha_bar(s), vp_alpha_bar(s_next)
            r, r_next = math.hypot(1.0 - s, s), math.hypot(1.0 - s_next, s_next)
            ratio = a / a_next                                   # alpha of the transition a' -> a
            c_x0 = math.sqrt(a_next) * (1.0 - ratio) / (1.0 - a)
            c_y = math.sqrt(ratio) * (1.0 - a_next) / (1.0 - a)
            std = math.sqrt(max((1.0 - a_next) * (1.0 - ratio) / (1.0 - a), 0.0))
            z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            prev = r_next * (c_x0 * x0 + (c_y / r) * x + std * z)
        self._step_index += 1
        prev = prev.to(model_output.dtype)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev) if return_dict else (prev,)
