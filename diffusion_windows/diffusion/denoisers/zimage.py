"""Z-Image: ``ZImageTransformer2DModel``, a single-stream DiT taking lists of latents and captions.

As ``ZImagePipeline.__call__`` runs it: latents stay float32 ``[N, C, H, W]`` (unpacked; the
model patches 2x2 itself) and enter the model in its dtype as a list of ``[C, 1, H, W]``; the
model takes the *reversed* time ``(1000 - t) / 1000`` (``t`` = ``1000 s``, so ``1 - s``) and
predicts ``-v``: the adapter negates its output, in float32. Captions are Qwen3 hidden states,
one ``[L, D]`` per prompt (`encode_prompt`, or given as a list or a ``[B, L, D]`` tensor).
Classifier-free guidance when ``guidance_scale > 0`` (default 5.0): one call on
``[positive rows, negative rows]``, combined per sample as ``pos + s (pos - neg)`` (note: not
``neg + s (pos - neg)``), with ``cfg_normalization > 0`` capping the result's norm at that many
times the positive's. ``cfg_truncation`` below 1 (guidance switched off late in the run, so the
model rows per step vary) is refused. Grid: Flux's (`flow`), ``mu`` from ``(H/2)(W/2)``.
"""
from __future__ import annotations

import torch

from .common import Condition, per_sample
from .flow import ShiftedFlowDenoiser

__all__ = ["ZImageDenoiser"]


def _stacked(embeds, what: str):
    """A list of ``[L, D]`` captions (or a ``[B, L, D]`` tensor) -> ``[B, L, D]``."""
    if torch.is_tensor(embeds):
        return embeds if embeds.ndim == 3 else embeds[None]
    lengths = {tuple(e.shape) for e in embeds}
    if len(lengths) != 1:
        raise ValueError(f"{what}: captions of different shapes {sorted(lengths)}: pass one prompt per run")
    return torch.stack(list(embeds))


class ZImageDenoiser(ShiftedFlowDenoiser):
    """``pipe.transformer`` (Z-Image) called as ``ZImagePipeline`` calls it (module docstring)."""

    KEYWORDS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "cfg_normalization", "cfg_truncation", "max_sequence_length")
    PIPELINES = ("ZImagePipeline",)

    @property
    def dtype(self):
        return torch.float32  # ZImagePipeline keeps latents in float32

    @property
    def multiple(self) -> int:
        return 2

    def latent_size(self, height=None, width=None) -> tuple:
        """As ``ZImagePipeline``: 1024 px unless given, whatever the VAE."""
        if height is None and width is None:
            height = width = 1024
        return super().latent_size(height, width)

    def prepare(self, n, hw=None, **given):
        """Qwen3 captions and classifier-free guidance for ``n`` samples."""
        self._check(given)
        g = given.get
        self._check_text(given)
        truncation = g("cfg_truncation")
        if truncation is not None and float(truncation) < 1:
            raise ValueError(f"cfg_truncation={truncation}: restarts take only 1.0 (guidance at every step)")
        scale = self._guidance(g("guidance_scale"), 5.0)
        cfg = scale > 0
        device, dtype = self.device_dtype
        prompt, pe, ne = g("prompt"), g("prompt_embeds"), g("negative_prompt_embeds")
        if pe is not None and prompt is None:  # as ZImagePipeline: given embeddings are not encoded
            if cfg and ne is None:
                raise ValueError(f"guidance_scale={scale} with prompt_embeds needs negative_prompt_embeds, got None")
        else:
            pe, ne = self._encode(prompt=[prompt] if isinstance(prompt, str) else prompt, device=device,
                                  do_classifier_free_guidance=cfg, negative_prompt=g("negative_prompt"),
                                  prompt_embeds=pe, negative_prompt_embeds=ne,
                                  max_sequence_length=g("max_sequence_length") or 512)
        cond = {"cap_feats": per_sample(_stacked(pe, "prompt_embeds").to(device, dtype), n, "prompt_embeds")}
        uncond = None
        if cfg:
            uncond = {"cap_feats": per_sample(_stacked(ne, "negative_prompt_embeds").to(device, dtype), n,
                                              "negative_prompt_embeds")}
        norm = float(g("cfg_normalization") or 0.0)
        return Condition(cond, uncond, scale, {"cfg_normalization": norm}, order="cond_first")

    def __call__(self, inp, t, cond):
        """Velocity (float32) for the state ``inp`` at scalar timestep ``t`` (``1000 s``)."""
        if cond is None:
            raise ValueError("Z-Image needs a condition (a prompt or prompt_embeds)")
        m = inp.shape[0]
        x = inp.to(self.device_dtype[1])
        timestep = (1000 - self._timestep(t, m)) / 1000  # ZImagePipeline: the reversed time 1 - s
        caps = list(cond.cond["cap_feats"][:m])
        if cond.uncond is not None:
            x, timestep = x.repeat(2, 1, 1, 1), timestep.repeat(2)
            caps = caps + list(cond.uncond["cap_feats"][:m])
        out = self.module(list(x.unsqueeze(2).unbind(dim=0)), timestep, caps, return_dict=False)[0]
        if cond.uncond is None:
            pred = torch.stack([o.float() for o in out], dim=0)
        else:
            norm = cond.shared["cfg_normalization"]
            preds = []
            for j in range(m):
                pos, neg = out[j].float(), out[m + j].float()
                pred = pos + cond.scale * (pos - neg)
                if norm > 0:
                    cap = torch.linalg.vector_norm(pos) * norm
                    now = torch.linalg.vector_norm(pred)
                    if now > cap:
                        pred = pred * (cap / now)
                preds.append(pred)
            pred = torch.stack(preds, dim=0)
        return -pred.squeeze(2).to(torch.float32)
