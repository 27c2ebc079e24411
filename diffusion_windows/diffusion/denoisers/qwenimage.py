"""Qwen-Image: ``QwenImageTransformer2DModel`` on 2x2-packed latents of a Wan-style VAE.

As ``QwenImagePipeline.__call__`` runs it: Qwen2.5-VL ``prompt_embeds`` with
``prompt_embeds_mask`` (`encode_prompt`; a mask of all ones becomes None, as there);
``img_shapes = [(1, H/2, W/2)]`` per row for the model's rotary embedding; the timestep is
``1000 s`` divided by 1000; a guidance-distilled model (``guidance_embeds``) takes
``guidance_scale`` as an embedding (required there, ignored elsewhere); "true" classifier-free
guidance when ``true_cfg_scale > 1`` (default 4.0) and a negative prompt (or negative embeddings)
is given: a second call, combined as ``c = neg + s (pos - neg)`` rescaled per packed token to the
positive prediction's norm, ``c |pos| / |c|``. Grid and latent size are Flux's (`flow`).

The VAE (``AutoencoderKLQwenImage``) works on frames ``[B, C, 1, H, W]``; samples here are
``[N, C, H, W]`` (`images.decode` adds and drops the frame axis) and decode as
``z latents_std + latents_mean``. Edit, inpaint and ControlNet variants are not supported.
"""
from __future__ import annotations

import torch

from .common import Condition, per_sample
from .flow import PackedDenoiser, cfg_at_norm, true_cfg

__all__ = ["QwenImageDenoiser"]


class QwenImageDenoiser(PackedDenoiser):
    """``pipe.transformer`` (Qwen-Image) called as ``QwenImagePipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "prompt_embeds_mask", "negative_prompt_embeds",
                "negative_prompt_embeds_mask", "true_cfg_scale", "guidance_scale", "max_sequence_length")
    PIPELINES = ("QwenImagePipeline",)

    def image_shape(self, height=None, width=None) -> tuple:
        h, w = self.latent_size(height, width)
        vae = getattr(self.pipe, "vae", None)
        channels = int(vae.config.get("input_channels", 3)) if vae is not None else 3
        return channels, h * self.vae_scale_factor, w * self.vae_scale_factor

    def prepare(self, n, hw=None, **given):
        """Qwen2.5-VL conditioning, true CFG and the guidance embedding for ``n`` samples."""
        self._check(given)
        g = given.get
        name = type(self.pipe).__name__
        self._check_text(given)
        if g("negative_prompt") is not None and not self._has_encoder():
            raise ValueError(f"negative_prompt={g('negative_prompt')!r} but pipeline {name} has no text encoder")
        scale, do_cfg = true_cfg(self.pipe, given)
        device, dtype = self.device_dtype
        length = g("max_sequence_length") or 512

        def encode(prompt, embeds, mask, what):
            pe, m = self._encode(prompt=prompt, prompt_embeds=embeds, prompt_embeds_mask=mask, device=device,
                                 num_images_per_prompt=1, max_sequence_length=length)
            return {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, what),
                    "encoder_hidden_states_mask": per_sample(m, n, what + "_mask"), "guidance": guidance}

        guidance = None
        if self.module.config.guidance_embeds:
            if g("guidance_scale") is None:
                raise ValueError(f"{name}: its guidance-distilled transformer needs guidance_scale, got None")
            guidance = torch.full([n], float(g("guidance_scale")), device=device, dtype=torch.float32)
        cond = encode(g("prompt"), g("prompt_embeds"), g("prompt_embeds_mask"), "prompt_embeds")
        uncond = None
        if do_cfg:
            uncond = encode(g("negative_prompt"), g("negative_prompt_embeds"), g("negative_prompt_embeds_mask"),
                            "negative_prompt_embeds")
        return Condition(cond, uncond, scale, order="cond_first")

    def combine(self, pos, neg, scale):
        """``QwenImagePipeline``'s true CFG: ``neg + s (pos - neg)`` at the norm of ``pos`` per token."""
        return cfg_at_norm(pos, neg, scale)

    def _model(self, x, timestep, branch, shared, hw):
        shapes = [[(1, hw[0] // 2, hw[1] // 2)]] * x.shape[0]
        return self.module(hidden_states=x, timestep=timestep, img_shapes=shapes, return_dict=False, **branch)[0]
