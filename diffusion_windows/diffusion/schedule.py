"""Time conversions, sampling grids, restart plans and scheduler swaps for diffusers schedulers
(DESIGN.md, "Time, in one place"): the one place users import them from.

The code lives in three modules, imported one way (`kinds` <- `timesteps` <- `restart`):
- `timesteps`: units (``timestep``, ``step``, ``ou_time``, ``sigma``, flow matching's ``s``) and
  the conversions between them, a scheduler's N-step grid and its sigmas, `check_timestep`;
- `restart`: `restart_plan`, `restart_timestep`, `restart_length` (model calls per restart);
- `schedulers`: :data:`SCHEDULERS` by name and `make_scheduler`.

Example::

    from diffusion_windows.diffusion import schedule
    schedule.ou_time(pipe.scheduler, [0, 500, 999])
    schedule.restart_timestep(pipe.scheduler, 517, 20)
"""
from .restart import restart_length, restart_plan, restart_timestep
from .schedulers import FLOW_SCHEDULERS, SCHEDULERS, make_scheduler
from .timesteps import (alpha_bar, alpha_bar_from_ou_time, alpha_bar_from_sigma, check_timestep,
                        flow_sigma, grid_sigmas, inference_timesteps, is_flow, is_stochastic, is_variance_exploding,
                        num_train_timesteps, ou_time, ou_time_from_alpha_bar, set_grid, sigma, sigma_from_alpha_bar,
                        state_key, timestep_from_alpha_bar, timestep_from_ou_time, timestep_from_sigma)

__all__ = [
    "SCHEDULERS", "FLOW_SCHEDULERS", "make_scheduler",
    "num_train_timesteps", "flow_sigma", "sigma", "alpha_bar", "ou_time", "grid_sigmas", "state_key",
    "ou_time_from_alpha_bar", "alpha_bar_from_ou_time", "sigma_from_alpha_bar", "alpha_bar_from_sigma",
    "timestep_from_sigma", "timestep_from_alpha_bar", "timestep_from_ou_time",
    "is_variance_exploding", "is_flow", "is_stochastic",
    "set_grid", "inference_timesteps", "check_timestep", "restart_plan", "restart_timestep", "restart_length",
]
