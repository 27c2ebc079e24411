"""A run's backend from its resolved options: the model's kind decides (`options.model_kind`).

- diffusion models (built-ins, diffusers pipeline folders, hub ids): `diffusion.models.load_backend`;
- language models (``default-text``, causal LM folders): `text.models.load_backend`.

A model or classifier that cannot be loaded raises `ModelLoadError` (one line; the CLI exits 2).
"""
from __future__ import annotations

__all__ = ["ModelLoadError", "load_backend"]


class ModelLoadError(ValueError):
    """The model or classifier could not be loaded; one-line message."""


def load_backend(o: dict):
    """The backend a run with resolved options ``o`` runs on."""
    from .options import model_kind

    if model_kind(o["model"]) == "text":
        from .text.models import load_backend as load_text

        return load_text(o)
    from .diffusion.models import load_backend as load_diffusion

    return load_diffusion(o)
