"""Analysis of a run's records: windows, theory beside measurement, reports. Imports no backend.

- `windows`: retention curves with bootstrap bands, window edges, the jump criterion
- `counts`: stored units -> counts per feature value (`record_counts`)
- `records`: the frozen `WindowRecord` and `window_records`
- `compare`: `Predictions` and `add_theory` (new records with the theory's fields)
- `report`: `summarize`, ``windows.json``/``.csv``, the strip's files, the summary table
"""
from .compare import Predictions, add_theory
from .records import WindowRecord, window_records
from .windows import estimate_window

__all__ = ["Predictions", "add_theory", "WindowRecord", "window_records", "estimate_window"]
