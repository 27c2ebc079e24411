"""Flux.1 (dev and schnell): ``FluxTransformer2DModel`` on 2x2-packed latents.

Samples stay ``[N, C, H, W]`` outside (C = ``in_channels / 4``, H and W even); the adapter
packs them to ``[N, (H/2)(W/2), 4C]`` for the model and unpacks its velocity, as
``FluxPipeline._pack_latents``/``_unpack_latents`` do (a scheduler step is elementwise, so
stepping unpacked latents is stepping packed ones). As ``FluxPipeline.__call__`` runs it: the
model takes ``timestep / 1000`` (the flow sigma) in the latents' dtype; ``img_ids`` hold each
packed position's (0, row, column), ``txt_ids`` are zeros ``[L, 3]``; a guidance-distilled
model ("dev", ``guidance_embeds=True``) takes ``guidance = guidance_scale`` (default 3.5) as an
embedding, not classifier-free guidance, and "schnell" takes none; ``true_cfg_scale > 1`` with a
negative prompt (or negative embeddings) adds a second, unconditional call, combined as
``neg + true_cfg_scale (pos - neg)``. The grid is Flux's: ``sigmas = linspace(1, 1/N, N)`` with
``mu`` from the packed sequence length (`flow.ShiftedFlowDenoiser`). The VAE decodes
``z / scaling_factor + shift_factor``. Kontext is `kontext`; IP-Adapters and Flux's Fill/Control
variants (extra input channels) are not supported.
"""
from __future__ import annotations

import torch

from .common import Condition, per_sample
from .flow import PackedDenoiser, image_ids, pack, true_cfg, unpack

__all__ = ["FluxDenoiser", "pack", "unpack", "image_ids"]


class FluxDenoiser(PackedDenoiser):
    """``pipe.transformer`` (Flux.1) called as ``FluxPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2", "prompt_embeds",
                "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds",
                "guidance_scale", "true_cfg_scale", "max_sequence_length")
    PIPELINES = ("FluxPipeline", "FluxImg2ImgPipeline")

    def __init__(self, pipe, module):
        super().__init__(pipe, module)
        vae = getattr(pipe, "vae", None)
        channels = int(module.config.in_channels)
        if channels % 4 or (vae is not None and channels // 4 != int(vae.config.latent_channels)):
            raise ValueError(f"pipeline {type(pipe).__name__}: the Flux transformer takes {channels} channels, not "
                             "4 x the VAE's latent channels (Fill/Control variants are not supported)")

    def prepare(self, n, hw=None, **given):
        """T5/CLIP conditioning, guidance embedding and true CFG for ``n`` samples."""
        self._check(given)
        g = given.get
        name = type(self.pipe).__name__
        if g("prompt") is None and g("prompt_embeds") is None:
            raise ValueError(f"{name} needs prompt or prompt_embeds, got None")
        if g("prompt_embeds") is not None and g("pooled_prompt_embeds") is None:
            raise ValueError("prompt_embeds given without pooled_prompt_embeds (Flux needs both)")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {name} has no text encoder")
        true_scale, do_true_cfg = true_cfg(self.pipe, given,
                                           ("negative_prompt_embeds", "negative_pooled_prompt_embeds"))
        device, dtype = self.device_dtype
        length = g("max_sequence_length") or 512
        pe, pooled, txt_ids = self._encode(prompt=g("prompt"), prompt_2=g("prompt_2"), prompt_embeds=g("prompt_embeds"),
                                           pooled_prompt_embeds=g("pooled_prompt_embeds"), device=device,
                                           num_images_per_prompt=1, max_sequence_length=length)
        guidance = None
        if self.module.config.guidance_embeds:  # dev: the scale is an input, no second call
            scale = self._guidance(g("guidance_scale"), 3.5)
            guidance = torch.full([n], scale, device=device, dtype=torch.float32)
        cond = {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, "prompt_embeds"),
                "pooled_projections": per_sample(pooled.to(device, dtype), n, "pooled_prompt_embeds"),
                "guidance": guidance}
        uncond = uncond_shared = None
        if do_true_cfg:
            ne, npooled, neg_ids = self._encode(
                prompt=g("negative_prompt"), prompt_2=g("negative_prompt_2"), prompt_embeds=g("negative_prompt_embeds"),
                pooled_prompt_embeds=g("negative_pooled_prompt_embeds"), device=device, num_images_per_prompt=1,
                max_sequence_length=length)
            uncond = {"encoder_hidden_states": per_sample(ne.to(device, dtype), n, "negative_prompt_embeds"),
                      "pooled_projections": per_sample(npooled.to(device, dtype), n, "negative_pooled_prompt_embeds"),
                      "guidance": guidance}
            uncond_shared = {"txt_ids": neg_ids}
        return Condition(cond, uncond, true_scale, {"txt_ids": txt_ids}, uncond_shared, order="cond_first")

    def _model(self, x, timestep, branch, shared, hw):
        """One call on packed latents: ``img_ids`` of the packed positions, ``txt_ids`` shared."""
        ids = image_ids(hw[0], hw[1], x.device, x.dtype)
        return self.module(hidden_states=x, timestep=timestep, img_ids=ids, return_dict=False, **branch,
                           **shared)[0]
