"""PixArt-α and PixArt-Σ: ``PixArtTransformer2DModel`` under a VP scheduler (DPM-Solver by default).

As ``PixArtAlphaPipeline``/``PixArtSigmaPipeline.__call__`` run it: T5 ``prompt_embeds`` with
their attention masks (`encode_prompt` returns ``(embeds, mask, negative, negative mask)``);
classifier-free guidance as one batch ``[negative, positive]`` when ``guidance_scale > 1``
(default 4.5); the integer timestep broadcast to the batch. A model that takes micro-conditions
(``use_additional_conditions``: PixArt-α at 1024 px, ``sample_size == 128``) gets
``resolution = (height, width)`` and ``aspect_ratio = height / width`` in pixels, as the α
pipeline builds them; Σ passes none. The model predicts noise and a learned variance
(``out_channels = 2 C``): the first C channels are kept, after guidance. Restarts run at the
size given (no aspect-ratio binning: pass a size on PixArt's bins).
"""
from __future__ import annotations

import torch

from .common import Condition, TransformerDenoiser, per_sample

__all__ = ["PixArtDenoiser"]


class PixArtDenoiser(TransformerDenoiser):
    """``pipe.transformer`` (PixArt) called as its pipelines call it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                "negative_prompt_attention_mask", "guidance_scale", "max_sequence_length", "clean_caption")
    DEFAULT_GUIDANCE = 4.5
    PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")

    def _text(self, n, given):
        """``(cond, uncond, scale)``: embeddings and masks per sample (T5, `encode_prompt`)."""
        self._check(given)
        g = given.get
        name = type(self.pipe).__name__
        if g("prompt") is None and g("prompt_embeds") is None:
            raise ValueError(f"{name} needs prompt or prompt_embeds, got None")
        if g("prompt_embeds") is not None and g("prompt_attention_mask") is None:
            raise ValueError("prompt_embeds given without prompt_attention_mask")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {name} has no text encoder")
        scale = self._guidance(g("guidance_scale"), self.DEFAULT_GUIDANCE)
        cfg = scale > 1.0
        if cfg and not self._has_encoder() and (g("negative_prompt_embeds") is None
                                                or g("negative_prompt_attention_mask") is None):
            raise ValueError(f"guidance_scale={scale} without a text encoder needs negative_prompt_embeds and "
                             "negative_prompt_attention_mask, got None")
        device, dtype = self.device_dtype
        kwargs = {k: v for k, v in given.items() if k != "guidance_scale"}
        kwargs.setdefault("prompt", None)
        kwargs.setdefault("negative_prompt", "")
        kwargs.setdefault("clean_caption", False)
        if g("prompt") is not None:
            extra = self._pipeline_extras()
            kwargs = {**extra, **kwargs}
        pe, pmask, ne, nmask = self._encode(do_classifier_free_guidance=cfg, num_images_per_prompt=1, device=device,
                                            **kwargs)
        cond = {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, "prompt_embeds"),
                "encoder_attention_mask": per_sample(pmask.to(device), n, "prompt_attention_mask")}
        uncond = None
        if cfg:
            uncond = {"encoder_hidden_states": per_sample(ne.to(device, dtype), n, "negative_prompt_embeds"),
                      "encoder_attention_mask": per_sample(nmask.to(device), n, "negative_prompt_attention_mask")}
        return cond, uncond, scale

    def _pipeline_extras(self) -> dict:
        from .common import pipeline_default

        length = pipeline_default(self.pipe, "max_sequence_length", None)
        return {} if length is None else {"max_sequence_length": length}

    def prepare(self, n, hw=None, **given):
        """T5 conditioning (and α's micro-conditions at the latent size ``hw``) for ``n`` samples."""
        cond, uncond, scale = self._text(n, given)
        if getattr(self.module, "use_additional_conditions", False):
            h, w = hw if hw is not None else self.default_size()
            height, width = int(h) * self.vae_scale_factor, int(w) * self.vae_scale_factor
            device, dtype = self.device_dtype
            micro = {"resolution": torch.tensor([[height, width]], device=device, dtype=dtype).expand(n, -1),
                     "aspect_ratio": torch.tensor([[float(height / width)]], device=device, dtype=dtype).expand(n, -1)}
            cond.update(micro)
            if uncond is not None:
                uncond.update(micro)
        return Condition(cond, uncond, scale)

    def __call__(self, inp, t, cond):
        """Noise prediction (learned variance dropped) for ``inp`` at scalar timestep ``t``."""
        if cond is None:
            raise ValueError(f"{type(self.pipe).__name__} needs a condition (prompt_embeds)")
        m = inp.shape[0]
        batch = cond.batch(m)
        added = {"resolution": batch.pop("resolution", None), "aspect_ratio": batch.pop("aspect_ratio", None)}
        x = torch.cat([inp, inp]) if cond.rows == 2 else inp
        out = self.module(x, timestep=self._timestep(t, x.shape[0]), added_cond_kwargs=added, return_dict=False,
                          **batch)[0]
        out = cond.guide(out)
        channels = self.latent_channels
        return out[:, :channels] if self.module.config.out_channels // 2 == channels else out
