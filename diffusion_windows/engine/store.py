"""Results on disk: append-only JSON lines per process, torn-line recovery, merge, kept arrays.

A unit's record is one line ``{"unit": "r<round>-b<base>", "round", "base", "base_label",
"timesteps", "labels", "nfe", ...}`` (`engine.backend.UnitResult.to_json`; with ``"first"``, the
first restart index per time, when a row continues restarts of an earlier round), written and
flushed when the unit finishes, so a run killed at any moment loses at most the units in
flight (the file is fsync'ed after each batch group, `ResultStore.sync`: a machine that loses
power loses at most that group). A single process appends to ``results.jsonl``; process ``rank`` of several to
``results.<rank>.jsonl``; `ResultStore.merge` folds every file into ``results.jsonl``. A last
line without its newline, or not valid JSON, is a torn write (a process killed mid-write, or
another process's line in flight): it is cut off (or, in another process's file, not read) and
its unit is run again. A malformed line anywhere else is damage no write of the store leaves: it
stops the run (`RunError` naming the file and the line) rather than silently dropping a unit. A unit's arrays are kept beside it: ``strip/<unit>.safetensors`` (display rows,
with their times) and ``bases/b<base>.safetensors`` (the base sample, for the theory).

Reading gives frozen `UnitRecord`s; `MemoryStore` is the same interface in memory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import UnitResult, as_array
from .errors import RunError

__all__ = ["UnitRecord", "ResultStore", "MemoryStore", "unit_id"]


def unit_id(round_: int, base: int) -> str:
    return f"r{round_}-b{base}"


@dataclass(frozen=True)
class UnitRecord:
    """One stored unit (a line of ``results.jsonl``)."""

    unit: str
    round: int
    base: int
    base_label: int
    times: tuple
    labels: tuple
    nfe: int
    extra: dict = field(default_factory=dict, compare=False)
    first: tuple = ()           # first restart index per time (empty: all 0)

    @classmethod
    def from_json(cls, d: dict) -> "UnitRecord":
        known = ("unit", "round", "base", "base_label", "timesteps", "labels", "nfe", "first")
        return cls(d["unit"], int(d["round"]), int(d["base"]), int(d["base_label"]),
                   tuple(float(t) for t in d["timesteps"]), tuple(tuple(row) for row in d["labels"]),
                   int(d.get("nfe", 0)), {k: v for k, v in d.items() if k not in known},
                   tuple(int(k) for k in d.get("first", ())))

    def to_json(self) -> dict:
        result = UnitResult(self.base, self.base_label, self.times, self.labels, self.nfe, extra=self.extra,
                            first=self.first)
        return result.to_json(self.unit, self.round)


def _round_base(path: Path) -> tuple:
    """``r<round>-b<base>.safetensors`` -> ``(round, base)``, for numeric order."""
    r, b = path.stem[1:].split("-b")
    return int(r), int(b)


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _damaged(path: Path, i: int, what: str) -> str:
    return (f"{path}, line {i + 1}: {what}; a damaged results file (no write of the store leaves this): "
            "repair or remove that line to resume")


def _line(d: dict) -> str:
    return json.dumps(d, separators=(",", ":"))


class ResultStore:
    """``results*.jsonl`` and kept arrays in the folder ``out`` (module docstring)."""

    def __init__(self, out: Path, rank: int = 0, world: int = 1):
        self.out = Path(out)
        self.rank, self.world = rank, world
        self.path = self.out / ("results.jsonl" if world == 1 else f"results.{rank}.jsonl")
        self._repair(self.path)

    unit_id = staticmethod(unit_id)

    @staticmethod
    def _repair(path: Path):
        """Cut a torn last line (no newline, or not JSON) so appends start on a clean line; only the
        last line: damage before it is left for `read_all` to report."""
        if not path.exists():
            return
        data = path.read_bytes()
        if not data:
            return
        if not data.endswith(b"\n"):  # written in part
            keep = data.rfind(b"\n") + 1
        else:
            start = data.rfind(b"\n", 0, len(data) - 1) + 1
            keep = len(data) if _parses(data[start:-1]) else start
        if keep != len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)

    def files(self) -> list[Path]:
        return sorted(self.out.glob("results*.jsonl"))

    def read_all(self) -> list[UnitRecord]:
        """Every complete record of every process, one per unit, sorted by (round, base).

        A file's torn last line (a process killed mid-write, or another process's line in flight)
        is not read; any other malformed line raises `RunError` naming the file and the line."""
        recs = {}
        for p in self.files():
            lines = p.read_text().split("\n")
            torn = lines.pop()  # what follows the last newline: "" or a line written in part
            for i, line in enumerate(lines):
                try:
                    r = UnitRecord.from_json(json.loads(line))
                except json.JSONDecodeError:
                    if i == len(lines) - 1 and not torn:
                        continue  # the last line, written in part before its newline
                    raise RunError(_damaged(p, i, "not JSON")) from None
                except (KeyError, TypeError, ValueError) as e:
                    raise RunError(_damaged(p, i, f"not a unit record ({type(e).__name__}: {e})")) from None
                recs[r.unit] = r
        return sorted(recs.values(), key=lambda r: (r.round, r.base))

    def done_units(self) -> set:
        return {r.unit for r in self.read_all()}

    def append(self, round_: int, result: UnitResult):
        """Keep ``result``'s arrays, then append its line (the line marks the unit done)."""
        from safetensors.numpy import save_file

        unit = unit_id(round_, result.base)
        if "strip" in result.arrays:
            (self.out / "strip").mkdir(exist_ok=True)
            save_file({"images": as_array(result.arrays["strip"])}, str(self.out / "strip" / f"{unit}.safetensors"),
                      metadata={"timesteps": json.dumps(result.to_json(unit, round_)["timesteps"])})
        base = self.out / "bases" / f"b{result.base}.safetensors"
        if "base" in result.arrays and not base.exists():  # later rounds restart the same base sample
            base.parent.mkdir(exist_ok=True)
            save_file({"x0": as_array(result.arrays["base"])}, str(base))
        with open(self.path, "a") as f:  # flushed: a killed process keeps it; `sync` puts it on disk
            f.write(_line(result.to_json(unit, round_)) + "\n")

    def sync(self):
        """Put the lines appended so far on disk (the engine calls it after each batch group: one
        disk flush per group, not per unit)."""
        if self.path.exists():
            with open(self.path, "a") as f:
                os.fsync(f.fileno())

    def load_bases(self) -> dict:
        """``{base: x0 numpy}`` of every kept base sample."""
        from safetensors.numpy import load_file

        folder = self.out / "bases"
        if not folder.exists():
            return {}
        return {int(p.stem[1:]): load_file(str(p))["x0"] for p in folder.glob("b*.safetensors")}

    def load_strip(self) -> dict:
        """``{base: {time: image}}`` from the kept display rows (the last image: the base sample itself)."""
        from safetensors import safe_open

        rows = {}
        folder = self.out / "strip"
        files = sorted(folder.glob("*.safetensors"), key=_round_base) if folder.exists() else []
        for p in files:  # in round order: a time's first re-sample (a later round may add more of them)
            base = int(p.stem.split("-b")[1])
            with safe_open(str(p), "np") as f:
                ts = json.loads(f.metadata()["timesteps"])
                imgs = f.get_tensor("images")
            cells = rows.setdefault(base, {})
            for t, img in zip(ts, imgs[:-1]):
                cells.setdefault(float(t), img)
            cells[0.0] = imgs[-1]  # the first column shows the base sample itself
        return rows

    def merge(self) -> list[UnitRecord]:
        """Fold all processes' files into ``results.jsonl`` (atomically); returns the records."""
        recs = self.read_all()
        tmp = self.out / "results.jsonl.tmp"
        tmp.write_text("".join(_line(r.to_json()) + "\n" for r in recs))
        tmp.replace(self.out / "results.jsonl")
        for p in self.files():
            if p.name != "results.jsonl":
                p.unlink()
        return recs


class MemoryStore:
    """The same interface in memory: `measure_window` writes no files unless asked."""

    out = None
    unit_id = staticmethod(unit_id)

    def __init__(self):
        self.records, self.bases = {}, {}

    def read_all(self) -> list[UnitRecord]:
        return sorted(self.records.values(), key=lambda r: (r.round, r.base))

    def done_units(self) -> set:
        return set(self.records)

    def append(self, round_: int, result: UnitResult):
        unit = unit_id(round_, result.base)
        if "base" in result.arrays:
            self.bases[result.base] = as_array(result.arrays["base"])
        self.records[unit] = UnitRecord.from_json(result.to_json(unit, round_))

    def sync(self):
        pass

    def load_bases(self) -> dict:
        return dict(self.bases)

    def load_strip(self) -> dict:
        return {}

    def merge(self) -> list[UnitRecord]:
        return self.read_all()
