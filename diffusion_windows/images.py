"""Real images as base samples (``--images DIR``): files -> float tensor [N, C, H, W] in [0, 1].

Images are resized (bilinear, antialiased) to the pipeline's output size and converted to
its number of output channels (1 for the bundled digits model, 3 for latent models).
"""
from __future__ import annotations

import numpy as np
import torch

from .options import list_images


def output_shape(pipe) -> tuple[int, int, int]:
    """(channels, height, width) of the images a pipeline produces."""
    size = pipe.unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return int(vae.config.out_channels), h * factor, w * factor
    return int(pipe.unet.config.out_channels), h, w


def load_images(folder, pipe) -> torch.Tensor:
    from PIL import Image

    c, h, w = output_shape(pipe)
    out = []
    for path in list_images(folder):
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        x = torch.nn.functional.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
        out.append(x.clamp(0, 1))
    return torch.stack(out)
