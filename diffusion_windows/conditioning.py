"""Text conditioning for the Stable Diffusion family, recognised by its components (a
cross-attention UNet and ``encode_prompt``), not by class: prompt embeddings, classifier-free
guidance and SDXL's extra conditioning, one row per sample for batched restarts."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


def _is_text(pipe) -> bool:
    """Text-conditioned: a cross-attention UNet and ``encode_prompt`` (Stable Diffusion family)."""
    return (getattr(pipe.unet.config, "cross_attention_dim", None) is not None
            and hasattr(pipe, "encode_prompt"))


def _device_dtype(pipe):
    """Device and dtype of the pipeline's unet: its first parameter's; for a model without
    parameters (the exact denoiser), its first buffer's device and its declared ``dtype``;
    else CPU fp32."""
    for tensor in pipe.unet.parameters():
        return tensor.device, tensor.dtype
    for tensor in pipe.unet.buffers():
        return tensor.device, getattr(pipe.unet, "dtype", tensor.dtype)
    return torch.device("cpu"), torch.float32


@dataclass
class _Cond:
    """Per-sample text conditioning; ``negative`` is set when guidance is on."""

    embeds: torch.Tensor
    negative: torch.Tensor | None
    added: dict | None
    negative_added: dict | None
    scale: float

    def take(self, index: torch.Tensor) -> "_Cond":
        pick = (lambda v: None if v is None else v.index_select(0, index.to(v.device)))
        pick_dict = (lambda d: None if d is None else {k: pick(v) for k, v in d.items()})
        return _Cond(pick(self.embeds), pick(self.negative), pick_dict(self.added),
                     pick_dict(self.negative_added), self.scale)


def _per_sample(v, n: int, name: str):
    if v is None:
        return None
    if v.shape[0] == 1:
        return v.expand(n, *v.shape[1:])
    if v.shape[0] != n:
        raise ValueError(f"{name} batch {v.shape[0]} is neither 1 nor the number of samples {n}")
    return v


def _time_ids(pipe, height: int, width: int, n: int, device, dtype):
    """SDXL micro-conditioning as its pipelines default it: original size, crop (0, 0) and
    target size (the refiner, ``requires_aesthetics_score``: aesthetic score 6 instead)."""
    scale = getattr(pipe, "vae_scale_factor", 8)
    h, w = height * scale, width * scale
    refiner = getattr(pipe.config, "requires_aesthetics_score", False)
    ids = [h, w, 0, 0, 6.0] if refiner else [h, w, 0, 0, h, w]
    return torch.tensor([ids], device=device, dtype=dtype).expand(n, -1)


def _conditioning(pipe, n, hw, prompt, prompt_embeds, negative_prompt_embeds, guidance_scale,
                  pooled_prompt_embeds=None, negative_pooled_prompt_embeds=None):
    """Text conditioning for ``n`` samples (embeddings of batch 1 are shared), or None."""
    given = {"prompt": prompt, "prompt_embeds": prompt_embeds, "guidance_scale": guidance_scale,
             "negative_prompt_embeds": negative_prompt_embeds}
    if not _is_text(pipe):
        for key, value in given.items():
            if value is not None:
                raise ValueError(f"{key}={value!r}: pipeline {type(pipe).__name__} takes no text")
        return None
    if prompt is None and prompt_embeds is None:
        raise ValueError(f"text pipeline {type(pipe).__name__} needs prompt or prompt_embeds, got None")
    if guidance_scale is None:
        p = inspect.signature(type(pipe).__call__).parameters.get("guidance_scale")
        guidance_scale = p.default if p is not None else 7.5
    cfg = float(guidance_scale) > 1.0
    has_encoder = (getattr(pipe, "text_encoder", None) is not None
                   or getattr(pipe, "text_encoder_2", None) is not None)
    if prompt is not None and not has_encoder:
        raise ValueError(f"prompt={prompt!r} but pipeline {type(pipe).__name__} has no text encoder")
    zeros_ok = getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    if cfg and negative_prompt_embeds is None and not has_encoder and not zeros_ok:
        raise ValueError(f"guidance_scale={guidance_scale} without a text encoder needs "
                         "negative_prompt_embeds, got None")
    device, dtype = _device_dtype(pipe)
    kwargs = dict(prompt=prompt, device=device, num_images_per_prompt=1,
                  do_classifier_free_guidance=cfg, prompt_embeds=prompt_embeds,
                  negative_prompt_embeds=negative_prompt_embeds,
                  pooled_prompt_embeds=pooled_prompt_embeds,
                  negative_pooled_prompt_embeds=negative_pooled_prompt_embeds)
    accepted = inspect.signature(pipe.encode_prompt).parameters
    out = pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in accepted})
    pos = _per_sample(out[0].to(device, dtype), n, "prompt_embeds")
    neg = _per_sample(out[1].to(device, dtype), n, "negative_prompt_embeds") if cfg else None
    added = negative_added = None
    if getattr(pipe.unet.config, "addition_embed_type", None) == "text_time":  # SDXL
        if len(out) < 4 or out[2] is None:
            raise ValueError("SDXL pipeline needs pooled_prompt_embeds, got None")
        ids = _time_ids(pipe, hw[0], hw[1], n, device, dtype)
        added = {"text_embeds": _per_sample(out[2].to(device, dtype), n, "pooled_prompt_embeds"),
                 "time_ids": ids}
        if cfg:
            neg_ids = ids.clone()
            if neg_ids.shape[1] == 5:
                neg_ids[:, 4] = 2.5  # refiner's negative aesthetic score
            negative_added = {"text_embeds": _per_sample(out[3].to(device, dtype), n,
                                                         "negative_pooled_prompt_embeds"),
                              "time_ids": neg_ids}
    return _Cond(pos, neg, added, negative_added, float(guidance_scale))
