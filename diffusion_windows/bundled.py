"""Where the bundled assets lie: the package `diffusion_windows.assets` (the repository's `assets/`).

Below every backend: the digits model (`diffusion.default`) and the story-language model
(`text.default`) both read their weights from here, and neither backend imports the other.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["assets_path", "asset"]


def assets_path() -> Path:
    """Folder of the bundled assets (package `diffusion_windows.assets`, repo `assets/`)."""
    try:
        root = importlib.resources.files("diffusion_windows.assets")
        path = Path(str(root))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    # Running from a source checkout that is not installed: assets/ sits beside the package.
    path = Path(__file__).resolve().parents[1] / "assets"
    if not path.is_dir():
        raise FileNotFoundError(f"bundled assets not found (looked for {path})")
    return path


def asset(name: str, marker: str, what: str) -> Path:
    """The bundled folder ``assets/<name>``, checked to hold ``marker`` (FileNotFoundError naming
    ``what`` and the missing file otherwise)."""
    folder = assets_path() / name
    if not (folder / marker).is_file():
        raise FileNotFoundError(f"{what} missing: {folder}/{marker}")
    return folder
