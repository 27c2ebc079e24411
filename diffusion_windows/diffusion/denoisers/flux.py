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
``mu`` from the packed sequence length (`grid_kwargs`). The VAE decodes
``z / scaling_factor + shift_factor``. IP-Adapters and Flux's Fill/Control/Kontext variants
(extra input channels or image tokens) are not supported.
"""
from __future__ import annotations

import numpy as np
import torch

from .common import Condition, TransformerDenoiser, calculate_shift, per_sample

__all__ = ["FluxDenoiser", "pack", "unpack"]


def pack(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/2)(W/2), 4C]`` (``FluxPipeline._pack_latents``)."""
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack` for latents of height ``h`` and width ``w``."""
    n, _, d = x.shape
    return x.view(n, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(0, row, column) of every packed position (``FluxPipeline._prepare_latent_image_ids``)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxDenoiser(TransformerDenoiser):
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

    @property
    def latent_channels(self) -> int:
        return int(self.module.config.in_channels) // 4

    @property
    def multiple(self) -> int:
        return 2  # 2x2 packing

    def latent_size(self, height=None, width=None) -> tuple:
        """As ``FluxPipeline.prepare_latents``: ``2 * (pixels // (vae_scale_factor * 2))``."""
        f = self.vae_scale_factor
        if height is None and width is None:
            height = width = int(getattr(self.pipe, "default_sample_size", 128)) * f
        h = int(height if height is not None else width)
        w = int(width if width is not None else height)
        return 2 * (h // (f * 2)), 2 * (w // (f * 2))

    def default_size(self) -> tuple:
        return self.latent_size()

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """Flux's grid: ``sigmas = linspace(1, 1/N, N)`` and ``mu`` from the packed sequence length."""
        n = int(num_inference_steps)
        h, w = hw if hw is not None else self.default_size()
        cfg = self.pipe.scheduler.config
        mu = calculate_shift((int(h) // 2) * (int(w) // 2), cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        if cfg.get("use_flow_sigmas", False):  # FluxPipeline leaves such a scheduler its own sigmas
            return {"mu": mu}
        return {"sigmas": np.linspace(1.0, 1 / n, n), "mu": mu}

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
        true_cfg = float(g("true_cfg_scale") if g("true_cfg_scale") is not None else 1.0)
        has_neg = g("negative_prompt") is not None or (g("negative_prompt_embeds") is not None
                                                       and g("negative_pooled_prompt_embeds") is not None)
        do_true_cfg = true_cfg > 1 and has_neg
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
        return Condition(cond, uncond, true_cfg, {"txt_ids": txt_ids}, uncond_shared, order="cond_first")

    def __call__(self, inp, t, cond):
        """Velocity ``[m, C, H, W]`` for the unpacked state ``inp`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("Flux needs a condition (prompt_embeds and pooled_prompt_embeds)")
        m, _, h, w = inp.shape
        x = pack(inp)
        ids = image_ids(h, w, x.device, x.dtype)
        timestep = self._timestep(t, m, x.dtype) / 1000  # FluxPipeline: t.expand(B).to(latents.dtype) / 1000

        def call(branch, shared):
            kw = {k: (None if v is None else v[:m]) for k, v in branch.items()}
            return self.module(hidden_states=x, timestep=timestep, img_ids=ids, return_dict=False, **kw,
                               **shared)[0]

        out = call(cond.cond, cond.shared)
        if cond.uncond is not None:  # two calls, as FluxPipeline makes them
            neg = call(cond.uncond, cond.uncond_shared)
            out = neg + cond.scale * (out - neg)
        return unpack(out, h, w)
