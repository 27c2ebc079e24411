"""Stable Diffusion 3 / 3.5: ``SD3Transformer2DModel`` under a flow-matching scheduler.

As ``StableDiffusion3Pipeline.__call__`` runs it: the timestep is the scheduler's (``1000 s``,
a float) broadcast to the batch; T5 + CLIP ``prompt_embeds`` and CLIP ``pooled_prompt_embeds``
(`encode_prompt`, or given); classifier-free guidance as one batch ``[negative, positive]`` when
``guidance_scale > 1`` (default 7.0); the scheduler's own grid, with ``mu`` from the latent's
patch count when the scheduler shifts dynamically (SD3.5's configs do not). Latents are 16
channels, unpacked; the VAE decodes ``z / scaling_factor + shift_factor`` (`images.decode`).
Skip-layer guidance (``skip_guidance_layers``) and IP-Adapters are not supported.
"""
from __future__ import annotations

import torch

from .common import Condition, TransformerDenoiser, calculate_shift, per_sample

__all__ = ["SD3Denoiser"]


class SD3Denoiser(TransformerDenoiser):
    """``pipe.transformer`` (SD3) called as ``StableDiffusion3Pipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3",
                "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
                "guidance_scale", "max_sequence_length", "clip_skip")
    PIPELINES = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """``mu`` from the image's patch count when the scheduler shifts dynamically (as SD3 computes it)."""
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting", None):
            return {}
        h, w = hw if hw is not None else self.default_size()
        p = self.multiple
        seq = (int(h) // p) * (int(w) // p)
        return {"mu": calculate_shift(seq, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                      cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))}

    def prepare(self, n, hw=None, **given):
        """T5/CLIP conditioning for ``n`` samples (embeddings of batch 1 are shared)."""
        self._check(given)
        g = given.get
        if g("prompt") is None and g("prompt_embeds") is None:
            raise ValueError(f"{type(self.pipe).__name__} needs prompt or prompt_embeds, got None")
        if g("prompt_embeds") is not None and g("pooled_prompt_embeds") is None:
            raise ValueError("prompt_embeds given without pooled_prompt_embeds (SD3 needs both)")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {type(self.pipe).__name__} has no text encoder")
        scale = self._guidance(g("guidance_scale"), 7.0)
        cfg = scale > 1.0
        if cfg and not self._has_encoder() and (g("negative_prompt_embeds") is None
                                                or g("negative_pooled_prompt_embeds") is None):
            raise ValueError(f"guidance_scale={scale} without a text encoder needs negative_prompt_embeds and "
                             "negative_pooled_prompt_embeds, got None")
        device, dtype = self.device_dtype
        kwargs = {k: v for k, v in given.items() if k != "guidance_scale"}
        kwargs.setdefault("max_sequence_length", 256)
        pe, ne, pooled, npooled = self._encode(
            prompt=kwargs.pop("prompt", None), prompt_2=kwargs.pop("prompt_2", None),
            prompt_3=kwargs.pop("prompt_3", None), device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, **kwargs)
        cond = {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, "prompt_embeds"),
                "pooled_projections": per_sample(pooled.to(device, dtype), n, "pooled_prompt_embeds")}
        uncond = None
        if cfg:
            uncond = {"encoder_hidden_states": per_sample(ne.to(device, dtype), n, "negative_prompt_embeds"),
                      "pooled_projections": per_sample(npooled.to(device, dtype), n, "negative_pooled_prompt_embeds")}
        return Condition(cond, uncond, scale)

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` at scalar timestep ``t`` (``1000 s``), guidance batched in."""
        if cond is None:
            raise ValueError("SD3 needs a condition (prompt_embeds and pooled_prompt_embeds)")
        m = inp.shape[0]
        batch = cond.batch(m)
        x = torch.cat([inp, inp]) if cond.rows == 2 else inp
        out = self.module(hidden_states=x, timestep=self._timestep(t, x.shape[0]), return_dict=False,
                          **batch)[0]
        return cond.guide(out)
