"""Content fingerprints of what a run reads: model weights, base images, a CLIP checkpoint.

A sweep records them in ``options.json`` beside the options, so that resuming into a folder
never mixes two models: retrained weights in the same folder, a hub model at a new revision,
or a changed ``--images`` folder with the same file count are an option clash.

- `folder_fingerprint(path)`: sha256 over every file of a model folder, sorted by path: its
  relative path and size, the header of a ``.safetensors`` file (tensor names, shapes, dtypes,
  offsets: retraining leaves them unchanged), and content: the whole of a file up to 2 MiB,
  else 32 blocks of 64 KiB spread evenly over it. About 2 MiB read per file, so multi-GB
  checkpoints cost milliseconds; retraining changes every block, a fine-tune of some layers
  the blocks that fall in them.
- `file_fingerprint(path)`: the same for one file.
- `images_fingerprint(files)`: sha256 over the bytes of each image file, in order.
- `hub_snapshot(repo_id)`: ``(revision, folder)`` of a hub model in the local cache, or None
  (offline: the sweep reads a hub model's configs from there and never downloads it).
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

_WHOLE = 2 << 20     # files up to 2 MiB are read whole
_BLOCK, _BLOCKS = 64 << 10, 32


def _update_file(h, path: Path, name: str):
    size = path.stat().st_size
    h.update(f"{name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if path.suffix == ".safetensors" and size >= 8:
            (n,) = struct.unpack("<Q", f.read(8))
            h.update(f.read(min(n, size - 8)))
            f.seek(0)
        if size <= _WHOLE:
            h.update(f.read())
            return
        for i in range(_BLOCKS):
            f.seek((size - _BLOCK) * i // (_BLOCKS - 1))
            h.update(f.read(_BLOCK))


def file_fingerprint(path) -> str:
    """sha256 hex of one file's name-independent content summary (module docstring)."""
    h = hashlib.sha256()
    _update_file(h, Path(path), "")
    return h.hexdigest()


def folder_fingerprint(path) -> str:
    """sha256 hex over every file below ``path`` (module docstring); hidden files and caches skipped."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts):
            _update_file(h, p, rel)
    return h.hexdigest()


def images_fingerprint(files) -> str:
    """sha256 hex over the names and bytes of the image files, in order."""
    h = hashlib.sha256()
    for p in files:
        p = Path(p)
        h.update(f"{p.name}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def hub_snapshot(repo_id: str):
    """``(revision, folder)`` of the cached snapshot a hub id loads offline, or None when not cached."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except ImportError:
        return None
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not a valid id (HFValidationError)
        return None
    return folder.name, folder
