"""Lumina 2: ``Lumina2Transformer2DModel`` (Gemma-2 captions, reversed time, negated output).

As ``Lumina2Pipeline.__call__`` runs it: latents ``[N, C, H, W]`` unpacked (the model patches
them), ``2 * (pixels // 16)`` high and wide (its ``vae_scale_factor`` is 8 whatever the VAE);
the model takes ``1 - t / 1000`` (``t`` = ``1000 s``: the reversed time ``1 - s``), Gemma-2
``prompt_embeds`` with ``prompt_attention_mask`` (`encode_prompt` with its system prompt, or
given), and predicts ``-v``: the adapter negates it. Classifier-free guidance when
``guidance_scale > 1`` (default 4.0): two calls, ``neg + s (pos - neg)``, then with
``cfg_normalization`` (default on) rescaled to the positive's norm along the last axis (the
latents' width, as the pipeline computes it). ``cfg_trunc_ratio`` below 1 (guidance off for the
last steps, so the rows per step vary) is refused. The grid is ``sigmas = linspace(1, 1/N, N)``
with ``mu = calculate_shift(latents.shape[1])``: the pipeline passes the *channel* count as the
sequence length, and so does the adapter, to run the grid the pipeline runs.
"""
from __future__ import annotations

from .common import Condition, pipeline_default
from .flow import ShiftedFlowDenoiser, cfg, cfg_at_norm, two_calls

__all__ = ["Lumina2Denoiser"]


class Lumina2Denoiser(ShiftedFlowDenoiser):
    """``pipe.transformer`` (Lumina 2) called as ``Lumina2Pipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "prompt_attention_mask",
                "negative_prompt_attention_mask", "guidance_scale", "system_prompt", "cfg_trunc_ratio",
                "cfg_normalization", "max_sequence_length")
    PIPELINES = ("Lumina2Pipeline",)

    def mu(self, hw, num_inference_steps=None) -> float:
        """As ``Lumina2Pipeline``: `shift` of ``latents.shape[1]``, the channel count."""
        return self.shift(self.latent_channels)

    def prepare(self, n, hw=None, **given):
        """Gemma-2 conditioning and classifier-free guidance for ``n`` samples."""
        self._check(given)
        g = given.get
        ratio = g("cfg_trunc_ratio")
        if ratio is not None and float(ratio) < 1:
            raise ValueError(f"cfg_trunc_ratio={ratio}: restarts take only 1.0 (guidance at every step)")
        scale, cfg = self._guided(given, 4.0)
        device = self.device
        pe, mask, ne, nmask = self._encode(
            prompt=g("prompt"), do_classifier_free_guidance=cfg, negative_prompt=g("negative_prompt"),
            num_images_per_prompt=1, device=device, prompt_embeds=g("prompt_embeds"),
            negative_prompt_embeds=g("negative_prompt_embeds"), prompt_attention_mask=g("prompt_attention_mask"),
            negative_prompt_attention_mask=g("negative_prompt_attention_mask"), system_prompt=g("system_prompt"),
            max_sequence_length=g("max_sequence_length") or 256)
        cond, uncond = self._branches(n, (pe, mask), (ne, nmask) if cfg else None,
                                      ("encoder_hidden_states", "encoder_attention_mask"))
        norm = g("cfg_normalization")
        norm = bool(pipeline_default(self.pipe, "cfg_normalization", True) if norm is None else norm)
        return Condition(cond, uncond, scale, {"cfg_normalization": norm}, order="cond_first")

    def __call__(self, inp, t, cond):
        """Velocity for the state ``inp`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("Lumina 2 needs a condition (a prompt or prompt_embeds)")
        m = inp.shape[0]
        timestep = 1 - self._timestep(t, m) / self.pipe.scheduler.config.num_train_timesteps
        combine = cfg_at_norm if cond.shared["cfg_normalization"] else cfg
        call = lambda branch, _: self.module(hidden_states=inp, timestep=timestep, return_dict=False,  # noqa: E731
                                             **branch)[0]
        return -two_calls(call, cond, m, combine)
