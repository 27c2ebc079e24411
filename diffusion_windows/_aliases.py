"""Old import paths of modules (and of names) that moved into the package's rooms: warned aliases,
listed here only.

``import diffusion_windows.hooks`` (or ``from diffusion_windows import hooks``) still gives the
module now at ``diffusion_windows.diffusion.hooks`` (the same object, not a copy), with a
`DeprecationWarning` that names the new path. A finder on ``sys.meta_path`` answers for these
names only; no file stands at the old path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_ALIASES = {
    "diffusion_windows.adaptive": "diffusion_windows.engine.adaptive",
    "diffusion_windows.default": "diffusion_windows.diffusion.default",
    "diffusion_windows.exact_denoiser": "diffusion_windows.diffusion.exact",
    "diffusion_windows.hooks": "diffusion_windows.diffusion.hooks",
    "diffusion_windows.schedule": "diffusion_windows.diffusion.schedule",
    "diffusion_windows.windows": "diffusion_windows.analysis.windows",
}


# Names that left a module for another one: module -> {old name: module that holds it now}.
_MOVED_NAMES = {
    "diffusion_windows.options": {
        "build_parser": "diffusion_windows.cli",
        "check_resume": "diffusion_windows.runfolder",
        "model_kind": "diffusion_windows.backends",
        "parse_fractions": "diffusion_windows.text.resolve",
        "read_prompts": "diffusion_windows.text.resolve",
    },
}


def moved_names(module: str):
    """A module ``__getattr__`` that serves `_MOVED_NAMES[module]` from their new homes, warned."""
    table = _MOVED_NAMES[module]

    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated; import it from {table[name]}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(table[name]), name)

    return __getattr__


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of `_ALIASES` and loads it as the module at its new path."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _ALIASES else None

    def create_module(self, spec):
        return None  # a placeholder: `exec_module` puts the real module in its place

    def exec_module(self, module):
        new = _ALIASES[module.__name__]
        warnings.warn(f"{module.__name__} is deprecated; import {new}", DeprecationWarning, stacklevel=2)
        # the import system returns what sys.modules holds after loading: the real module, whose
        # own name and spec stay as they are
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once: it answers for the six old names only, before
    any finder could load a stale file left at an old path (an older install, an editable one)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
