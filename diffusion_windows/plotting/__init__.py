"""Figures from a sweep's output folder; never loads a model.

- `figures`: retention curves with windows and theory markers (``window.png``) and re-samples
  across times (``strip.png``), from ``windows.json`` and ``strip.safetensors``/``strip.json``.

``python -m diffusion_windows.plot DIR`` redraws them.
"""
from .figures import load_results, load_strip, plot_strip, plot_windows, save_plots

__all__ = ["load_results", "load_strip", "plot_windows", "plot_strip", "save_plots"]
