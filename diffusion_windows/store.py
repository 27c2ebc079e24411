"""Results on disk: append-only JSON lines per process, torn-line recovery, merge, strip images.

A unit's record is one line ``{"unit": "r<round>-b<base>", "round", "base", "base_label",
"timesteps", "labels", "nfe"}``, written and flushed (and fsync'ed) when the unit
finishes, so a run killed at any moment loses at most the unit in flight. A single
process appends to ``results.jsonl``; process ``rank`` of several to
``results.<rank>.jsonl``; `ResultStore.merge` folds every file into ``results.jsonl``.
A last line without its newline, or not valid JSON, is a torn write: it is cut off and
its unit is run again. Strip images (restart 0 of the first bases) go to
``strip/<unit>.safetensors``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class ResultStore:
    def __init__(self, out: Path, rank: int = 0, world: int = 1):
        self.out = Path(out)
        self.rank, self.world = rank, world
        self.path = self.out / ("results.jsonl" if world == 1 else f"results.{rank}.jsonl")
        self._repair(self.path)

    @staticmethod
    def unit_id(round_: int, base: int) -> str:
        return f"r{round_}-b{base}"

    @staticmethod
    def _repair(path: Path):
        """Cut a torn last line (no newline, or not JSON) so appends start on a clean line."""
        if not path.exists():
            return
        data = path.read_bytes()
        keep = len(data)
        lines = data.split(b"\n")
        if lines and lines[-1] != b"":  # no trailing newline: torn
            keep -= len(lines[-1])
            lines = lines[:-1]
        else:
            lines = lines[:-1]
        while lines:
            try:
                json.loads(lines[-1])
                break
            except json.JSONDecodeError:
                keep -= len(lines[-1]) + 1
                lines = lines[:-1]
        if keep != len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)

    def files(self) -> list[Path]:
        return sorted(self.out.glob("results*.jsonl"))

    def read_all(self) -> list[dict]:
        """Every complete record of every process, one per unit, sorted by (round, base)."""
        recs = {}
        for p in self.files():
            for line in p.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # another process's line in flight
                recs[r["unit"]] = r
        return sorted(recs.values(), key=lambda r: (r["round"], r["base"]))

    def done_units(self) -> set:
        return {r["unit"] for r in self.read_all()}

    def append(self, round_: int, base: int, rec: dict):
        rec = dict(rec)
        images = rec.pop("images", None)
        unit = self.unit_id(round_, base)
        if images is not None:
            from safetensors.numpy import save_file

            (self.out / "strip").mkdir(exist_ok=True)
            save_file({"images": np.ascontiguousarray(images.numpy())}, str(self.out / "strip" / f"{unit}.safetensors"),
                      metadata={"timesteps": json.dumps(rec["timesteps"])})
        line = json.dumps({"unit": unit, "round": round_, **rec}, separators=(",", ":"))
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_base(self, base: int, x0):
        """Keep a base sample in model space (the theory's mixture for pipelines without one)."""
        from safetensors.numpy import save_file

        (self.out / "bases").mkdir(exist_ok=True)
        save_file({"x0": np.ascontiguousarray(x0.float().cpu().numpy())}, str(self.out / "bases" / f"b{base}.safetensors"))

    def load_bases(self) -> dict:
        """``{base: x0 [1, ...] numpy}`` of every kept base sample."""
        from safetensors.numpy import load_file

        folder = self.out / "bases"
        if not folder.exists():
            return {}
        return {int(p.stem[1:]): load_file(str(p))["x0"] for p in folder.glob("b*.safetensors")}

    def merge(self) -> list[dict]:
        """Fold all processes' files into ``results.jsonl`` (atomically); returns the records."""
        recs = self.read_all()
        tmp = self.out / "results.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))
        tmp.replace(self.out / "results.jsonl")
        for p in self.files():
            if p.name != "results.jsonl":
                p.unlink()
        return recs

    def write_strip(self, merged: dict, model, n_cols: int):
        """``strip.safetensors`` [rows, cols, C, H, W] and ``strip.json`` from the saved unit images."""
        from safetensors import safe_open
        from safetensors.numpy import save_file

        from .features import feature_values

        rows = {}
        for p in sorted((self.out / "strip").glob("*.safetensors")) if (self.out / "strip").exists() else []:
            base = int(p.stem.split("-b")[1])
            with safe_open(str(p), "np") as f:
                ts = json.loads(f.metadata()["timesteps"])
                imgs = f.get_tensor("images")
            cells = rows.setdefault(base, {})
            for t, img in zip(ts, imgs[:-1]):
                cells[float(t)] = img
            cells[0.0] = imgs[-1]  # timestep 0 shows the base sample itself
        rows = {b: c for b, c in rows.items() if b in merged}
        if not rows:
            return
        common = sorted(set.intersection(*(set(c) for c in rows.values())))
        pick = np.unique(np.round(np.linspace(0, len(common) - 1, min(n_cols, len(common)))).astype(int))
        cols = [common[i] for i in pick]
        bases = sorted(rows)
        images = np.stack([np.stack([rows[b][t] for t in cols]) for b in bases]).astype(np.float32)
        save_file({"images": images}, str(self.out / "strip.safetensors"))
        meta_rows = []
        for b in bases:
            label = merged[b]["label"]
            labels = {}
            for f in model.features:
                vi = int(feature_values(f, np.asarray([label]))[0])
                labels[f.name] = list(f.values)[vi] if vi >= 0 else None
            meta_rows.append({"base": b, "labels": labels})
        meta = {"timesteps": cols, "rows": meta_rows, "feature": model.features[0].name}
        (self.out / "strip.json").write_text(json.dumps(meta, indent=1))


class MemoryStore:
    """The same interface in memory: `measure_window` writes no files unless asked."""

    def __init__(self):
        self.records, self.bases, self.strip = {}, {}, {}

    unit_id = staticmethod(ResultStore.unit_id)

    def read_all(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: (r["round"], r["base"]))

    def done_units(self) -> set:
        return set(self.records)

    def append(self, round_: int, base: int, rec: dict):
        rec = dict(rec)
        rec.pop("images", None)
        unit = self.unit_id(round_, base)
        self.records[unit] = {"unit": unit, "round": round_, **rec}

    def save_base(self, base: int, x0):
        self.bases[base] = x0.float().cpu().numpy()

    def load_bases(self) -> dict:
        return dict(self.bases)

    def merge(self) -> list[dict]:
        return self.read_all()

    def write_strip(self, merged, model, n_cols):
        return None
