"""HunyuanVideo text-to-video: ``HunyuanVideoTransformer3DModel`` under a flow-matching scheduler.

As ``HunyuanVideoPipeline.__call__`` runs it: latents ``[N, C, F, H, W]`` in float32 (cast to the
transformer's dtype per call); the timestep is the scheduler's (``1000 s``) broadcast to the batch;
Llama ``prompt_embeds`` with their ``prompt_attention_mask`` and CLIP ``pooled_prompt_embeds``
(`encode_prompt`, or given); guidance is an *embedding* (``guidance_scale * 1000``, default 6),
not a batch; with ``true_cfg_scale > 1`` and a negative prompt, a second call on the negative
conditioning (``neg + true_cfg_scale (pos - neg)``). The grid is the pipeline's:
``sigmas = linspace(1, 0, N + 1)[:-1]`` through the scheduler's shift (`grid_kwargs`). The VAE
decodes ``z / scaling_factor`` (`images.decode`).
"""
from __future__ import annotations

import numpy as np
import torch

from .common import Condition, per_sample
from .video import VideoDenoiser

__all__ = ["HunyuanVideoDenoiser"]


class HunyuanVideoDenoiser(VideoDenoiser):
    """``pipe.transformer`` (HunyuanVideo) called as ``HunyuanVideoPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2", "prompt_embeds", "pooled_prompt_embeds",
                "prompt_attention_mask", "negative_prompt_embeds", "negative_pooled_prompt_embeds",
                "negative_prompt_attention_mask", "guidance_scale", "true_cfg_scale", "max_sequence_length")
    PIPELINES = ("HunyuanVideoPipeline",)

    @property
    def dtype(self):
        """HunyuanVideo's loop state is float32 whatever the transformer's dtype."""
        return torch.float32

    @property
    def patch(self) -> tuple:
        c = self.module.config
        return int(c.patch_size_t), int(c.patch_size), int(c.patch_size)

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """The pipeline's grid: ``sigmas = linspace(1, 0, N + 1)[:-1]`` (shifted by the scheduler)."""
        return {"sigmas": np.linspace(1.0, 0.0, int(num_inference_steps) + 1)[:-1]}

    def _branch(self, device, dtype, n, given, prefix=""):
        g = lambda k: given.get(prefix + k)  # noqa: E731
        pe, pooled, mask = self._encode(prompt=g("prompt"),
                                        prompt_2=given.get(prefix + "prompt_2"), prompt_embeds=g("prompt_embeds"),
                                        pooled_prompt_embeds=g("pooled_prompt_embeds"),
                                        prompt_attention_mask=g("prompt_attention_mask"), device=device,
                                        num_videos_per_prompt=1, max_sequence_length=given.get("max_sequence_length")
                                        or 256)
        return {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, prefix + "prompt_embeds"),
                "encoder_attention_mask": per_sample(mask.to(device, dtype), n, prefix + "prompt_attention_mask"),
                "pooled_projections": per_sample(pooled.to(device, dtype), n, prefix + "pooled_prompt_embeds")}

    def prepare(self, n, hw=None, **given):
        """Llama and CLIP conditioning for ``n`` samples; the guidance scale rides in ``shared``."""
        self._check(given)
        g = given.get
        if g("prompt") is None and (g("prompt_embeds") is None or g("pooled_prompt_embeds") is None
                                    or g("prompt_attention_mask") is None):
            raise ValueError(f"{type(self.pipe).__name__} needs prompt, or prompt_embeds with pooled_prompt_embeds "
                             "and prompt_attention_mask")
        if g("prompt") is not None and not self._has_encoder():
            raise ValueError(f"prompt={g('prompt')!r} but pipeline {type(self.pipe).__name__} has no text encoder")
        device, dtype = self.device, self.module.dtype
        true_cfg = float(g("true_cfg_scale") or 1.0)
        has_neg = g("negative_prompt") is not None or (g("negative_prompt_embeds") is not None
                                                        and g("negative_pooled_prompt_embeds") is not None)
        cond = self._branch(device, dtype, n, given)
        uncond = self._branch(device, dtype, n, given, "negative_") if true_cfg > 1 and has_neg else None
        guidance = self._guidance(g("guidance_scale"), 6.0)
        return Condition(cond, uncond, true_cfg, shared={"guidance": guidance})

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` at scalar timestep ``t`` (``1000 s``), true CFG applied."""
        if cond is None:
            raise ValueError("HunyuanVideo needs a condition (prompt_embeds)")
        m = inp.shape[0]
        x = inp.to(self.module.dtype)
        t = (t if torch.is_tensor(t) else torch.tensor(t)).reshape(()).to(self.device)
        ts = t.expand(m).to(inp.dtype)
        guidance = torch.full((m,), float(cond.shared["guidance"]), dtype=self.module.dtype, device=self.device)
        guidance = guidance * 1000.0
        def call(branch):
            return self.module(hidden_states=x, timestep=ts, guidance=guidance, return_dict=False,
                               **{k: v[:m] for k, v in branch.items()})[0]

        out = call(cond.cond)
        if cond.uncond is None:
            return out
        neg = call(cond.uncond)
        return neg + cond.scale * (out - neg)
