"""Images <-> model space: `decode`, `encode` (each VAE with its own scaling and shift), and
real images as base samples (`load_images`, ``--images DIR``).

Model space: latents for latent models (``z * scaling_factor`` after ``shift_factor`` or
``latents_mean``/``latents_std``; Flux.2: 2x2-patchified, then its VAE's batch norm; Qwen-Image's
frame VAE: one frame; SD3 and Flux shift, Sana's ``AutoencoderDC`` only scales and
encodes deterministically; Wan's VAE has no ``scaling_factor``: 1), ``2 x - 1`` pixels
otherwise; images are ``[N, C, H, W]`` in ``[0, 1]``. Video latents are ``[N, C, F, H, W]``
(Wan, CogVideoX) and decode to clips ``[N, F, C, H, W]`` in ``[0, 1]`` (the layout of
diffusers' ``output_type="pt"`` videos and of the clip classifiers); `encode` takes clips. `decode` runs in chunks of at most ``batch_size`` images and moves each chunk's
images to ``device`` (default: where they were decoded), so memory on the GPU never grows
with the number of samples. A fp16 VAE whose config says ``force_upcast`` decodes in float32
as diffusers' pipelines do (SDXL's VAE overflows to NaN in fp16). NaN survives: a decoded
image that is not finite stays so, for the caller to refuse.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["decode", "encode", "load_images", "image_shape"]


class _upcast:
    """Run a fp16 VAE whose config says ``force_upcast`` in float32, then cast it back."""

    def __init__(self, vae):
        self.vae = vae
        self.needed = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))

    def __enter__(self):
        if self.needed:
            self.vae.to(torch.float32)

    def __exit__(self, *exc):
        if self.needed:
            self.vae.to(torch.float16)


def _frames(vae) -> bool:
    """A VAE of frames ``[B, C, F, H, W]`` (Qwen-Image's, Wan's): image latents are one frame of it."""
    return "z_dim" in vae.config and "temperal_downsample" in vae.config


def _batch_norm(vae, z):
    """Flux.2's VAE: latents are 2x2-patchified and normalised by its batch-norm statistics: ``(mean, std)``."""
    bn = getattr(vae, "bn", None)
    if bn is None or getattr(bn, "running_mean", None) is None or "batch_norm_eps" not in vae.config:
        return None
    view = lambda v: v.view(1, -1, 1, 1).to(z.device, z.dtype)  # noqa: E731
    return view(bn.running_mean), view(torch.sqrt(bn.running_var + vae.config.batch_norm_eps))


def _patchify(z):
    n, c, h, w = z.shape
    return z.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)


def _unpatchify(z):
    n, c, h, w = z.shape
    return z.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, h * 2, w * 2)


def _latent_stats(cfg, z, vae=None):
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is None and torch.is_tensor(getattr(vae, "latents_mean", None)):  # LTX's VAE keeps them as buffers
        mean, std = vae.latents_mean.tolist(), vae.latents_std.tolist()
    if mean is None or std is None:
        return None
    shape = (1, -1) + (1,) * (z.ndim - 2)  # [1, C, 1, 1] for images, [1, C, 1, 1, 1] for video latents
    view = lambda v: torch.tensor(v, device=z.device, dtype=z.dtype).view(shape)  # noqa: E731
    return view(mean), view(std)


def _scaling(cfg) -> float:
    """The VAE's ``scaling_factor`` (Wan's VAE has none: its latents are normalised by mean and std only)."""
    return getattr(cfg, "scaling_factor", None) or 1.0


