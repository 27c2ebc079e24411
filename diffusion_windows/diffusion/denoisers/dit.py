"""DiT: the class-conditional ``DiTTransformer2DModel`` under a VP scheduler.

As ``DiTPipeline.__call__`` runs it: ``class_labels`` (one per sample, or one for all; an int,
or a name of the pipeline's ``id2label`` via ``get_label_ids``); classifier-free guidance when
``guidance_scale > 1`` (default 4.0) as one batch ``[cond, null]`` (this order; the null class is
``num_embeds_ada_norm``, 1000 for ImageNet DiT), applied to the first ``in_channels`` output
channels, the learned variance dropped; the integer timestep broadcast to the batch. The latent
size is the model's ``sample_size`` (the pipeline has no height or width); the SD VAE decodes
``z / scaling_factor``. The stock pipeline steps the doubled batch; both halves are equal, so
one half is stepped here (the same numbers for DDIM; a stochastic scheduler draws its own noise).
"""
from __future__ import annotations

import torch

from .common import Condition, TransformerDenoiser

__all__ = ["DiTDenoiser"]


class DiTDenoiser(TransformerDenoiser):
    """``pipe.transformer`` (DiT) called as ``DiTPipeline`` calls it (module docstring)."""

    KEYWORDS = ("class_labels", "guidance_scale")
    PIPELINES = ("DiTPipeline",)

    def latent_size(self, height=None, width=None) -> tuple:
        size = self.default_size()
        if height is not None or width is not None:
            f = self.vae_scale_factor
            want = (int(height or width) // f, int(width or height) // f)
            if want != size:
                raise ValueError(f"height/width {height}x{width}: {type(self.pipe).__name__} makes "
                                 f"{size[0] * f}x{size[1] * f} images only")
        return size

    def check_sample(self, x, name="x_t") -> None:
        super().check_sample(x, name)
        if tuple(x.shape[-2:]) != self.default_size():
            raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes size {self.default_size()}")

    def _labels(self, labels, n: int) -> torch.Tensor:
        classes = int(self.module.config.num_embeds_ada_norm)
        if isinstance(labels, str) or (isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], str)):
            names = [labels] if isinstance(labels, str) else list(labels)
            ids = []
            for name in names:
                if name.strip().lstrip("-").isdigit():
                    ids.append(int(name))
                    continue
                known = getattr(self.pipe, "labels", None) or {}
                if name not in known:
                    raise ValueError(f"class label {name!r} is neither an index nor a label of the pipeline's id2label")
                ids.append(int(known[name]))
            labels = ids
        t = torch.as_tensor(labels, device=self.device).reshape(-1).long()
        if t.numel() == 1:
            t = t.expand(n)
        if t.numel() != n:
            raise ValueError(f"class_labels has {t.numel()} values for {n} samples")
        bad = (t < 0) | (t >= classes)
        if bad.any():
            raise ValueError(f"class label {int(t[bad][0])} outside [0, {classes})")
        return t

    def prepare(self, n, hw=None, **given):
        """Class labels (and the null class with guidance) for ``n`` samples."""
        self._check(given)
        if given.get("class_labels") is None:
            raise ValueError(f"{type(self.pipe).__name__} needs class_labels, got None")
        scale = self._guidance(given.get("guidance_scale"), 4.0)
        labels = self._labels(given["class_labels"], n)
        null = torch.full_like(labels, int(self.module.config.num_embeds_ada_norm))
        return Condition({"class_labels": labels}, {"class_labels": null} if scale > 1 else None, scale,
                         order="cond_first")

    def __call__(self, inp, t, cond):
        """Noise prediction (first ``in_channels`` channels, guided) for ``inp`` at scalar timestep ``t``."""
        if cond is None:
            raise ValueError("DiT needs a condition (class_labels)")
        m = inp.shape[0]
        x = torch.cat([inp, inp]) if cond.rows == 2 else inp
        out = self.module(x, timestep=self._timestep(t, x.shape[0]), return_dict=False, **cond.batch(m))[0]
        return cond.guide(out, channels=self.latent_channels)
