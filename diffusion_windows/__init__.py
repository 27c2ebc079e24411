"""diffusion_windows: measure, predict and explain critical windows of features in diffusion models.

Public API (imported lazily, so ``import diffusion_windows`` is cheap):

- hooks: `noise_to`, `denoise_from`, `sample_trajectory`, `restart_timestep`
- the bundled default: `load_default_pipeline`, `load_default_classifier`
- the sweep: `run_sweep`; in memory: `measure_window`, `WindowRecord`
- modules: `schedule`, `classifiers`, `features`, `windows`, `theory`, `plotting`
"""

__version__ = "0.1.0"

_EXPORTS = {
    "noise_to": "hooks",
    "denoise_from": "hooks",
    "sample_trajectory": "hooks",
    "restart_timestep": "hooks",
    "Trajectory": "hooks",
    "load_default_pipeline": "default",
    "load_default_classifier": "default",
    "run_sweep": "sweep",
    "measure_window": "library",
    "WindowRecord": "library",
    "estimate_window": "windows",
    "clip_zero_shot": "classifiers",
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
