"""The UNet adapter: ``UNet2DModel`` pipelines (DDPM, DDIM, the exact denoiser) and the Stable
Diffusion family (``UNet2DConditionModel`` with ``encode_prompt``: SD 1.x/2.x, SDXL).

Text conditioning is recognised by the components (a cross-attention UNet and
``encode_prompt``), not by the pipeline class: prompt embeddings, classifier-free guidance
(one batch ``[negative, positive]``, as the pipelines do) and SDXL's pooled embeddings and time
ids, one row per sample so that restarts of many base samples share one batch.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

__all__ = ["UNetDenoiser", "TextCondition"]


@dataclass
class TextCondition:
    """Per-sample text conditioning; ``negative`` is set when guidance is on."""

    embeds: torch.Tensor
    negative: torch.Tensor | None
    added: dict | None
    negative_added: dict | None
    scale: float

    @property
    def rows(self) -> int:
        """Model rows per sample: two with classifier-free guidance."""
        return 1 if self.negative is None else 2

    def take(self, index: torch.Tensor) -> "TextCondition":
        pick = (lambda v: None if v is None else v.index_select(0, index.to(v.device)))
        pick_dict = (lambda d: None if d is None else {k: pick(v) for k, v in d.items()})
        return TextCondition(pick(self.embeds), pick(self.negative), pick_dict(self.added),
                             pick_dict(self.negative_added), self.scale)


def _per_sample(v, n: int, name: str):
    if v is None:
        return None
    if v.shape[0] == 1:
        return v.expand(n, *v.shape[1:])
    if v.shape[0] != n:
        raise ValueError(f"{name} batch {v.shape[0]} is neither 1 nor the number of samples {n}")
    return v


def pipeline_default(pipe, name: str, fallback):
    """The default of keyword ``name`` in the pipeline's own ``__call__`` (else ``fallback``)."""
    p = inspect.signature(type(pipe).__call__).parameters.get(name)
    return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback


class ModuleAdapter:
    """What every adapter is: a pipeline and its denoising module, and where that runs."""

    def __init__(self, pipe, module):
        self.pipe, self.module = pipe, module

    @property
    def device_dtype(self):
        """Its first parameter's device and dtype; for a model without parameters (the exact
        denoiser), its first buffer's device and its declared ``dtype``; else CPU fp32."""
        for tensor in self.module.parameters():
            return tensor.device, tensor.dtype
        for tensor in self.module.buffers():
            return tensor.device, getattr(self.module, "dtype", tensor.dtype)
        return torch.device("cpu"), torch.float32

    @property
    def device(self):
        return self.device_dtype[0]

    @property
    def dtype(self):
        """The dtype of the loop state (the pipeline's latents)."""
        return self.device_dtype[1]


