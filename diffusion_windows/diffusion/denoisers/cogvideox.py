"""CogVideoX (2b, 5b): ``CogVideoXTransformer3DModel`` under a VP scheduler (v-prediction).

As ``CogVideoXPipeline.__call__`` runs it: the transformer takes ``[N, F, C, H, W]`` (the loop
state stays ``[N, C, F, H, W]`` outside: permuted in and out here); the timestep is the
scheduler's integer one broadcast to the batch; T5 ``prompt_embeds`` (`encode_prompt`, or
given); classifier-free guidance as one batch ``[negative, positive]`` when
``guidance_scale > 1`` (default 6; ``use_dynamic_cfg`` is not supported); 3-D rotary
embeddings for the clip's size when the transformer uses them; the output in float32. The
scheduler is ``CogVideoXDDIMScheduler`` (deterministic, SNR-shifted ``alphas_cumprod``),
``CogVideoXDPMScheduler`` as `diffusion.cogvideox_dpm.CogVideoXDPMLoop` (stochastic, second
order), or any VP scheduler of the noise table; the VAE decodes ``z / scaling_factor``. CogVideoX 1.5
(``patch_size_t``: frames padded to the temporal patch) is refused.
"""
from __future__ import annotations

import torch

from .common import Condition
from .video import VideoDenoiser

__all__ = ["CogVideoXDenoiser"]


class CogVideoXDenoiser(VideoDenoiser):
    """``pipe.transformer`` (CogVideoX) called as ``CogVideoXPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "max_sequence_length")
    PIPELINES = ("CogVideoXPipeline", "CogVideoXVideoToVideoPipeline")

    def __init__(self, pipe, module):
        super().__init__(pipe, module)
        if getattr(module.config, "patch_size_t", None) is not None:
            raise ValueError(f"pipeline {type(pipe).__name__}: CogVideoX 1.5 (patch_size_t="
                             f"{module.config.patch_size_t}) pads frames to its temporal patch, which restarts do "
                             "not reproduce; CogVideoX 2b/5b are supported")

    @property
    def patch(self) -> tuple:
        p = int(self.module.config.patch_size)
        return 1, p, p

    def prepare(self, n, hw=None, **given):
        """T5 conditioning for ``n`` samples (embeddings of batch 1 are shared)."""
        self._check(given)
        scale = self._guidance(given.get("guidance_scale"), 6.0)
        cond, uncond = self._embeds_condition(given, n, scale, 226, *self.device_dtype)
        return Condition(cond, uncond, scale)

    def draw_noise(self, shape, generator, device, dtype) -> torch.Tensor:
        """Initial noise ``[N, C, F, H, W]`` drawn as the pipeline draws it, in ``[N, F, C, H, W]`` order."""
        from diffusers.utils.torch_utils import randn_tensor

        n, c, f, h, w = shape
        return randn_tensor((n, f, c, h, w), generator=generator, device=device, dtype=dtype).permute(0, 2, 1, 3, 4)

    def _rotary(self, x):
        """The pipeline's 3-D rotary embeddings for latents ``x`` ``[N, F, C, H, W]`` (None without them)."""
        if not self.module.config.use_rotary_positional_embeddings:
            return None
        sf = self.vae_scale_factor
        return self.pipe._prepare_rotary_positional_embeddings(x.shape[-2] * sf, x.shape[-1] * sf, x.shape[1],
                                                               self.device)

    def __call__(self, inp, t, cond):
        """v-prediction for the state ``inp`` ``[N, C, F, H, W]`` at scalar timestep ``t``, guidance batched in."""
        if cond is None:
            raise ValueError("CogVideoX needs a condition (prompt_embeds)")
        m = inp.shape[0]
        x = inp.permute(0, 2, 1, 3, 4).to(self.module.dtype)
        x = torch.cat([x, x]) if cond.rows == 2 else x
        batch = cond.batch(m)
        out = self.module(hidden_states=x, timestep=self._timestep(t, x.shape[0]), image_rotary_emb=self._rotary(x),
                          return_dict=False, **batch)[0].float()
        return cond.guide(out).permute(0, 2, 1, 3, 4)
