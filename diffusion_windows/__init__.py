"""diffusion_windows: measure, predict and explain critical windows of features in generative models.

Public API (imported lazily, so ``import diffusion_windows`` is cheap):

- hooks: `noise_to`, `denoise_from`, `sample_trajectory`, `restart_timestep`, `denoiser`
- the bundled default: `load_default_pipeline`, `load_default_classifier`
- the sweep: `run_sweep`; in memory: `measure_window`, `measure_text_window`, `theory_predictions`, `WindowRecord`
- the engine: `Engine`, `Settings`, `Backend`, `UnitResult`; the diffusion backend: `DiffusionBackend`
- modules: `engine`, `analysis`, `diffusion`, `theory`, `classifiers`, `features`, `plotting`;
  old paths `hooks`, `schedule`, `windows`, `adaptive`, `default`, `exact_denoiser` still import,
  with a DeprecationWarning (`_aliases._ALIASES`, the one list of them)
"""

__version__ = "0.2.0"

from ._aliases import install as _install_aliases

_install_aliases()

_EXPORTS = {
    "noise_to": "diffusion.hooks",
    "denoise_from": "diffusion.hooks",
    "sample_trajectory": "diffusion.hooks",
    "restart_timestep": "diffusion.hooks",
    "Trajectory": "diffusion.hooks",
    "denoiser": "diffusion.denoisers",
    "DiffusionBackend": "diffusion.backend",
    "load_default_pipeline": "diffusion.default",
    "load_default_classifier": "diffusion.default",
    "run_sweep": "sweep",
    "measure_window": "library",
    "measure_text_window": "library",
    "theory_predictions": "library",
    "WindowRecord": "analysis.records",
    "load_run": "analysis.runs",
    "records_frame": "analysis.runs",
    "estimate_window": "analysis.windows",
    "clip_zero_shot": "classifiers",
    "Engine": "engine.engine",
    "Settings": "engine.engine",
    "Backend": "engine.backend",
    "UnitResult": "engine.backend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'diffusion_windows' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
