"""Flux Kontext: Flux.1's transformer with a reference image as extra tokens.

As ``FluxKontextPipeline.__call__`` runs it: the reference ``image`` (a PIL image, a list of
them, or a tensor in ``[0, 1]``; a tensor with the latent channels is taken as latents) is resized
to the Kontext resolution nearest its aspect ratio (``_auto_resize``, default on; off: its own
size), both sides rounded down to ``2 vae_scale_factor``, encoded by the VAE (its posterior's
mode, ``(z - shift_factor) scaling_factor``) and 2x2-packed; each model call sees
``[latents, image latents]`` along the sequence with ``img_ids`` of the image's positions carrying
1 in their first axis, and only the latents' part of the output is kept. Everything else is
Flux's (`flux`: guidance embedding, true CFG with a negative prompt, grid). The adapter runs at
the size it is given; the stock call first rescales ``height x width`` to ``max_area`` pixels
(pass ``max_area = height * width`` to it for the same size). Without ``image`` it is Flux.
"""
from __future__ import annotations

import torch

from .common import per_sample
from .flow import image_ids, pack
from .flux import FluxDenoiser

__all__ = ["FluxKontextDenoiser"]


class FluxKontextDenoiser(FluxDenoiser):
    """``pipe.transformer`` called as ``FluxKontextPipeline`` calls it (module docstring)."""

    KEYWORDS = FluxDenoiser.KEYWORDS + ("image", "max_area", "_auto_resize")
    PIPELINES = ("FluxKontextPipeline",)

    def reference_latents(self, image, auto_resize: bool = True) -> torch.Tensor:
        """The reference image as ``FluxKontextPipeline`` prepares it: unpacked latents ``[B, C, h, w]``."""
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        pipe = self.pipe
        device, dtype = self.device_dtype
        c = self.latent_channels
        if not (torch.is_tensor(image) and image.ndim == 4 and image.shape[1] == c):
            img = image[0] if isinstance(image, list) else image
            height, width = pipe.image_processor.get_default_height_width(img)
            ratio = width / height
            if auto_resize:
                _, width, height = min((abs(ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
            multiple = self.vae_scale_factor * 2
            width, height = width // multiple * multiple, height // multiple * multiple
            image = pipe.image_processor.resize(image, height, width)
            image = pipe.image_processor.preprocess(image, height, width)
        image = image.to(device=device, dtype=dtype)
        if image.shape[1] != c:
            with torch.no_grad():
                image = pipe._encode_vae_image(image=image, generator=None)  # mode ("argmax"): no draw
        return image

    def prepare(self, n, hw=None, **given):
        """Flux's conditioning plus the reference image's packed latents and positions."""
        image = given.pop("image", None)
        auto_resize = given.pop("_auto_resize", None)
        given.pop("max_area", None)  # the stock call's output size; the adapter runs at the size given
        cond = super().prepare(n, hw, **given)
        if image is None:
            return cond
        latents = self.reference_latents(image, True if auto_resize is None else bool(auto_resize))
        h, w = latents.shape[-2:]
        ids = image_ids(h, w, latents.device, latents.dtype, first=1.0)
        packed = per_sample(pack(latents), n, "image")
        for branch, shared in ((cond.cond, cond.shared), (cond.uncond, cond.uncond_shared)):
            if branch is not None:
                branch["image_latents"] = packed
                if shared is not None:
                    shared["image_ids"] = ids
        return cond

    def _model(self, x, timestep, branch, shared, hw):
        branch, shared = dict(branch), dict(shared)
        latents, ref_ids = branch.pop("image_latents", None), shared.pop("image_ids", None)
        if latents is None:
            return super()._model(x, timestep, branch, shared, hw)
        seq = x.shape[1]
        ids = torch.cat([image_ids(hw[0], hw[1], x.device, x.dtype), ref_ids])
        out = self.module(hidden_states=torch.cat([x, latents.to(x.dtype)], dim=1), timestep=timestep, img_ids=ids,
                          return_dict=False, **branch, **shared)[0]
        return out[:, :seq]
