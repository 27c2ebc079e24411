"""The forward-reverse measurement (DESIGN.md): base samples, units of work, restarts, counts.

Public pieces (used by `diffusion_windows.sweep` and `measure_window`):

- `Model`: a frozen bundle of what a measurement runs on: the pipeline, the classifier,
  the features, the sampling settings (``num_inference_steps``, ``eta``, text conditioning).
- `unit_seed(seed, *ids) -> int`: the seed of one unit of work, from the run seed and
  the unit's identity only (never from batch or process), so results are independent of
  how work is split.
- `make_bases(model, indices, *, total, seed, protocol, batch_size, images=None) -> Bases`:
  base samples ``x0`` (and, for ``protocol="branch"``, their trajectories), generated in
  fixed chunks of base indices.
- `run_units(model, bases, plan, *, restarts, seed, protocol, batch_size) -> list[dict]`:
  units = base samples x their timesteps (training timesteps on the sampling grid) x
  ``restarts`` re-samples each, run as one staircase (`hooks.denoise_staircase`) and
  classified; one JSON-ready record per base for ``results.jsonl``.
- `batch_groups(plan, restarts, batch_size)`: the fixed groups of bases run together.

Re-sample ``k`` of base ``b`` at timestep ``t`` draws its forward noise from
``unit_seed(seed, "forward", b, t, k)`` and its reverse noise from
``unit_seed(seed, "reverse", b, t, k)``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from . import hooks


@dataclass(frozen=True)
class Model:
    """What a measurement runs on."""

    pipe: object                      # a diffusers pipeline (public parts only: unet, scheduler, vae, encode_prompt)
    classifier: object                # callable images [N,C,H,W] in [0,1] -> probabilities [N,K]; has .labels
    features: tuple                   # diffusion_windows.features.Feature, over classifier.labels
    num_inference_steps: int          # N of the sampling grid
    name: str = "model"
    eta: float | None = None          # DDIM eta (None: scheduler default)
    conditioning: dict = field(default_factory=dict)  # prompt / prompt_embeds / guidance_scale ... for text pipelines
    mixture: object = None            # a theory mixture in model space, when known (theory comparisons)


def unit_seed(seed: int, *ids) -> int:
    """A 63-bit seed from the run seed and a unit's identity (stable across runs and machines)."""
    ids = tuple(_json_number(i) if isinstance(i, (int, float, np.integer, np.floating)) else i for i in ids)
    text = repr((int(seed),) + ids)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generators(seeds) -> list[torch.Generator]:
    """One CPU generator per seed (CPU generators give the same noise on every device)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


@dataclass
class Bases:
    """Base samples by index: ``x0[b]`` (model space) and, for branching, ``states[b]`` per grid timestep."""

    x0: dict
    states: dict
    grid: np.ndarray


def grid_timesteps(model: Model) -> np.ndarray:
    """The sampling grid's own timesteps (descending), training-timestep units."""
    from .schedule import inference_timesteps

    return np.asarray(inference_timesteps(model.pipe.scheduler, model.num_inference_steps))


