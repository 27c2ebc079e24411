"""HiDream-I1: ``HiDreamImageTransformer2DModel`` (T5 + Llama-3 layers + pooled CLIP, negated output).

As ``HiDreamImagePipeline.__call__`` runs it: latents ``[N, C, H, W]`` unpacked (the model
patches them), ``2 * (pixels // (2 vae_scale_factor))`` high and wide; the timestep is the
scheduler's own (``1000 s``); conditioning is T5 ``prompt_embeds_t5`` ``[B, L, D]``, the Llama-3
hidden layers ``prompt_embeds_llama3`` ``[layers, B, L, D]`` (batch on axis 1) and pooled CLIP
``pooled_prompt_embeds`` (`encode_prompt`, or given); classifier-free guidance when
``guidance_scale > 1`` (default 5.0) as one batch ``[negative, positive]``, the model's output
negated *before* the combination ``neg + s (pos - neg)``. The grid is the scheduler's own
(FlowMatch Euler, or UniPC with flow sigmas, which the pipeline also takes), with
``mu = calculate_shift(transformer.max_seq)`` where the scheduler shifts dynamically. The stock call first rescales ``height x width`` to the area of its
default size; the adapter runs at the size it is given (the default size: the same).
"""
from __future__ import annotations

import torch

from .common import Condition, calculate_shift, per_sample
from .flow import ShiftedFlowDenoiser

__all__ = ["HiDreamDenoiser"]

_EMBEDS = ("prompt_embeds_t5", "prompt_embeds_llama3", "pooled_prompt_embeds")


class HiDreamDenoiser(ShiftedFlowDenoiser):
    """``pipe.transformer`` (HiDream-I1) called as ``HiDreamImagePipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "prompt_2", "prompt_3", "prompt_4", "negative_prompt", "negative_prompt_2",
                "negative_prompt_3", "negative_prompt_4", *_EMBEDS, "negative_prompt_embeds_t5",
                "negative_prompt_embeds_llama3", "negative_pooled_prompt_embeds", "guidance_scale",
                "max_sequence_length")
    PIPELINES = ("HiDreamImagePipeline",)

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """The scheduler's own grid; ``mu`` of the model's ``max_seq`` where it shifts dynamically."""
        if not self.pipe.scheduler.config.get("use_dynamic_shifting", False):
            return {}
        return {"mu": calculate_shift(self.module.max_seq)}

    def prepare(self, n, hw=None, **given):
        """T5, Llama-3 and pooled CLIP conditioning with classifier-free guidance for ``n`` samples."""
        self._check(given)
        g = given.get
        scale, cfg = self._guided(given, 5.0, _EMBEDS, ("negative_prompt_embeds_t5", "negative_prompt_embeds_llama3",
                                                        "negative_pooled_prompt_embeds"))
        device, dtype = self.device_dtype
        kwargs = {k: v for k, v in given.items() if k != "guidance_scale"}
        kwargs.setdefault("max_sequence_length", 128)
        t5, nt5, llama, nllama, pooled, npooled = self._encode(
            device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg, **kwargs)

        def branch(t5_, llama_, pooled_, what):
            return {"encoder_hidden_states_t5": per_sample(t5_.to(device, dtype), n, what + "_t5"),
                    "encoder_hidden_states_llama3": per_sample(llama_.transpose(0, 1).to(device, dtype), n,
                                                               what + "_llama3"),
                    "pooled_embeds": per_sample(pooled_.to(device, dtype), n, "pooled " + what)}

        cond = branch(t5, llama, pooled, "prompt_embeds")
        uncond = branch(nt5, nllama, npooled, "negative_prompt_embeds") if cfg else None
        return Condition(cond, uncond, scale)

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` at scalar timestep ``t`` (``1000 s``), guidance batched in."""
        if cond is None:
            raise ValueError("HiDream needs a condition (a prompt or its embeddings)")
        batch = cond.batch(inp.shape[0])
        batch["encoder_hidden_states_llama3"] = batch["encoder_hidden_states_llama3"].transpose(0, 1)
        x = torch.cat([inp, inp]) if cond.rows == 2 else inp
        out = self.module(hidden_states=x, timesteps=self._timestep(t, x.shape[0]), return_dict=False, **batch)[0]
        return cond.guide(-out)
