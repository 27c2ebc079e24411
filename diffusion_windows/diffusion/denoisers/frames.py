"""Clips through an image UNet: a ``UNet2DModel`` whose channels are a clip's frames.

The bundled video default (`diffusion.default_video`) is such a model: a clip ``[N, 1, F, H, W]``
(the loop state, as every video adapter keeps it) enters the UNet as ``[N, F, H, W]`` and its
output is reshaped back; the UNet's convolutions mix frames as they mix channels. Chosen by the
pipeline class (`denoisers.PIPELINE_ADAPTERS`), since the module is a plain ``UNet2DModel``.
"""
from __future__ import annotations

import torch

from .unet import UNetDenoiser

__all__ = ["FramesUNetDenoiser"]


class FramesUNetDenoiser(UNetDenoiser):
    """``pipe.unet`` (frames as channels) called on clips ``[N, C, F, H, W]`` (module docstring)."""

    @property
    def channels(self) -> int:
        return int(getattr(self.pipe.config, "channels", 1))

    @property
    def frames(self) -> int:
        return int(self.module.config.in_channels) // self.channels

    def sample_shape(self, height=None, width=None, num_frames=None) -> tuple:
        """``[C, F, H, W]`` of a clip (one size and frame count: the model's)."""
        if num_frames is not None and int(num_frames) != self.frames:
            raise ValueError(f"num_frames {num_frames} does not match the model: it makes {self.frames} frames")
        h, w = self._size()
        return self.channels, self.frames, h, w

    def image_shape(self, height=None, width=None, num_frames=None) -> tuple:
        c, f, h, w = self.sample_shape(height, width, num_frames)
        return f, c, h, w

    def check_sample(self, x, name="x_t") -> None:
        shape = (self.channels, self.frames, *self._size())
        if not torch.is_tensor(x) or x.ndim != 5 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} shape {tuple(getattr(x, 'shape', ()))} is not [N, {', '.join(map(str, shape))}]")

    def __call__(self, inp, t, cond):
        n, c, f, h, w = inp.shape
        out = super().__call__(inp.reshape(n, c * f, h, w), t, cond)
        return out.reshape(n, c, f, h, w)
