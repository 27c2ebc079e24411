"""A sweep's output folder: its lock, ``options.json`` and the resume check.

- `hold(out, dist)`: one run per folder. The main process of a run (all processes of one
  ``torchrun``/``accelerate`` run are one run) takes an exclusive `fcntl.flock` on the folder
  itself (a ``.lock`` file inside on file systems that lock only files open for writing) and
  keeps it until the run ends; the kernel drops it when the process dies, so a
  killed run leaves no stale lock behind and its resume goes ahead. A process forked from the run
  (the theory computed beside it, `sweep.TheoryAhead`) closes its copy of the lock's descriptor at
  once: a child that outlived a killed run would otherwise hold the lock and refuse the resume. A second sweep into the
  folder while the first runs gets `OptionError` (one line; the CLI exits 2) in every one of
  its processes, before it reads or writes anything there.
- `check_resume(out, o)`: a folder that holds ``options.json`` may be resumed only with the same
  result-changing options (`options.NON_RESULT_OPTIONS` may differ) and the same content
  fingerprints of weights, checkpoints and data (`engine.fingerprint`). A fingerprint recorded
  as None was unknown when the run began (a hub model before its first download): it is not a
  clash, and the fingerprint known now is recorded (`write_options`). An option recorded as None
  that its model's kind now resolves (``num_inference_steps``: earlier versions chose it when
  loading) matches that kind's default for the model.
- `write_options(out, o)`: ``options.json``, written first (kept as it is on a resume, but for
  fingerprints that were unknown).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import backends
from .errors import OptionError
from .options import DEFAULTS, NON_RESULT_OPTIONS, show

__all__ = ["hold", "Lock", "check_resume", "result_options", "write_options"]

_FINGERPRINT_FLAGS = {"model": ("--model", "model"), "model_revision": ("--model", "model"),
                      "clip": ("--clip-pretrained", "clip_pretrained"), "images": ("--images", "images"),
                      "prompts": ("--prompts", "prompts")}


_HELD: set = set()  # descriptors of the locks this process holds


def _drop_in_child():
    """After a fork, in the child: close its copies of the held locks' descriptors (the parent keeps the
    lock; a flock lives while any descriptor of its open file does)."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


class Lock:
    """An exclusive `fcntl.flock` on a folder, held until `release` or the process ends (not inherited
    by forked children: `_drop_in_child`)."""

    def __init__(self, out: Path):
        import fcntl

        self.out = Path(out)
        self._fd = os.open(self.out, os.O_RDONLY)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise
            except OSError:  # file systems that lock only files open for writing (NFS): a lock file inside
                os.close(self._fd)
                self._fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise OptionError(f"--out: {str(out)!r} is in use by another sweep running now; wait for it to end or "
                              "use another --out") from None
        _HELD.add(self._fd)

    def release(self):
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def hold(out, dist=None) -> Lock | None:
    """Create ``out`` and lock it for this run (module docstring); None in processes other than the main one.

    Every process of a multi-process run learns the main process's answer, so a refused run
    fails in all of them at once instead of leaving workers waiting for a main process gone."""
    lock, refused = None, None
    if dist is None or dist.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        try:
            lock = Lock(out)
        except OptionError as e:
            refused = str(e)
    if dist is not None and dist.world > 1:
        import torch.distributed

        box = [refused]
        torch.distributed.broadcast_object_list(box, src=0)
        refused = box[0]
    if refused is not None:
        raise OptionError(refused)
    return lock


def result_options(o: dict) -> dict:
    """The options that change results (compared when resuming into an existing folder)."""
    return {k: v for k, v in o.items() if k not in NON_RESULT_OPTIONS}


def _recorded(out: Path) -> dict | None:
    path = Path(out) / "options.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise OptionError(f"--out: {str(path)!r} is not valid JSON; choose another --out") from None


def check_resume(out, o: dict):
    """Refuse to reuse a folder made with options, or weights and data, that change results."""
    old = _recorded(out)
    if old is None:
        return
    new = json.loads(json.dumps(result_options(o)))
    old = result_options(old)
    was_prints = old.pop("fingerprints", None) or {}
    for k, v in new.pop("fingerprints", {}).items():
        was = was_prints.get(k)
        if was is not None and v != was:
            flag, option = _FINGERPRINT_FLAGS[k]
            what = "the hub revision" if k == "model_revision" else "the content"
            raise OptionError(f"{flag}: {what} of {show(o.get(option))} changed since the run in {str(out)!r} "
                              f"began ({show(was)} -> {show(v)}); use another --out")
    by_model = backends.defaults_for(o["model"])
    for k in sorted(set(new) | set(old)):
        if old.get(k) is None and k in old and new.get(k) == by_model.get(k, object()):
            continue  # recorded before its kind's default was resolved into options.json: the same run
        if k not in old and DEFAULTS.get(k) is not None and new.get(k) == DEFAULTS[k]:
            continue  # an option added since the run began, at its default (what that version did): the same run
        if new.get(k) != old.get(k):
            raise OptionError(f"--out: {str(out)!r} holds a run with --{k.replace('_', '-')} {show(old.get(k))}, "
                              f"not {show(new.get(k))}; use another --out")


def write_options(out, o: dict):
    """``out/options.json``: ``o`` for a new run; on a resume the recorded file, with the fingerprints
    unknown when it began (None) filled in from ``o``."""
    path = Path(out) / "options.json"
    old = _recorded(out)
    if old is None:
        path.write_text(json.dumps(o, indent=1))
        return
    prints = old.get("fingerprints") or {}
    known = {k: v for k, v in (o.get("fingerprints") or {}).items() if prints.get(k) is None and v is not None}
    if known:
        path.write_text(json.dumps({**old, "fingerprints": {**prints, **known}}, indent=1))
