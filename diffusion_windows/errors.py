"""The two errors of bad input, below every other module: a bad option value and a model that cannot load.

Both carry one line naming the bad value; the CLI prints ``error: <line>`` and exits 2.
`OptionError` is raised before anything loads (`options.resolve`), `ModelLoadError` while a
backend loads its model or classifier. Re-exported as ``options.OptionError`` and
``backends.ModelLoadError``.
"""
from __future__ import annotations

__all__ = ["OptionError", "ModelLoadError"]


class OptionError(ValueError):
    """A bad option value; the message is one line naming the value."""


class ModelLoadError(ValueError):
    """The model or classifier could not be loaded; one-line message."""
