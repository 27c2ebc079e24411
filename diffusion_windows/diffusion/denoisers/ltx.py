"""LTX-Video text-to-video: ``LTXVideoTransformer3DModel`` under a flow-matching scheduler.

As ``LTXPipeline.__call__`` runs it: latents ``[N, C, F, H, W]`` in float32 outside the adapter,
*packed* into tokens ``[N, F H W / patches, C p_t p p]`` inside the call (the pipeline's own
``_pack_latents``/``_unpack_latents``) and cast to the conditioning's dtype; the timestep is the
scheduler's (``1000 s``) broadcast to the rows; T5 ``prompt_embeds`` with their
``prompt_attention_mask`` (`encode_prompt`, or given); classifier-free guidance as one batch
``[negative, positive]`` when ``guidance_scale > 1`` (default 3; ``guidance_rescale`` is not
supported); rotary positions scaled by ``frame_rate`` (default 25). The grid is the pipeline's:
``sigmas = linspace(1, 1/N, N)`` and ``mu`` from the clip's latent token count (`grid_kwargs`,
which reads the latent ``(frames, height, width)``). The VAE decodes
``z * latents_std / scaling_factor + latents_mean`` (its buffers), at ``decode_timestep`` 0
without decode noise when it is timestep-conditioned (the pipeline's defaults; `images.decode`).
"""
from __future__ import annotations

import numpy as np
import torch

from .common import Condition, calculate_shift, per_sample
from .video import VideoDenoiser

__all__ = ["LTXDenoiser"]


class LTXDenoiser(VideoDenoiser):
    """``pipe.transformer`` (LTX-Video) called as ``LTXPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                "negative_prompt_attention_mask", "guidance_scale", "frame_rate", "max_sequence_length")
    PIPELINES = ("LTXPipeline",)

    @property
    def dtype(self):
        return torch.float32

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_spatial_compression_ratio)

    @property
    def temporal_factor(self) -> int:
        return int(self.pipe.vae_temporal_compression_ratio)

    @property
    def patch(self) -> tuple:
        c = self.module.config
        return int(c.patch_size_t), int(c.patch_size), int(c.patch_size)

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """``sigmas = linspace(1, 1/N, N)`` and ``mu`` from the latent ``(frames, height, width)`` (``hw``)."""
        n = int(num_inference_steps)
        if hw is None or len(hw) != 3:
            f, (h, w) = self.latent_frames(), self.default_size()
        else:
            f, h, w = (int(v) for v in hw)
        cfg = self.pipe.scheduler.config
        mu = calculate_shift(f * h * w, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        return {"sigmas": np.linspace(1.0, 1.0 / n, n), "mu": mu}

    def prepare(self, n, hw=None, **given):
        """T5 conditioning for ``n`` samples; ``frame_rate`` rides in ``shared``."""
        self._check(given)
        g = given.get
        if g("prompt") is None and (g("prompt_embeds") is None or g("prompt_attention_mask") is None):
            raise ValueError(f"{type(self.pipe).__name__} needs prompt, or prompt_embeds with prompt_attention_mask")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {type(self.pipe).__name__} has no text encoder")
        scale = self._guidance(g("guidance_scale"), 3.0)
        cfg = scale > 1.0
        device, dtype = self.device, self.module.dtype
        pe, pm, ne, nm = self._encode(prompt=g("prompt"), negative_prompt=g("negative_prompt"),
                                      do_classifier_free_guidance=cfg, num_videos_per_prompt=1,
                                      prompt_embeds=g("prompt_embeds"),
                                      prompt_attention_mask=g("prompt_attention_mask"),
                                      negative_prompt_embeds=g("negative_prompt_embeds"),
                                      negative_prompt_attention_mask=g("negative_prompt_attention_mask"),
                                      max_sequence_length=g("max_sequence_length") or 128, device=device)
        branch = lambda e, m, name: {"encoder_hidden_states": per_sample(e.to(device, dtype), n, name),  # noqa: E731
                                     "encoder_attention_mask": per_sample(m.to(device), n, name + " mask")}
        cond = branch(pe, pm, "prompt_embeds")
        uncond = branch(ne, nm, "negative_prompt_embeds") if cfg else None
        return Condition(cond, uncond, scale, shared={"frame_rate": float(g("frame_rate") or 25)})

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` ``[N, C, F, H, W]`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("LTX-Video needs a condition (prompt_embeds)")
        m, _, f, h, w = inp.shape
        pt, p, _ = self.patch
        frame_rate = cond.shared["frame_rate"]
        batch = {k: v for k, v in cond.batch(m).items() if k != "frame_rate"}
        x = self.pipe._pack_latents(inp, p, pt)
        x = torch.cat([x, x]) if cond.rows == 2 else x
        x = x.to(batch["encoder_hidden_states"].dtype)
        scale = (self.temporal_factor / frame_rate, self.vae_scale_factor, self.vae_scale_factor)
        out = self.module(hidden_states=x, timestep=self._timestep(t, x.shape[0]), num_frames=f // pt,
                          height=h // p, width=w // p, rope_interpolation_scale=scale, return_dict=False,
                          **batch)[0].float()
        return self.pipe._unpack_latents(cond.guide(out), f // pt, h // p, w // p, p, pt)
