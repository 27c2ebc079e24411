"""Wan 2.1 / 2.2 text-to-video: ``WanTransformer3DModel`` under a flow-matching scheduler.

As ``WanPipeline.__call__`` runs it: latents ``[N, 16, F, H, W]`` in float32 (cast to the
transformer's dtype for each call); the timestep is the scheduler's (``1000 s``, a float)
broadcast to the batch (Wan 2.2's ``expand_timesteps``: one per latent patch); UMT5
``prompt_embeds`` (`encode_prompt`, or given); classifier-free guidance when
``guidance_scale > 1`` (default 5.0) as *two* calls, conditional then unconditional (not one
batch); the scheduler's own grid (FlowMatch Euler with ``shift``, or UniPC / DPM-Solver with
``flow_shift``). Wan 2.2's two experts: ``transformer`` at ``t >= boundary_ratio * T`` with
``guidance_scale``, ``transformer_2`` below with ``guidance_scale_2``. The VAE decodes
``z * latents_std + latents_mean`` (`images.decode`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import Condition
from .video import VideoDenoiser

__all__ = ["WanDenoiser", "WanCondition"]


@dataclass
class WanCondition(Condition):
    """`Condition` with Wan 2.2's second guidance scale (for ``transformer_2``)."""

    scale_2: float = 1.0

    def take(self, index: torch.Tensor) -> "WanCondition":
        base = super().take(index)
        return WanCondition(base.cond, base.uncond, base.scale, base.shared, base.uncond_shared, base.order,
                            self.scale_2)


class WanDenoiser(VideoDenoiser):
    """``pipe.transformer`` (Wan) called as ``WanPipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "guidance_scale_2", "max_sequence_length")
    PIPELINES = ("WanPipeline", "WanVideoToVideoPipeline")

    @property
    def dtype(self):
        """Wan's loop state is float32 whatever the transformer's dtype."""
        return torch.float32

    @property
    def boundary(self):
        """The timestep below which ``transformer_2`` runs (None: one transformer)."""
        ratio = getattr(self.pipe.config, "boundary_ratio", None)
        if ratio is None or getattr(self.pipe, "transformer_2", None) is None:
            return None
        return float(ratio) * self.pipe.scheduler.config.num_train_timesteps

    def prepare(self, n, hw=None, **given):
        """UMT5 conditioning for ``n`` samples (embeddings of batch 1 are shared)."""
        self._check(given)
        g = given.get
        scale = self._guidance(g("guidance_scale"), 5.0)
        if g("guidance_scale_2") is not None and self.boundary is None:
            raise ValueError(f"guidance_scale_2={g('guidance_scale_2')} needs Wan 2.2's second transformer "
                             "(transformer_2 and boundary_ratio); this pipeline has one")
        scale_2 = scale if g("guidance_scale_2") is None else float(g("guidance_scale_2"))
        cond, uncond = self._embeds_condition(given, n, scale, 512, self.device, self.module.dtype)
        return WanCondition(cond, uncond, scale, scale_2=scale_2)

    def _timesteps(self, t, x) -> torch.Tensor:
        t = (t if torch.is_tensor(t) else torch.tensor(t)).reshape(()).to(self.device)
        if getattr(self.pipe.config, "expand_timesteps", False):  # Wan 2.2 TI2V: one timestep per latent patch
            f, h, w = x.shape[2], x.shape[3] // 2, x.shape[4] // 2
            return (torch.ones(f, h, w, device=self.device) * t).flatten().unsqueeze(0).expand(x.shape[0], -1)
        return t.expand(x.shape[0])

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` at scalar timestep ``t`` (``1000 s``), guidance applied."""
        if cond is None:
            raise ValueError("Wan needs a condition (prompt_embeds)")
        m = inp.shape[0]
        module, scale = self.module, cond.scale
        boundary = self.boundary
        if boundary is not None and float(t) < boundary:
            module, scale = self.pipe.transformer_2, cond.scale_2
        x = inp.to(module.dtype)
        ts = self._timesteps(t, x)
        out = module(hidden_states=x, timestep=ts, encoder_hidden_states=cond.cond["encoder_hidden_states"][:m],
                     return_dict=False)[0]
        if cond.uncond is None:
            return out
        unc = module(hidden_states=x, timestep=ts, encoder_hidden_states=cond.uncond["encoder_hidden_states"][:m],
                     return_dict=False)[0]
        return unc + scale * (out - unc)
