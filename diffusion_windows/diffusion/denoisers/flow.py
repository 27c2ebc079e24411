"""What the flow-matching image adapters share: Flux's grid, 2x2 packing, two-call guidance.

Most flow-matching image pipelines of diffusers (Flux.1, Flux Kontext, Chroma, Qwen-Image,
Z-Image) build the same grid: ``sigmas = linspace(1, 1/N, N)`` passed to
``FlowMatchEulerDiscreteScheduler.set_timesteps`` with ``mu = calculate_shift`` of the image's
sequence length ``(H/2)(W/2)`` (the scheduler shifts dynamically); their latents are
``2 * (pixels // (2 vae_scale_factor))`` high and wide. `ShiftedFlowDenoiser` is that grid and
that size. `PackedDenoiser` adds the 2x2 packing of ``FluxPipeline._pack_latents`` (samples stay
``[N, C, H, W]`` outside; a scheduler step is elementwise, so stepping unpacked latents is
stepping packed ones), the model timestep ``t / 1000`` (the flow sigma, in the latents' dtype)
and guidance as two model calls combined on the packed outputs (`combine`: ``neg + s (pos - neg)``
unless a family overrides it, e.g. with `cfg_at_norm`). `shift` is ``calculate_shift`` with the
scheduler's settings, for families whose ``mu`` comes from another length. A family is then `_model` (one call on packed latents) and
`prepare` (its conditioning). Time unit everywhere: the scheduler's timestep ``1000 sigma``.
"""
from __future__ import annotations

import numpy as np
import torch

from .common import TransformerDenoiser, calculate_shift, pipeline_default

__all__ = ["ShiftedFlowDenoiser", "PackedDenoiser", "pack", "unpack", "image_ids", "true_cfg", "cfg", "cfg_at_norm",
           "two_calls"]


def pack(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/2)(W/2), 4C]`` (``FluxPipeline._pack_latents``)."""
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack` for latents of height ``h`` and width ``w``."""
    n, _, d = x.shape
    return x.view(n, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype, first: float = 0.0) -> torch.Tensor:
    """(first, row, column) of every packed position (``FluxPipeline._prepare_latent_image_ids``;
    Kontext's reference image: ``first = 1``)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 0] = first
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def true_cfg(pipe, given: dict, embeds=("negative_prompt_embeds",)) -> tuple:
    """``(scale, on)`` of "true" classifier-free guidance as Flux, Kontext and Qwen-Image decide it:
    on when ``true_cfg_scale > 1`` and a negative prompt (or all of ``embeds``) is given."""
    scale = given.get("true_cfg_scale")
    scale = float(pipeline_default(pipe, "true_cfg_scale", 1.0) if scale is None else scale)
    has_neg = given.get("negative_prompt") is not None or all(given.get(k) is not None for k in embeds)
    return scale, scale > 1 and has_neg


def cfg(pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of two outputs: ``neg + scale (pos - neg)``."""
    return neg + scale * (pos - neg)


def cfg_at_norm(pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """`cfg` rescaled to the norm of ``pos`` along the last axis (Qwen-Image's true CFG per token,
    Lumina 2's ``cfg_normalization``)."""
    out = cfg(pos, neg, scale)
    return out * (torch.norm(pos, dim=-1, keepdim=True) / torch.norm(out, dim=-1, keepdim=True))


def two_calls(call, cond, m: int, combine=cfg) -> torch.Tensor:
    """Guidance as the pipelines that make one model call per branch run it: ``call(branch, shared)`` on
    the first ``m`` rows of the positive branch and, with guidance, of the negative one, then
    ``combine(pos, neg, scale)``."""
    rows = lambda d: {k: (None if v is None else v[:m]) for k, v in d.items()}  # noqa: E731
    out = call(rows(cond.cond), cond.shared)
    if cond.uncond is None:
        return out
    shared = cond.shared if cond.uncond_shared is None else cond.uncond_shared
    return combine(out, call(rows(cond.uncond), shared), cond.scale)


class ShiftedFlowDenoiser(TransformerDenoiser):
    """Flux's grid and latent size (module docstring)."""

    #: ``calculate_shift``'s defaults where the scheduler config has none
    MAX_SHIFT = 1.15

    @property
    def multiple(self) -> int:
        return 2

    def latent_size(self, height=None, width=None) -> tuple:
        """As ``FluxPipeline.prepare_latents``: ``2 * (pixels // (vae_scale_factor * 2))``."""
        f = self.vae_scale_factor
        if height is None and width is None:
            height = width = int(getattr(self.pipe, "default_sample_size", None) or 128) * f
        h = int(height if height is not None else width)
        w = int(width if width is not None else height)
        return 2 * (h // (f * 2)), 2 * (w // (f * 2))

    def default_size(self) -> tuple:
        return self.latent_size()

    def shift(self, seq_len: int) -> float:
        """``calculate_shift`` of ``seq_len`` with the scheduler's settings (its defaults where it has none)."""
        cfg = self.pipe.scheduler.config
        return calculate_shift(int(seq_len), cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                               cfg.get("base_shift", 0.5), cfg.get("max_shift", self.MAX_SHIFT))

    def mu(self, hw, num_inference_steps=None) -> float:
        """`shift` of the sequence length ``(h/2)(w/2)``."""
        h, w = hw if hw is not None else self.default_size()
        return self.shift((int(h) // 2) * (int(w) // 2))

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """``sigmas = linspace(1, 1/N, N)`` and ``mu`` from the sequence length (a scheduler with
        its own flow sigmas, DPM-Solver's, keeps them: ``mu`` only)."""
        n = int(num_inference_steps)
        if self.pipe.scheduler.config.get("use_flow_sigmas", False):
            return {"mu": self.mu(hw, n)}
        return {"sigmas": np.linspace(1.0, 1 / n, n), "mu": self.mu(hw, n)}


class PackedDenoiser(ShiftedFlowDenoiser):
    """2x2-packed latents, timestep ``t / 1000``, guidance as two calls (module docstring)."""

    @property
    def latent_channels(self) -> int:
        return int(self.module.config.in_channels) // 4

    def pipeline_latents(self, x: torch.Tensor) -> torch.Tensor:
        return pack(x)

    def _model(self, x, timestep, branch: dict, shared: dict, hw) -> torch.Tensor:
        """One model call on packed latents ``x`` ``[m, seq, 4C]`` -> packed output (per family)."""
        raise NotImplementedError

    def combine(self, pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
        """Guidance of two packed outputs: ``neg + scale (pos - neg)``."""
        return cfg(pos, neg, scale)

    def __call__(self, inp, t, cond):
        """Velocity ``[m, C, H, W]`` for the unpacked state ``inp`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError(f"{type(self.pipe).__name__} needs a condition (a prompt or prompt_embeds)")
        m, _, h, w = inp.shape
        x = pack(inp)
        timestep = self._timestep(t, m, x.dtype) / 1000  # t.expand(B).to(latents.dtype) / 1000
        out = two_calls(lambda branch, shared: self._model(x, timestep, branch, shared, (h, w)), cond, m, self.combine)
        return unpack(out, h, w)