@torch.inference_mode()
def decode(pipe, x, *, batch_size: int | None = None, device=None):
    """Model-space samples -> images in [0, 1] (module docstring).

    Example::

        images = decode(pipe, traj.final, batch_size=16, device="cpu")   # [N, C, H, W] in [0, 1]
    """
    vae = getattr(pipe, "vae", None)
    chunks = x.split(int(batch_size)) if batch_size else (x,)
    out = []
    for chunk in chunks:
        if vae is None:
            images = chunk.float() / 2 + 0.5
        else:
            cfg = vae.config
            with _upcast(vae):
                z = chunk.to(vae.device, vae.dtype)
                stats, bn = _latent_stats(cfg, z, vae), _batch_norm(vae, z)
                if bn is not None:
                    z = _unpatchify(z * bn[1] + bn[0])
                elif stats is not None:
                    z = z * stats[1] / _scaling(cfg) + stats[0]
                else:
                    z = z / _scaling(cfg) + (getattr(cfg, "shift_factor", None) or 0.0)
                one_frame = z.ndim == 4 and _frames(vae)  # an image through a frame VAE: one frame
                # a timestep-conditioned VAE (LTX 0.9.1+) decodes at its pipeline's default decode_timestep, 0
                extra = ((torch.zeros(len(z), device=z.device, dtype=z.dtype),)
                         if getattr(cfg, "timestep_conditioning", False) else ())
                images = vae.decode(z[:, :, None] if one_frame else z, *extra, return_dict=False)[0]
                images = (images[:, :, 0] if one_frame else images).float() / 2 + 0.5
        if images.ndim == 5:  # a video VAE decodes [N, C, F, H, W]: clips are [N, F, C, H, W]
            images = images.permute(0, 2, 1, 3, 4)
        images = torch.where(torch.isfinite(images), images.clamp(0, 1), images)
        out.append(images if device is None else images.to(device))
    return torch.cat(out) if len(out) > 1 else out[0]


@torch.inference_mode()
def encode(pipe, images, *, generator=None):
    """Images in [0, 1] -> model space (pixel models: ``2 x - 1``; latent models: the VAE
    posterior's mode, or a draw with ``generator``, times ``scaling_factor``).

    Example::

        x0 = encode(pipe, images)           # images in [0, 1] -> model space
    """
    from .denoisers import denoiser

    den = denoiser(pipe)
    device, dtype = den.device, den.dtype
    vae = getattr(pipe, "vae", None)
    video = len(den.sample_shape()) == 4  # [C, F, H, W]: clips [N, F, C, H, W] in, [N, C, F, H, W] to the VAE
    if video and torch.is_tensor(images) and images.ndim == 5:
        images = images.permute(0, 2, 1, 3, 4)
    if vae is None:
        den.check_sample(images, "images")
        return (images * 2 - 1).to(device, dtype)
    frames = not video and _frames(vae)  # an image through a frame VAE (Qwen-Image): one frame
    channels = vae.config.get("input_channels", 3) if frames else vae.config.in_channels
    if not torch.is_tensor(images) or images.ndim != (5 if video else 4) or images.shape[1] != channels:
        raise ValueError(f"images shape {tuple(getattr(images, 'shape', ()))}: the VAE takes "
                         + (f"clips [N, F, {channels}, H, W]" if video else f"[N, {channels}, H, W]"))
    with _upcast(vae):
        pixels = (images * 2 - 1).to(vae.device, vae.dtype)
        encoded = vae.encode(pixels[:, :, None] if frames else pixels)
        posterior = getattr(encoded, "latent_dist", None)
        if posterior is None:  # AutoencoderDC: a deterministic encoder
            z = encoded.latent if hasattr(encoded, "latent") else encoded[0]
        else:
            z = posterior.sample(generator) if generator is not None else posterior.mode()
        z = z[:, :, 0] if frames else z
        cfg = vae.config
        stats, bn = _latent_stats(cfg, z, vae), _batch_norm(vae, z)
        if bn is not None:
            z = _patchify(z)
            z = (z - bn[0].view(1, -1, 1, 1)) / bn[1]
        elif stats is not None:
            z = (z - stats[0]) * _scaling(cfg) / stats[1]
        else:
            z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * _scaling(cfg)
    return z.to(device, dtype)


def image_shape(pipe, height=None, width=None) -> tuple[int, int, int]:
    """(channels, height, width) of the images a pipeline produces (at ``height x width`` if given)."""
    from .denoisers import denoiser

    den = denoiser(pipe)
    return den.image_shape() if height is None and width is None else den.image_shape(height, width)


def load_images(folder, pipe, height=None, width=None) -> torch.Tensor:
    """The image files of ``folder`` (sorted by name), resized (bilinear, antialiased) to the
    pipeline's output size (or ``height x width``) and converted to its channels: a float tensor
    [N, C, H, W] in [0, 1]."""
    from PIL import Image

    from ..options import list_images

    c, h, w = image_shape(pipe, height, width)
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