def make_bases(model: Model, indices, *, total: int, seed: int, protocol: str, batch_size: int,
               images=None) -> Bases:
    """Base samples ``indices`` (of ``total``), made in fixed chunks ``[c*batch_size, (c+1)*batch_size)``.

    Base ``b`` is generated with ``unit_seed(seed, "base", b)``; a chunk is always made
    whole, so a base is the same number whichever process asks for it. With ``images``
    (a tensor [N,C,H,W] in [0,1]) base ``b`` is ``encode(images[b])`` instead.
    """
    wanted = sorted(set(int(b) for b in indices))
    grid = grid_timesteps(model)
    x0, states = {}, {}
    for c in sorted(set(b // batch_size for b in wanted)):
        members = list(range(c * batch_size, min((c + 1) * batch_size, total)))
        if images is not None:
            z = hooks.encode(model.pipe, images[members[0]:members[-1] + 1])
            finals, traj = z, None
        else:
            traj = hooks.sample_trajectory(
                model.pipe, batch_size=len(members), num_inference_steps=model.num_inference_steps,
                generator=generators(unit_seed(seed, "base", b) for b in members), eta=model.eta,
                **model.conditioning)
            finals = traj.final
            _check_finite(finals, f"base samples {members[0]}..{members[-1]}", f"run seed {seed}")
        for i, b in enumerate(members):
            if b not in wanted:
                continue
            x0[b] = finals[i:i + 1]
            if protocol == "branch":
                states[b] = {float(t): s[i:i + 1] for t, s in zip(np.asarray(traj.timesteps), traj.states)}
    return Bases(x0=x0, states=states, grid=grid)


def _check_finite(x: torch.Tensor, what: str, seed: str):
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"the model returned NaN or Inf for {what} ({seed})")


class NonFiniteSample(FloatingPointError):
    """Decoded images or classifier probabilities of sample ``index`` are NaN or Inf."""

    def __init__(self, index: int, what: str):
        super().__init__(f"{what} of sample {index}")
        self.index, self.what = index, what


def classify(model: Model, x: torch.Tensor) -> np.ndarray:
    """Model-space samples -> label index per sample (argmax of the classifier).

    A decoded image or a row of probabilities that is not finite raises `NonFiniteSample`
    (never counted: argmax would call NaN label 0).
    """
    images = hooks.decode(model.pipe, x)
    _first_bad(images, "the decoded image")
    probs = torch.as_tensor(model.classifier(images)).float()
    _first_bad(probs, "the classifier's probabilities")
    return probs.argmax(dim=1).cpu().numpy().astype(int)


def _first_bad(t: torch.Tensor, what: str):
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    if bad.any():
        raise NonFiniteSample(int(bad.nonzero()[0, 0]), f"{what} is NaN or Inf")


def run_units(model: Model, bases: Bases, plan: dict, *, restarts: int, seed: int, protocol: str,
              batch_size: int, keep_images=()) -> list[dict]:
    """Restart each base sample of ``plan`` (base -> training timesteps on the grid) ``restarts`` times.

    All restarts of the plan run as one staircase (`hooks.denoise_staircase`, cut into
    fixed chunks of ``batch_size``) and one batched classification, so a batch is a fixed
    function of the plan. Returns one record per base, in base order:
    ``{"base", "base_label", "timesteps", "labels": [[label per restart] per timestep], "nfe"}``
    (and ``"images"``, restart 0 per timestep then the base sample, for bases in ``keep_images``).
    """
    scheduler = model.pipe.scheduler
    order = sorted(plan)
    groups, index = [], []
    for base in order:
        x0 = bases.x0[base]
        for t in plan[base]:
            fwd = [unit_seed(seed, "forward", base, t, k) for k in range(restarts)]
            rev = [unit_seed(seed, "reverse", base, t, k) for k in range(restarts)]
            if protocol == "branch":
                x_t = bases.states[base][float(t)].expand(restarts, *x0.shape[1:]).clone()
            else:
                x_t = hooks.noise_to(scheduler, x0.expand(restarts, *x0.shape[1:]), _json_number(t),
                                     generator=generators(fwd), num_inference_steps=model.num_inference_steps)
            groups.append((x_t, _json_number(t), generators(rev)))
            index.append((base, t))
    finals, evals = hooks.denoise_staircase(model.pipe, groups, num_inference_steps=model.num_inference_steps,
                                            max_batch=batch_size, eta=model.eta, return_evaluations=True,
                                            **model.conditioning)
    for (base, t), x in zip(index, finals):
        _check_finite(x, f"base {base} restarted at timestep {_json_number(t)}",
                      f"run seed {seed}, reverse seed of restart 0: {unit_seed(seed, 'reverse', base, t, 0)}")
    x0s = [bases.x0[b] for b in order]
    try:
        labels = classify(model, torch.cat(list(finals) + x0s, dim=0))
    except NonFiniteSample as e:
        raise FloatingPointError(_describe(e, index, order, restarts, seed)) from None
    restart_labels, base_labels = labels[:-len(order)], labels[-len(order):]
    records, pos = [], 0
    for i, base in enumerate(order):
        n = len(plan[base])
        rec = {
            "base": int(base),
            "base_label": int(base_labels[i]),
            "timesteps": [_json_number(t) for t in plan[base]],
            "labels": restart_labels[pos * restarts:(pos + n) * restarts].reshape(n, restarts).tolist(),
            "nfe": int(sum(int(e.sum()) for e in evals[pos:pos + n])),  # counted in the loop
        }
        if base in keep_images:
            cells = [x[:1] for x in finals[pos:pos + n]] + [x0s[i]]
            rec["images"] = hooks.decode(model.pipe, torch.cat(cells, dim=0)).float().cpu()
        records.append(rec)
        pos += n
    return records


def _describe(e: NonFiniteSample, index, order, restarts: int, seed: int) -> str:
    """The unit and seed behind sample ``e.index`` of a classified batch (restarts, then base samples)."""
    n_restarts = len(index) * restarts
    if e.index >= n_restarts:
        base = order[e.index - n_restarts]
        return f"{e.what} for base sample {base} (run seed {seed}, base seed {unit_seed(seed, 'base', base)})"
    base, t = index[e.index // restarts]
    k = e.index % restarts
    return (f"{e.what} for base {base} restarted at timestep {_json_number(t)} (run seed {seed}, "
            f"restart {k}, reverse seed {unit_seed(seed, 'reverse', base, t, k)})")


def batch_groups(plan: dict, restarts: int, batch_size: int) -> list[list[int]]:
    """Consecutive base samples whose restarts fill about one batch: the fixed batch groups of a round.

    A function of the plan and the options only (never of processes or interruptions), so
    every run computes each base in the same batch.
    """
    per_base = restarts * max((len(ts) for ts in plan.values()), default=1)
    size = max(1, batch_size // max(per_base, 1))
    order = sorted(plan)
    return [order[i:i + size] for i in range(0, len(order), size)]


def _json_number(t):
    """A timestep as an int when it is whole (JSON, seeds and scheduler arguments alike), else a float."""
    t = float(t)
    return int(t) if t == int(t) else t


def staircase_nfe(grid, timesteps, restarts: int, scheduler, num_inference_steps: int | None = None,
                  rows: int = 1) -> int:
    """Model evaluations of ``restarts`` re-samples from each of ``timesteps``: the cost model
    of the adaptive search and of replays (the sweep itself records what its loop counted).

    A restart runs one model call per entry of its restart plan (`schedule.restart_plan`): the
    grid steps at or below its timestep, Heun's second stages, PNDM's warm-up, an off-grid
    start's own first step; ``rows`` = 2 with classifier-free guidance. ``grid`` (the N-step
    grid) gives N when ``num_inference_steps`` is None.
    """
    n = len(grid) if num_inference_steps is None else int(num_inference_steps)
    return int(sum(_plan_length(scheduler, float(t), n) for t in timesteps) * restarts * rows)


def _plan_length(scheduler, t: float, n: int) -> int:
    from .schedule import restart_plan

    key = (id(scheduler), t, n)
    if key not in _PLAN_LENGTHS:
        if len(_PLAN_LENGTHS) > 4096:
            _PLAN_LENGTHS.clear()
        _PLAN_LENGTHS[key] = (scheduler, len(restart_plan(scheduler, _json_number(t), n)[1]))
    return _PLAN_LENGTHS[key][1]


_PLAN_LENGTHS: dict = {}  # (scheduler id, t, N) -> (scheduler, steps); the scheduler kept so ids stay valid
