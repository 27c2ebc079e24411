"""Sana: ``SanaTransformer2DModel`` under DPM-Solver with flow sigmas, decoded by ``AutoencoderDC``.

As ``SanaPipeline.__call__`` runs it: Gemma-2 ``prompt_embeds`` with attention masks
(`encode_prompt`, or given; Sana's complex human instruction is applied to prompts as the
pipeline does); classifier-free guidance as one batch ``[negative, positive]`` when
``guidance_scale > 1`` (default 4.5); the model takes ``timestep * timestep_scale``; latents stay
float32 in the loop, the model runs in its own dtype and its output is cast back to float32.
The scheduler is ``DPMSolverMultistepScheduler(prediction_type="flow_prediction",
use_flow_sigmas=True, flow_shift=...)``, a flow-matching scheduler with integer timesteps
(``int(1000 s)``) and a beta-schedule ``alphas_cumprod`` that does not describe its noise
(`diffusion.noise`); `--scheduler flow-ancestral` samples on the same grid. A learned variance,
if any, is dropped. Restarts run at the size given (no resolution binning).
"""
from __future__ import annotations

import torch

from .common import Condition, pipeline_default
from .pixart import PixArtDenoiser

__all__ = ["SanaDenoiser"]


class SanaDenoiser(PixArtDenoiser):
    """``pipe.transformer`` (Sana) called as ``SanaPipeline`` calls it (module docstring)."""

    KEYWORDS = PixArtDenoiser.KEYWORDS + ("complex_human_instruction",)
    PIPELINES = ("SanaPipeline",)

    @property
    def dtype(self):
        return torch.float32  # SanaPipeline keeps latents in float32

    def _pipeline_extras(self) -> dict:
        out = super()._pipeline_extras()
        chi = pipeline_default(self.pipe, "complex_human_instruction", None)
        return out if chi is None else {**out, "complex_human_instruction": chi}

    def prepare(self, n, hw=None, **given):
        """Gemma conditioning for ``n`` samples."""
        cond, uncond, scale = self._text(n, given)
        return Condition(cond, uncond, scale)

    def __call__(self, inp, t, cond):
        """Velocity (float32) for the state ``inp`` at scalar timestep ``t``."""
        if cond is None:
            raise ValueError("Sana needs a condition (prompt_embeds)")
        m = inp.shape[0]
        batch = cond.batch(m)
        model_dtype = self.device_dtype[1]
        x = torch.cat([inp, inp]) if cond.rows == 2 else inp
        timestep = self._timestep(t, x.shape[0]) * self.module.config.timestep_scale
        batch["encoder_hidden_states"] = batch["encoder_hidden_states"].to(model_dtype)
        out = self.module(x.to(model_dtype), timestep=timestep, return_dict=False, **batch)[0].float()
        out = cond.guide(out)
        channels = self.latent_channels
        return out[:, :channels] if self.module.config.out_channels // 2 == channels else out
