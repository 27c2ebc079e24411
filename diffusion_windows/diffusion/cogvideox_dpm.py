"""CogVideoX's DPM sampler (``CogVideoXDPMScheduler``, CogVideoX-5b's) as the restart loop calls a scheduler.

Its ``step`` takes the previous step's ``x0`` prediction and timestep besides the usual
``(model_output, timestep, sample)`` (a second-order, stochastic solver), and `CogVideoXPipeline`
passes them from its loop. `CogVideoXDPMLoop` keeps them itself: ``step(model_output, timestep,
sample, generator=...)`` as every other scheduler, the history reset by ``set_timesteps`` (a
restart's fresh copy starts first-order, as the pipeline's first step does), and the step run in
the pipeline's latent layout ``[N, F, C, H, W]`` (the loop's clips are ``[N, C, F, H, W]``) so
that its noise is drawn as the pipeline draws it. `loop_scheduler(scheduler)` converts a pipeline's
scheduler; `models.load_backend` does it for CogVideoX pipelines.
"""
from __future__ import annotations

from diffusers import CogVideoXDPMScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

__all__ = ["CogVideoXDPMLoop", "loop_scheduler"]


class CogVideoXDPMLoop(CogVideoXDPMScheduler):
    """``CogVideoXDPMScheduler`` with its history kept inside (module docstring)."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self._old_x0, self._back = None, None

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None, return_dict: bool = True):
        old, back = getattr(self, "_old_x0", None), getattr(self, "_back", None)
        video = sample.ndim == 5
        swap = (lambda x: x.permute(0, 2, 1, 3, 4)) if video else (lambda x: x)  # noqa: E731
        prev, x0 = super().step(swap(model_output), None if old is None else swap(old), timestep, back, swap(sample),
                                eta=eta, generator=generator, return_dict=False)
        prev, x0 = swap(prev), swap(x0)
        self._old_x0, self._back = x0, timestep
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)


def loop_scheduler(scheduler):
    """``scheduler`` as a `CogVideoXDPMLoop` when it is a ``CogVideoXDPMScheduler`` (its settings kept); else itself."""
    if isinstance(scheduler, CogVideoXDPMScheduler) and not isinstance(scheduler, CogVideoXDPMLoop):
        return CogVideoXDPMLoop(**{k: v for k, v in scheduler.config.items() if not k.startswith("_")})
    return scheduler
