"""Chroma: ``ChromaTransformer2DModel`` (Flux's layout without pooled CLIP or guidance embedding).

As ``ChromaPipeline.__call__`` runs it: T5 ``prompt_embeds`` with an attention mask
(`encode_prompt`, or given with ``prompt_attention_mask``), extended by ones over the image
tokens for the model (``_prepare_attention_mask``); ``txt_ids`` zeros ``[L, 3]``; classifier-free
guidance when ``guidance_scale > 1`` (default 5.0) as two model calls, positive then negative,
combined as ``neg + s (pos - neg)``; the negative prompt is ``""`` unless given. Latents are
2x2-packed inside the call, the timestep is ``1000 s`` divided by 1000, the grid is Flux's
(`flow`). The VAE decodes ``z / scaling_factor + shift_factor``. IP-Adapters are not supported.
"""
from __future__ import annotations

import torch

from .common import Condition
from .flow import PackedDenoiser, image_ids

__all__ = ["ChromaDenoiser"]


class ChromaDenoiser(PackedDenoiser):
    """``pipe.transformer`` (Chroma) called as ``ChromaPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "prompt_attention_mask",
                "negative_prompt_attention_mask", "guidance_scale", "max_sequence_length")
    PIPELINES = ("ChromaPipeline",)

    def prepare(self, n, hw=None, **given):
        """T5 conditioning (with masks) and classifier-free guidance for ``n`` samples."""
        self._check(given)
        g = given.get
        scale, cfg = self._guided(given, 5.0)
        device = self.device
        pe, ids, mask, ne, neg_ids, nmask = self._encode(
            prompt=g("prompt"), negative_prompt=g("negative_prompt"), device=device, num_images_per_prompt=1,
            prompt_embeds=g("prompt_embeds"), negative_prompt_embeds=g("negative_prompt_embeds"),
            prompt_attention_mask=g("prompt_attention_mask"),
            negative_prompt_attention_mask=g("negative_prompt_attention_mask"), do_classifier_free_guidance=cfg,
            max_sequence_length=g("max_sequence_length") or 512)
        cond, uncond = self._branches(n, (pe, mask), (ne, nmask) if cfg else None,
                                      ("encoder_hidden_states", "attention_mask"))
        return Condition(cond, uncond, scale, {"txt_ids": ids}, {"txt_ids": neg_ids} if cfg else None,
                         order="cond_first")

    def _model(self, x, timestep, branch, shared, hw):
        mask = branch["attention_mask"]
        if mask is not None:  # ChromaPipeline._prepare_attention_mask: ones over the image tokens
            mask = torch.cat([mask, torch.ones(x.shape[0], x.shape[1], device=mask.device, dtype=torch.bool)], dim=1)
        return self.module(hidden_states=x, timestep=timestep, encoder_hidden_states=branch["encoder_hidden_states"],
                           img_ids=image_ids(hw[0], hw[1], x.device, x.dtype), attention_mask=mask,
                           return_dict=False, **shared)[0]
