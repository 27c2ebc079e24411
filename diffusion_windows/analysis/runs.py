"""A finished run read back: `load_run(folder)` and `records_frame(records)`, for notebooks.

- `load_run(folder) -> list[WindowRecord]`: the records of a run's ``windows.json`` as the same
  frozen `WindowRecord`s `measure_window` returns (equal to them: ``windows.json`` holds every
  field, floats round-trip exactly, a run without theory leaves the theory's fields None);
- `records_frame(records) -> pandas.DataFrame`: one row per record, one column per field (the
  curves as tuples), then the record's extra keys. pandas is optional: without it, an
  `ImportError` whose one line says to ``pip install pandas``.

Example::

    from diffusion_windows import load_run, records_frame

    records = load_run("runs/quick")
    df = records_frame(records)
    df[df.parent.isna()][["feature", "value", "start_timestep", "end_timestep", "t_after_timestep"]]
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .records import WindowRecord

__all__ = ["load_run", "records_frame"]


def load_run(folder) -> list[WindowRecord]:
    """The `WindowRecord`s of the finished run in ``folder`` (its ``windows.json``), in file order."""
    path = Path(folder) / "windows.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no windows.json: not a finished run (a sweep writes it when it ends)")
    try:
        data = json.loads(path.read_text())
        return [WindowRecord.from_dict(d) for d in data["features"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a windows.json of this toolkit ({type(e).__name__}: {e})") from e


def records_frame(records):
    """``records`` as a pandas DataFrame: one row per record, its fields then its extra keys as columns."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("records_frame needs pandas, which is not installed: pip install pandas "
                          "(the toolkit's 'frames' extra)") from None
    names = [f.name for f in dataclasses.fields(WindowRecord) if f.name != "extra"]
    extra = list(dict.fromkeys(k for r in records for k in r.extra))
    rows = [[getattr(r, n) for n in names] + [r.extra.get(k) for k in extra] for r in records]
    return pd.DataFrame(rows, columns=names + extra)
