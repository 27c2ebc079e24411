"""What the video adapters share: clips' shapes, frames, and the check of a sample.

A video pipeline's loop state is ``[N, C, F, H, W]`` (latent channels, latent frames, latent
height and width) outside the adapter, whatever layout its transformer takes (CogVideoX's is
``[N, F, C, H, W]``: its adapter permutes inside the call). ``num_frames`` counts decoded
frames; the VAE compresses ``1 + 4 k`` frames to ``1 + k`` latent frames (Wan, CogVideoX:
``vae_scale_factor_temporal``). Sizes are pixels, as in the pipelines' ``height``/``width``.

`VideoDenoiser` is the base of the video adapters: `sample_shape(height, width, num_frames)`
(the loop state ``[C, F, H, W]``), `image_shape(...)` (decoded clips ``[F, C, H, W]``), the
pipeline's default size and frames, and `check_sample` (5-D, the model's channels, a multiple
of the patch size).
"""
from __future__ import annotations

import torch

from .common import TransformerDenoiser, pipeline_default

__all__ = ["VideoDenoiser"]


class VideoDenoiser(TransformerDenoiser):
    """Base of the video adapters (module docstring)."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (``vae_scale_factor_spatial``)."""
        return int(getattr(self.pipe, "vae_scale_factor_spatial", None) or 8)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame (``vae_scale_factor_temporal``)."""
        return int(getattr(self.pipe, "vae_scale_factor_temporal", None) or 4)

    @property
    def patch(self) -> tuple:
        """``(frames, height, width)`` of one transformer patch."""
        p = self.module.config.patch_size
        if isinstance(p, (tuple, list)):
            return tuple(int(v) for v in p)
        return int(getattr(self.module.config, "patch_size_t", None) or 1), int(p), int(p)

    @property
    def multiple(self) -> int:
        return self.patch[1]

    def default_frames(self) -> int:
        """The pipeline's default ``num_frames`` (decoded frames)."""
        frames = pipeline_default(self.pipe, "num_frames", None)
        if frames is None:
            frames = getattr(self.module.config, "sample_frames", None) or 49
        return int(frames)

    def default_size(self) -> tuple:
        """The pipeline's default latent ``(h, w)`` (its ``height``/``width`` defaults, else the
        transformer's ``sample_height``/``sample_width`` in latent pixels)."""
        h, w = pipeline_default(self.pipe, "height", None), pipeline_default(self.pipe, "width", None)
        if h is not None and w is not None:
            return int(h) // self.vae_scale_factor, int(w) // self.vae_scale_factor
        c = self.module.config
        return int(c.sample_height), int(c.sample_width)

    def latent_frames(self, num_frames=None) -> int:
        """Latent frames of ``num_frames`` decoded frames (None: the pipeline's default)."""
        f = self.default_frames() if num_frames is None else int(num_frames)
        if f < 1:
            raise ValueError(f"num_frames {num_frames!r} must be >= 1")
        return (f - 1) // self.temporal_factor + 1

    def sample_shape(self, height=None, width=None, num_frames=None) -> tuple:
        """``[C, F, H, W]`` of the loop state (latents) for clips of ``num_frames`` frames of
        ``height x width`` pixels (None: the pipeline's defaults)."""
        h, w = self.latent_size(height, width)
        return self.latent_channels, self.latent_frames(num_frames), h, w

    def image_shape(self, height=None, width=None, num_frames=None) -> tuple:
        """``[F, C, H, W]`` of the clips the pipeline decodes."""
        c, f, h, w = self.sample_shape(height, width, num_frames)
        vae = getattr(self.pipe, "vae", None)
        channels = int(vae.config.out_channels) if vae is not None else 3
        return (f - 1) * self.temporal_factor + 1, channels, h * self.vae_scale_factor, w * self.vae_scale_factor

    def check_sample(self, x, name="x_t") -> None:
        if not torch.is_tensor(x) or x.ndim != 5:
            raise ValueError(f"{name} shape {tuple(getattr(x, 'shape', ()))} is not [N, C, F, H, W] (video latents)")
        if x.shape[1] != self.latent_channels:
            raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes {self.latent_channels} channels")
        pt, ph, pw = self.patch
        if x.shape[-2] % ph or x.shape[-1] % pw:
            raise ValueError(f"{name} shape {tuple(x.shape)}: height and width must be multiples of {ph}")
        if x.shape[2] % pt:
            raise ValueError(f"{name} shape {tuple(x.shape)}: latent frames must be a multiple of {pt}")
