"""CogView 4: ``CogView4Transformer2DModel``, fed *unshifted* integer timesteps on a shifted grid.

``CogView4Pipeline.__call__`` builds its grid as ``timesteps = int(linspace(1000, 1, N))`` and
``sigmas = timesteps / 1000``, passes both with ``mu = sqrt(seq / 256) max_shift + base_shift``
(``seq``: the latent's patch count) to the scheduler, which shifts the sigmas (its
``time_shift_type``, "linear" in CogView 4's config) and keeps the timesteps: the model sees the
unshifted ``t`` while the Euler step uses the shifted ``s``. The toolkit's time is the noise level
``1000 s`` (`grid_kwargs` passes the same sigmas without the timesteps, so the scheduler's
timesteps are ``1000 s``: the steps are the pipeline's); the adapter maps ``s`` back through the
inverse shift to the timestep the model takes, ``1000 u`` (on the grid exactly the pipeline's
integer; off it the exact unshifted time, which the stock call, casting to integers, cannot
take). Latents ``[N, C, H, W]`` are float32 (``pixels // vae_scale_factor``), the model runs in
its dtype with ``original_size``/``target_size`` (``height, width`` in pixels) and
``crop_coords``; GLM ``prompt_embeds`` (`encode_prompt`, or given); classifier-free guidance
when ``guidance_scale > 1`` (default 5.0) as two calls, ``neg + s (pos - neg)``. Its VAE decodes
``z / scaling_factor`` (it has no ``shift_factor``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .common import Condition, TransformerDenoiser
from .flow import two_calls

__all__ = ["CogView4Denoiser"]


class CogView4Denoiser(TransformerDenoiser):
    """``pipe.transformer`` (CogView 4) called as ``CogView4Pipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "original_size", "crops_coords_top_left", "max_sequence_length")
    PIPELINES = ("CogView4Pipeline",)

    @property
    def dtype(self):
        return torch.float32  # CogView4Pipeline keeps latents in float32

    def mu(self, hw) -> float:
        """``calculate_shift`` of CogView 4: ``sqrt(patches / base_image_seq_len) max_shift + base_shift``."""
        h, w = hw if hw is not None else self.default_size()
        cfg = self.pipe.scheduler.config
        seq = (int(h) * int(w)) // self.multiple ** 2
        return (seq / cfg.get("base_image_seq_len", 256)) ** 0.5 * cfg.get("max_shift", 0.75) + cfg.get("base_shift",
                                                                                                       0.25)

    def grid_kwargs(self, num_inference_steps: int, hw=None) -> dict:
        """The pipeline's sigmas (``int(linspace(1000, 1, N)) / 1000``) and ``mu``; its timesteps left out."""
        T = self.pipe.scheduler.config.num_train_timesteps
        timesteps = np.linspace(T, 1.0, int(num_inference_steps)).astype(np.int64).astype(np.float32)
        return {"sigmas": timesteps / T, "mu": self.mu(hw)}

    def model_timestep(self, t, hw) -> float:
        """The unshifted timestep the model takes at the toolkit's ``t = 1000 s`` (module docstring)."""
        cfg = self.pipe.scheduler.config
        if cfg.get("shift_terminal"):
            raise ValueError("CogView 4 with a scheduler that stretches to shift_terminal is not supported")
        T = cfg.num_train_timesteps
        s = float(t) / T
        if s <= 0:
            return 0.0
        mu = self.mu(hw)
        m = math.exp(mu) if cfg.get("time_shift_type", "exponential") == "exponential" else mu
        u = T / (1 + m * (1 / s - 1))
        return float(round(u)) if abs(u - round(u)) < 1e-3 else u  # the pipeline's integers on its grid

    def prepare(self, n, hw=None, **given):
        """GLM conditioning and classifier-free guidance for ``n`` samples."""
        self._check(given)
        g = given.get
        scale, cfg = self._guided(given, 5.0)
        pe, ne = self._encode(prompt=g("prompt"), negative_prompt=g("negative_prompt"), do_classifier_free_guidance=cfg,
                              num_images_per_prompt=1, prompt_embeds=g("prompt_embeds"),
                              negative_prompt_embeds=g("negative_prompt_embeds"), device=self.device,
                              max_sequence_length=g("max_sequence_length") or 1024)
        cond, uncond = self._branches(n, (pe,), (ne,) if cfg else None)
        sizes = {"original_size": g("original_size"), "crops": tuple(g("crops_coords_top_left") or (0, 0))}
        return Condition(cond, uncond, scale, sizes, order="cond_first")

    def __call__(self, inp, t, cond):
        """Velocity (float32) for the state ``inp`` at the toolkit's timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("CogView 4 needs a condition (a prompt or prompt_embeds)")
        m, _, h, w = inp.shape
        device, dtype = self.device_dtype
        f = self.vae_scale_factor
        target = (h * f, w * f)
        rows = lambda v: torch.tensor([list(v)], dtype=dtype, device=device).repeat(m, 1)  # noqa: E731
        sizes = dict(original_size=rows(cond.shared["original_size"] or target), target_size=rows(target),
                     crop_coords=rows(cond.shared["crops"]))
        timestep = torch.full([m], self.model_timestep(t, (h, w)), dtype=torch.float32, device=device)
        x = inp.to(dtype)
        call = lambda branch, _: self.module(  # noqa: E731
            hidden_states=x, timestep=timestep, return_dict=False, **branch, **sizes)[0]
        return two_calls(call, cond, m).float()