class UNetDenoiser(ModuleAdapter):
    """``pipe.unet`` called as the scheduler expects (see `diffusion.denoisers`)."""

    # ------------------------------------------------------------------ what it is
    @property
    def is_text(self) -> bool:
        return (getattr(self.module.config, "cross_attention_dim", None) is not None
                and hasattr(self.pipe, "encode_prompt"))

    def _size(self):
        size = self.module.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def sample_shape(self, height=None, width=None) -> tuple:
        """``[C, H, W]`` of the loop state (latents for latent models)."""
        h, w = self._size()
        if height is not None:
            factor = getattr(self.pipe, "vae_scale_factor", 1) if getattr(self.pipe, "vae", None) else 1
            h, w = int(height) // factor, int(width if width is not None else height) // factor
        return int(self.module.config.in_channels), h, w

    def image_shape(self, height=None, width=None) -> tuple:
        """``[C, H, W]`` of the images the pipeline produces (at ``height x width`` pixels if given)."""
        h, w = self._size() if height is None and width is None else self.sample_shape(height, width)[1:]
        vae = getattr(self.pipe, "vae", None)
        if vae is not None:
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            return int(vae.config.out_channels), h * factor, w * factor
        return int(self.module.config.out_channels), h, w

    def check_sample(self, x, name="x_t") -> None:
        if not torch.is_tensor(x) or x.ndim != 4:
            raise ValueError(f"{name} shape {tuple(getattr(x, 'shape', ()))} is not [N, C, H, W]")
        cfg = self.module.config
        channels = getattr(cfg, "in_channels", None)
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes {channels} channels")
        if getattr(self.pipe, "vae", None) is None:
            size = self._size() if getattr(cfg, "sample_size", None) is not None else None
            if size is not None and tuple(x.shape[-2:]) != tuple(size):
                raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes size {tuple(size)}")
        else:
            factor = 2 ** (len(getattr(cfg, "block_out_channels", (0,))) - 1)
            if x.shape[-2] % factor or x.shape[-1] % factor:
                raise ValueError(f"{name} shape {tuple(x.shape)}: size must be a multiple of {factor}")

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """The grid is ``set_timesteps(N)``'s: no extra keywords."""
        return {}

    # ------------------------------------------------------------------ conditioning
    def prepare(self, n, hw=None, *, prompt=None, prompt_embeds=None, negative_prompt_embeds=None,
                guidance_scale=None, pooled_prompt_embeds=None, negative_pooled_prompt_embeds=None,
                negative_prompt=None, **other):
        """Text conditioning for ``n`` samples (embeddings of batch 1 are shared), or None."""
        pipe = self.pipe
        for key in other:
            raise ValueError(f"{key}=...: {type(pipe).__name__} restarts take only prompt, negative_prompt, "
                             "prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, "
                             "negative_pooled_prompt_embeds, guidance_scale")
        given = {"prompt": prompt, "prompt_embeds": prompt_embeds, "guidance_scale": guidance_scale,
                 "negative_prompt_embeds": negative_prompt_embeds, "negative_prompt": negative_prompt}
        if not self.is_text:
            for key, value in given.items():
                if value is not None:
                    raise ValueError(f"{key}={value!r}: pipeline {type(pipe).__name__} takes no text")
            return None
        if prompt is None and prompt_embeds is None:
            raise ValueError(f"text pipeline {type(pipe).__name__} needs prompt or prompt_embeds, got None")
        if guidance_scale is None:
            guidance_scale = pipeline_default(pipe, "guidance_scale", 7.5)
        cfg = float(guidance_scale) > 1.0
        has_encoder = (getattr(pipe, "text_encoder", None) is not None
                       or getattr(pipe, "text_encoder_2", None) is not None)
        if prompt is not None and not has_encoder:
            raise ValueError(f"prompt={prompt!r} but pipeline {type(pipe).__name__} has no text encoder")
        zeros_ok = getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        if cfg and negative_prompt_embeds is None and not has_encoder and not zeros_ok:
            raise ValueError(f"guidance_scale={guidance_scale} without a text encoder needs "
                             "negative_prompt_embeds, got None")
        device, dtype = self.device_dtype
        kwargs = dict(prompt=prompt, device=device, num_images_per_prompt=1,
                      do_classifier_free_guidance=cfg, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
                      negative_prompt_embeds=negative_prompt_embeds,
                      pooled_prompt_embeds=pooled_prompt_embeds,
                      negative_pooled_prompt_embeds=negative_pooled_prompt_embeds)
        accepted = inspect.signature(pipe.encode_prompt).parameters
        out = pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in accepted})
        pos = _per_sample(out[0].to(device, dtype), n, "prompt_embeds")
        neg = _per_sample(out[1].to(device, dtype), n, "negative_prompt_embeds") if cfg else None
        added = negative_added = None
        if getattr(self.module.config, "addition_embed_type", None) == "text_time":  # SDXL
            if len(out) < 4 or out[2] is None:
                raise ValueError("SDXL pipeline needs pooled_prompt_embeds, got None")
            hw = hw if hw is not None else self.sample_shape()[1:]
            ids = self._time_ids(hw[0], hw[1], n, device, dtype)
            added = {"text_embeds": _per_sample(out[2].to(device, dtype), n, "pooled_prompt_embeds"),
                     "time_ids": ids}
            if cfg:
                neg_ids = ids.clone()
                if neg_ids.shape[1] == 5:
                    neg_ids[:, 4] = 2.5  # refiner's negative aesthetic score
                negative_added = {"text_embeds": _per_sample(out[3].to(device, dtype), n,
                                                             "negative_pooled_prompt_embeds"),
                                  "time_ids": neg_ids}
        return TextCondition(pos, neg, added, negative_added, float(guidance_scale))

    def _time_ids(self, height: int, width: int, n: int, device, dtype):
        """SDXL micro-conditioning as its pipelines default it: original size, crop (0, 0) and
        target size (the refiner, ``requires_aesthetics_score``: aesthetic score 6 instead)."""
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        h, w = height * scale, width * scale
        refiner = getattr(self.pipe.config, "requires_aesthetics_score", False)
        ids = [h, w, 0, 0, 6.0] if refiner else [h, w, 0, 0, h, w]
        return torch.tensor([ids], device=device, dtype=dtype).expand(n, -1)

    # ------------------------------------------------------------------ the call
    def __call__(self, inp, t, cond):
        """Model output for the scaled loop state ``inp`` at scalar timestep ``t`` (guidance batched in)."""
        if cond is None:
            out = self.module(inp, t)
            return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
        m = inp.shape[0]
        enc, added = cond.embeds[:m], cond.added and {k: v[:m] for k, v in cond.added.items()}
        if cond.negative is not None:
            inp = torch.cat([inp, inp])
            enc = torch.cat([cond.negative[:m], enc])
            if added:
                added = {k: torch.cat([cond.negative_added[k][:m], v]) for k, v in added.items()}
        out = self.module(inp, t, encoder_hidden_states=enc, added_cond_kwargs=added or None, return_dict=False)[0]
        if cond.negative is not None:
            uncond, text = out.chunk(2)
            out = uncond + cond.scale * (text - uncond)
        return out
