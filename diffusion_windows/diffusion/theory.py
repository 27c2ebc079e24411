"""The theory of a diffusion run: its data as a mixture, and the schedule as an axis of ou_time.

- `ScheduleAxis(scheduler, num_inference_steps)`: training timestep <-> ou_time
  (`diffusion.schedule`; a grid timestep at the sigma the scheduler runs it; flow matching:
  ``1000 s`` <-> ``0.5 ln(1 + (s / (1 - s))^2)``, exact), and whether an ou_time lies beyond
  the schedule (flow matching reaches ``ou_time = inf`` at ``s = 1``: never beyond).
- `data_mixture(kind, base_points=None, base_labels=None)`: the data the theory reads: the
  bundled model's training split ("default", `theory.EmpiricalMixture` in model space
  ``2 x - 1``); a known mixture (the built-in Gaussian mixture); or, for any other pipeline,
  its base samples in model space (latents for latent models) labelled by the classifier, an
  approximation where the model's own samples stand in for its data.
- `predict(mixture, features, *, delta, axis, times, seed=0) -> analysis.compare.Predictions`:
  one `theory.predict_windows` call (every TV shares one Monte Carlo engine with common random
  numbers), mapped onto the schedule. The Monte Carlo seed is fixed (0): the prediction is a
  property of the data, not of the run.
- `schedule_arrays(scheduler)`: timestep, alpha_bar and ou_time over the schedule (plot axes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..analysis.compare import Predictions, theory_number
from . import schedule

__all__ = ["ScheduleAxis", "data_mixture", "default_mixture", "predict", "schedule_arrays", "OU_PURE_NOISE"]


OU_PURE_NOISE = 30.0  # ou_time at which the theory reads pure noise (flow matching's s = 1)


@dataclass(frozen=True)
class ScheduleAxis:
    """Training timesteps of ``scheduler`` (on its ``num_inference_steps`` grid) and ou_time."""

    scheduler: object
    num_inference_steps: int | None = None

    def to_theory(self, times) -> np.ndarray:
        return schedule.ou_time(self.scheduler, np.asarray(times, dtype=float), self.num_inference_steps)

    def beyond(self, ou):
        """"above" past the schedule's last timestep, "below" before its first, None on it or undefined."""
        if ou is None or not np.isfinite(ou):
            return "above" if ou == np.inf else None
        T = schedule.num_train_timesteps(self.scheduler)
        lo, hi = schedule.ou_time(self.scheduler, [0, T if schedule.is_flow(self.scheduler) else T - 1])
        return "above" if ou > hi else "below" if ou < lo else None

    def from_theory(self, ou):
        """ou_time -> (training timestep, None) on the schedule; (None, "above"/"below") beyond it;
        (None, None) when undefined. Never a value clipped onto the schedule."""
        if ou is None or not np.isfinite(ou) or ou < 0:
            return None, self.beyond(ou)
        side = self.beyond(ou)
        if side is not None:
            return None, side
        return float(np.round(schedule.timestep_from_ou_time(self.scheduler, float(ou)), 2)), None


def schedule_arrays(scheduler) -> dict:
    """``{"timestep", "alpha_bar", "ou_time"}`` over every training timestep (for plot axes)."""
    T = schedule.num_train_timesteps(scheduler)
    ts = np.arange(T)
    return {"timestep": ts.tolist(), "alpha_bar": schedule.alpha_bar(scheduler, ts).tolist(),
            "ou_time": schedule.ou_time(scheduler, ts).tolist()}


@lru_cache(maxsize=2)
def default_mixture():
    """The bundled model's training split as an `EmpiricalMixture` in model space (labels: digits)."""
    from ..theory import EmpiricalMixture
    from .default import digits_split

    x, y, _, _ = digits_split()
    points = (2.0 * x.reshape(len(x), -1).double() - 1.0).numpy()
    return EmpiricalMixture(points, y.numpy())


def data_mixture(kind, base_points=None, base_labels=None):
    """The theory's mixture (module docstring); None when unknown (fewer than two base samples)."""
    from ..theory import EmpiricalMixture

    if isinstance(kind, str) and kind == "default":
        return default_mixture()
    if kind is not None:
        return kind
    if base_points is None or len(base_points) < 2:
        return None
    return EmpiricalMixture(np.asarray(base_points, dtype=np.float64), np.asarray(base_labels))


def _components(mixture, label_indices) -> np.ndarray:
    from ..theory import EmpiricalMixture

    if isinstance(mixture, EmpiricalMixture):
        return np.asarray(mixture.indices(list(label_indices)))
    return np.asarray(sorted(label_indices))


def _theory_features(mixture, features):
    """The features restricted to values that have components and do not cover the whole mixture."""
    from ..features import Feature

    n = int(mixture.num_components)
    out = []
    for f in features:
        values = {}
        for v, labels in f.values.items():
            try:
                k = len(_components(mixture, labels))
            except ValueError:  # no component carries these labels
                continue
            if 0 < k < n:
                values[v] = labels
        if values:
            out.append(Feature(f.name, values))
    return out


def predict(mixture, features, *, delta: float, axis: ScheduleAxis, times, seed: int = 0,
            device=None) -> Predictions:
    """The theory of ``mixture`` for ``features`` at tolerance ``delta``, ideal retention at ``times``.

    Example::

        axis = ScheduleAxis(pipe.scheduler, 20)
        preds = predict(default_mixture(), DEFAULT_FEATURES, delta=0.1, axis=axis, times=range(0, 1000, 50))
    """
    from ..theory import predict_windows, speciation_time

    started = time.perf_counter()
    times = tuple(sorted({float(t) for t in times}))
    # flow matching reaches s = 1, pure noise (ou_time = inf), where every posterior is the prior:
    # the theory there is read at an ou_time far past any window (exp(-30) = 9e-14), the same numbers
    ou = np.minimum(axis.to_theory(times), OU_PURE_NOISE)
    windows = predict_windows(mixture, _theory_features(mixture, features), delta=delta, ou_times=ou, seed=seed,
                              device=device)
    t_s = speciation_time(mixture)  # Biroli et al.; the Gram matrix, never a d x d covariance
    summary = {"available": True, "mixture": type(mixture).__name__, "components": int(mixture.num_components),
               "speciation_ou": theory_number(t_s), "speciation_timestep": axis.from_theory(t_s)[0],
               "tolerance": float(delta), "seconds": round(time.perf_counter() - started, 2)}
    return Predictions(tuple(windows), times, axis, summary)
