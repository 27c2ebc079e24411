"""Flux.2 [dev]: ``Flux2Transformer2DModel`` on patchified, batch-normalised latents.

As ``Flux2Pipeline.__call__`` runs it: the loop state is the VAE latents 2x2-patchified to
``[N, 4C, H/2, W/2]`` and normalised by the VAE's batch-norm statistics (the pipeline draws its
noise in this shape; ``latents=`` takes it), flattened to tokens ``[N, (H/2)(W/2), 4C]`` for the
model with ``img_ids`` (0, row, column, 0) and ``txt_ids`` (0, 0, 0, token); Mistral-3
``prompt_embeds`` (`encode_prompt`, or given); the timestep is ``1000 s`` divided by 1000 and
``guidance = guidance_scale`` (default 4.0) is an embedding: one model row per sample, no
classifier-free guidance. The grid is ``sigmas = linspace(1, 1/N, N)`` with Flux.2's empirical
``mu`` (``compute_empirical_mu`` of the token count and N). Decoding undoes the batch norm and the
patchify before the VAE (`images.decode`). Reference images (``image=``: a PIL image or a list)
are prepared as the pipeline prepares them (above 1 MP resized to that area, both sides rounded
down to ``2 vae_scale_factor``, cropped, encoded, patchified and normalised) and appended as tokens
whose ids carry 10, 20, ... in their first axis; only the latents' part of the output is kept.
"""
from __future__ import annotations

import torch

from .common import Condition, per_sample
from .flow import ShiftedFlowDenoiser

__all__ = ["Flux2Denoiser", "tokens", "token_ids"]


def tokens(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, HW, C]`` (``Flux2Pipeline._pack_latents``)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).permute(0, 2, 1)


def token_ids(n: int, h: int, w: int, device) -> torch.Tensor:
    """(0, row, column, 0) of every token, ``[n, HW, 4]`` (``Flux2Pipeline._prepare_latent_ids``)."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return ids.unsqueeze(0).expand(n, -1, -1).to(device)


class Flux2Denoiser(ShiftedFlowDenoiser):
    """``pipe.transformer`` (Flux.2) called as ``Flux2Pipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "prompt_embeds", "guidance_scale", "max_sequence_length", "text_encoder_out_layers", "image")
    PIPELINES = ("Flux2Pipeline",)

    @property
    def multiple(self) -> int:
        return 1

    def latent_size(self, height=None, width=None) -> tuple:
        """The patchified latents: ``pixels // (2 vae_scale_factor)``."""
        h, w = super().latent_size(height, width)
        return h // 2, w // 2

    def image_shape(self, height=None, width=None) -> tuple:
        c, h, w = super().image_shape(height, width)
        return c, 2 * h, 2 * w

    def mu(self, hw, num_inference_steps=None) -> float:
        """``compute_empirical_mu`` of the token count and the step count (Flux.2's shift)."""
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        h, w = hw if hw is not None else self.default_size()
        return compute_empirical_mu(int(h) * int(w), int(num_inference_steps))

    def pipeline_latents(self, x):
        return tokens(x)

    def call_latents(self, x):
        return x  # Flux2Pipeline packs the latents it is given

    def reference(self, image) -> tuple:
        """Reference images as ``Flux2Pipeline`` prepares them: ``(tokens [1, L, C], ids [1, L, 4])``."""
        pipe = self.pipe
        processed = []
        for img in image if isinstance(image, list) else [image]:
            pipe.image_processor.check_image_input(img)
            width, height = img.size
            if width * height > 1024 * 1024:
                img = pipe.image_processor._resize_to_target_area(img, 1024 * 1024)
                width, height = img.size
            multiple = self.vae_scale_factor * 2
            width, height = width // multiple * multiple, height // multiple * multiple
            processed.append(pipe.image_processor.preprocess(img, height=height, width=width, resize_mode="crop"))
        with torch.no_grad():
            return pipe.prepare_image_latents(processed, batch_size=1, generator=None, device=self.device,
                                              dtype=pipe.vae.dtype)

    def prepare(self, n, hw=None, **given):
        """Mistral-3 conditioning, the guidance embedding and reference images for ``n`` samples."""
        self._check(given)
        g = given.get
        self._check_text(given)
        device, dtype = self.device_dtype
        extra = {"text_encoder_out_layers": g("text_encoder_out_layers")} if g("text_encoder_out_layers") else {}
        pe, ids = self._encode(prompt=g("prompt"), prompt_embeds=g("prompt_embeds"), device=device,
                               num_images_per_prompt=1, max_sequence_length=g("max_sequence_length") or 512, **extra)
        scale = self._guidance(g("guidance_scale"), 4.0)
        cond = {"encoder_hidden_states": per_sample(pe.to(device, dtype), n, "prompt_embeds"),
                "txt_ids": per_sample(ids.to(device), n, "prompt_embeds"),
                "guidance": torch.full([n], scale, device=device, dtype=torch.float32)}
        if g("image") is not None:
            tokens_, ids_ = self.reference(g("image"))
            cond["image_latents"], cond["image_ids"] = per_sample(tokens_, n, "image"), per_sample(ids_, n, "image")
        return Condition(cond, None, scale)

    def __call__(self, inp, t, cond):
        """Velocity ``[m, C, H, W]`` for the state ``inp`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("Flux.2 needs a condition (a prompt or prompt_embeds)")
        m, c, h, w = inp.shape
        x = tokens(inp)
        timestep = self._timestep(t, m, x.dtype) / 1000
        kw = {k: v[:m] for k, v in cond.cond.items()}
        ids = token_ids(m, h, w, x.device)
        if "image_latents" in kw:  # reference tokens after the latents', as Flux2Pipeline appends them
            x = torch.cat([x, kw.pop("image_latents")], dim=1)
            ids = torch.cat([ids, kw.pop("image_ids")], dim=1)
        out = self.module(hidden_states=x.to(self.device_dtype[1]), timestep=timestep, img_ids=ids, return_dict=False,
                          **kw)[0]
        return out[:, :h * w].permute(0, 2, 1).reshape(m, c, h, w)
