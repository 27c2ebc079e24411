"""Theory of critical windows (THEORY.md): mixtures, exact TV, thresholds, retention, speciation.

Every time here is an `ou_time` t of the Ornstein-Uhlenbeck forward process,
`Y_t = exp(-t) X + sqrt(1 - exp(-2t)) Z`, i.e. `alpha_bar = exp(-2 t)`; conversions to a
scheduler's timesteps live in `diffusion_windows.diffusion.schedule`. numpy/scipy; torch only when a
function is given `device=` (imported then).

Sub-populations `S` are collections of component indices; `EmpiricalMixture.indices`
turns label values into them. TV uses the closed form `2 Phi(Delta/2) - 1` for two
Gaussians with one covariance (THEORY.md, "Closed forms"), otherwise Monte Carlo with
common random numbers across times (fixed component picks, data draws and noise draws),
in memory and time linear in d for isotropic mixtures (projections on the span of the
means), each ou_time sized to its own standard-error target.

Modules: `mixtures` (data models, closed forms), `montecarlo` (the engine: draws,
projections, log-densities), `fullcov` (its path for full covariances), `blocks` (what the
two share: random-stream blocks, one BLAS thread, per-atom log-sum-exp), `sizing`
(estimators and per-ou_time sample sizes), `_torch` (the engine's products on a torch
device), `curves` (`tv`, `retention_curve`), `thresholds` (`critical_window`,
`theorem2_window`, `speciation_time`, `example1_bounds`), `predict` (`predict_windows`),
`story` (the story language of autoregressive generation, its posterior, truncation time),
`story_sums` (its exact retention and TV), `text` (Def. 4 windows of truncation, in fractions of
the response removed and in tokens; re-exports the other two). Everything public is
importable from here.
"""
from .curves import Estimate, retention_curve, tv
from .mixtures import EmpiricalMixture, GaussianMixture, retention_closed
from .montecarlo import SE_TARGET
from .predict import PredictedWindow, predict_windows
from .text import StoryLanguage, TextWindow, kept_tokens, predict_text_windows, removed_tokens
from .thresholds import (T_MAX, T_MIN, T_SE_TARGET, CriticalWindow, Theorem2Window, critical_window, example1_bounds,
                         speciation_time, theorem2_window)

__all__ = [
    "GaussianMixture",
    "EmpiricalMixture",
    "Estimate",
    "CriticalWindow",
    "Theorem2Window",
    "PredictedWindow",
    "tv",
    "retention_curve",
    "retention_closed",
    "critical_window",
    "theorem2_window",
    "speciation_time",
    "example1_bounds",
    "predict_windows",
    "SE_TARGET",
    "T_SE_TARGET",
    "T_MIN",
    "T_MAX",
    "StoryLanguage",
    "TextWindow",
    "kept_tokens",
    "removed_tokens",
    "predict_text_windows",
]
