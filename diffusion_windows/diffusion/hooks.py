"""Restart hooks on any diffusers pipeline: noise to a timestep, denoise from it (DESIGN.md,
"The measurement"). The denoising loop is written here over the pipeline's public parts (its
denoiser through an adapter, `diffusion.denoisers`; ``scheduler``; ``vae``; ``encode_prompt``)
so that a restart runs exactly the grid's steps below its timestep, with the scheduler's full
loop (``scale_model_input``, ``init_noise_sigma``), classifier-free guidance, and a fresh copy
of the scheduler per call (multistep history never leaks; ``pipe.scheduler`` is never modified).

Time arguments are training timesteps (``timestep``): an integer in ``[0, T)`` or one of the
N-step grid's own values (fractional for Euler-type schedulers); see `restart_timestep` for
integers off the grid. Flow-matching schedulers: ``timestep = 1000 s``, any number in
``[0, 1000]``, a restart off the grid starting exactly there on the pipeline's own grid
(Flux's ``sigmas`` and ``mu`` come from the adapter, ``grid_kwargs``). Samples live in model
space: latents for latent models, ``[-1, 1]`` pixels otherwise; the loop's intermediate states
are at the scale of the scheduler's noise process (`diffusion.noise`: variance exploding for
Euler-type schedulers, ``(1 - s) x0 + s eps`` for flow matching).

Conditioning: the pipeline's own ``__call__`` keywords (``prompt``, ``prompt_embeds``,
``negative_prompt_embeds``, ``guidance_scale``, ``pooled_prompt_embeds``, ...), turned into one
conditioning object by the adapter's ``prepare``; or that object itself (``condition=``).
"""
from __future__ import annotations

import bisect
import copy
import inspect
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from . import noise as noise_table
from .denoisers import denoiser
from .denoisers.unet import pipeline_default
from .images import decode, encode
from .schedule import check_timestep, inference_timesteps, restart_plan, restart_timestep

__all__ = ["Trajectory", "sample_shape", "noise_to", "denoise_from", "denoise_staircase", "sample_trajectory",
           "restart_timestep", "decode", "encode"]


@dataclass(frozen=True)
class Trajectory:
    """One generation: ``states[i]`` is the loop state entering grid step ``i`` (at training
    timestep ``timesteps[i]``, at the scheduler's loop scale); ``final`` is the model-space
    output (not decoded)."""

    timesteps: np.ndarray
    states: tuple
    final: torch.Tensor


# ----------------------------------------------------------------------------- arguments
def _default_steps(pipe) -> int:
    steps = pipeline_default(pipe, "num_inference_steps", 50)
    return steps if isinstance(steps, int) else 50


def _check_generator(generator, n: int):
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ValueError(f"generator list of length {len(generator)} for a batch of {n}")
        if any(g is None for g in generator):
            if not all(g is None for g in generator):
                raise ValueError("generator list mixes None and torch.Generator")
            return None
        return list(generator)
    return generator


def _condition(den, n, hw, condition, call_kwargs):
    """The prepared conditioning: ``condition`` as given, or the adapter's from the call keywords."""
    given = {k: v for k, v in call_kwargs.items() if v is not None}
    if condition is not None:
        if given:
            raise ValueError(f"condition= and {sorted(given)[0]}= both given: pass one")
        return condition
    return den.prepare(n, hw, **given)


def sample_shape(den, height=None, width=None, num_frames=None) -> tuple:
    """The adapter's loop-state shape without the batch: ``[C, H, W]``, or ``[C, F, H, W]`` for video
    (``num_frames`` decoded frames; an image pipeline refuses it)."""
    if num_frames is None:
        return tuple(den.sample_shape(height, width))
    if "num_frames" not in inspect.signature(den.sample_shape).parameters:
        raise ValueError(f"num_frames={num_frames!r}: pipeline {type(den.pipe).__name__} makes images, not clips")
    return tuple(den.sample_shape(height, width, num_frames=num_frames))


# ----------------------------------------------------------------------------- the loop
def _model_input(scheduler, x, t):
    """``scheduler.scale_model_input(x, t)``; flow-matching schedulers have none (the identity)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return x if scale is None else scale(x, t)


def _step_kwargs(scheduler, generator, eta) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if eta is not None and "eta" in params:
        kwargs["eta"] = eta
    if generator is not None and "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _rows(cond) -> int:
    """Denoiser rows one sample takes per model call: two with classifier-free guidance."""
    return 1 if cond is None else cond.rows


def _loop(den, scheduler, seq, x, cond, generator, eta, record=None):
    """Run ``scheduler`` over the timesteps ``seq`` from ``x``; ``record`` collects the
    samples entering the listed positions of ``seq``."""
    kwargs = _step_kwargs(scheduler, generator, eta)
    for k, t in enumerate(seq):
        if record is not None and k in record:
            record[k] = x
        out = den(_model_input(scheduler, x, t), t, cond)
        x = scheduler.step(out, t, x, **kwargs, return_dict=False)[0]
    return x


# ----------------------------------------------------------------------------- public API
@torch.inference_mode()
def noise_to(scheduler, x0, timestep, *, noise=None, generator=None, num_inference_steps=None, grid_kwargs=None):
    """A draw of ``q(x_t | x_0)`` at training ``timestep`` (one value or a 1-D tensor, one per
    sample): ``s(t) (x0 + sigma(t) noise)`` in the scale the scheduler's loop works in
    (`diffusion.noise`; VP: ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise``, Euler-type:
    ``x0 + sigma noise``, flow matching: ``(1 - s) x0 + s noise`` with ``s = timestep / 1000``).
    ``generator`` may be a list with one generator per sample. With
    ``num_inference_steps``, a timestep of that grid is noised to the sigma the scheduler runs
    it at (Karras and other custom sigmas; `schedule.sigma`; DPM-Solver's integer flow grid): pass
    it for restarts that `denoise_from` continues on that grid.

    Example::

        x_t = noise_to(pipe.scheduler, x0, 500, generator=[torch.Generator().manual_seed(i) for i in range(len(x0))])
    """
    if not torch.is_tensor(x0) or x0.ndim < 1:
        raise ValueError(f"x0 {type(x0).__name__} is not a batched tensor")
    n = x0.shape[0]
    t = timestep
    if isinstance(t, (list, tuple, np.ndarray)):
        t = torch.as_tensor(np.asarray(t, dtype=np.float64))
    if isinstance(t, torch.Tensor) and t.ndim == 1:
        if len(t) != n:
            raise ValueError(f"timestep has {len(t)} values for a batch of {n}")
        t = np.array([check_timestep(scheduler, v) for v in t.tolist()])
    elif isinstance(t, torch.Tensor) and t.ndim > 1:
        raise ValueError(f"timestep shape {tuple(t.shape)} is neither a scalar nor 1-D")
    else:
        t = np.full(n, check_timestep(scheduler, t))
    if noise is None:
        noise = randn_tensor(x0.shape, generator=_check_generator(generator, n), device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    return noise_table.noise_to(scheduler, x0, t, noise, num_inference_steps, grid_kwargs)


@torch.inference_mode()
def denoise_from(pipe, x_t, timestep, *, num_inference_steps=None, generator=None, prompt=None,
                 prompt_embeds=None, negative_prompt_embeds=None, guidance_scale=None, eta=None,
                 output_type="latent", pooled_prompt_embeds=None,
                 negative_pooled_prompt_embeds=None, condition=None, **call_kwargs):
    """Reverse process of ``pipe``'s model and scheduler from training ``timestep`` to the end,
    on the pipeline's N-step grid: the steps whose timesteps are <= ``timestep``.

    ``x_t`` is in the scheduler's loop scale (what `noise_to` returns). Off the grid, an integer
    timestep starts exactly there where the scheduler accepts custom timesteps, else at the
    largest grid timestep below it (`restart_timestep` says which). Model calls: one per entry
    of the restart plan (Heun: two per step but its last; PNDM: its warm-up). ``generator``:
    one, or a list with one per sample. ``output_type``: "latent" returns the model-space
    sample, "pt" images in [0, 1] (`decode`). Conditioning: the pipeline's ``__call__``
    keywords (SDXL also takes ``pooled_prompt_embeds``/``negative_pooled_prompt_embeds``), or a
    prepared ``condition``.

    Example::

        x0_new = denoise_from(pipe, noise_to(pipe.scheduler, x0, 500), 500, num_inference_steps=20, output_type="pt")
    """
    if output_type not in ("latent", "pt"):
        raise ValueError(f"output_type {output_type!r} is not 'latent' or 'pt'")
    den = denoiser(pipe)
    den.check_sample(x_t)
    x = x_t.to(den.device, den.dtype)
    n_steps = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    cond = _condition(den, x.shape[0], x.shape[-2:], condition, dict(
        prompt=prompt, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        guidance_scale=guidance_scale, pooled_prompt_embeds=pooled_prompt_embeds,
        negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, **call_kwargs))
    grid_kwargs = den.grid_kwargs(n_steps, tuple(x.shape[2:]))  # (H, W); video: (F, H, W)
    scheduler, seq, start = restart_plan(pipe.scheduler, timestep, n_steps, x.device, grid_kwargs)
    generator = _check_generator(generator, x.shape[0])
    if len(seq) == 0:
        x = noise_table.to_model_space(scheduler, x, start)
    else:
        x = _loop(den, scheduler, seq, x, cond, generator, eta)
    return decode(pipe, x) if output_type == "pt" else x


@torch.inference_mode()
def sample_trajectory(pipe, *, batch_size=1, num_inference_steps=None, generator=None,
                      prompt=None, prompt_embeds=None, negative_prompt_embeds=None,
                      guidance_scale=None, eta=None, pooled_prompt_embeds=None,
                      negative_pooled_prompt_embeds=None, condition=None, height=None, width=None,
                      num_frames=None, **call_kwargs) -> Trajectory:
    """Generate ``batch_size`` samples from pure noise (drawn with ``generator`` as the stock
    pipelines do, times ``init_noise_sigma``), keeping the state entering every grid step:
    ``denoise_from(pipe, traj.states[i], traj.timesteps[i])`` branches from the sampler's own
    state (exactly reproducing ``final`` for history-free deterministic samplers). Video
    pipelines (Wan, CogVideoX) also take ``num_frames`` (decoded frames; states ``[N, C, F, H, W]``).

    Example::

        traj = sample_trajectory(pipe, batch_size=4, num_inference_steps=20)
        branch = denoise_from(pipe, traj.states[10], traj.timesteps[10], num_inference_steps=20)
    """
    den = denoiser(pipe)
    device, dtype = den.device, den.dtype
    n_steps = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    shape = (int(batch_size), *sample_shape(den, height, width, num_frames))
    cond = _condition(den, shape[0], shape[-2:], condition, dict(
        prompt=prompt, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        guidance_scale=guidance_scale, pooled_prompt_embeds=pooled_prompt_embeds,
        negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, **call_kwargs))
    grid_kwargs = den.grid_kwargs(n_steps, shape[2:])
    grid = inference_timesteps(pipe.scheduler, n_steps, grid_kwargs)
    scheduler, seq, _ = restart_plan(pipe.scheduler, grid[0], n_steps, device, grid_kwargs)
    generator = _check_generator(generator, shape[0])
    draw = getattr(den, "draw_noise", None)  # CogVideoX draws in its transformer's layout [N, F, C, H, W]
    x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) if draw is None else \
        draw(shape, generator, device, dtype)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching: none (pure noise at s = 1)
    values = seq.double().cpu().numpy()
    positions = [int(np.nonzero(np.abs(values - g) < 1e-3)[0][-1]) for g in grid]
    record = dict.fromkeys(positions)
    final = _loop(den, scheduler, seq, x, cond, generator, eta, record)
    return Trajectory(timesteps=grid, states=tuple(record[p] for p in positions), final=final)


# ----------------------------------------------------------------------------- staircase
def _norm_generators(generators, n: int) -> list:
    if generators is None:
        return [None] * n
    if isinstance(generators, torch.Generator):
        generators = [generators]
    if len(generators) != n:
        raise ValueError(f"group with {n} samples has {len(generators)} generators")
    return list(generators)


def _gens(gens: list):
    """Generator list for a batch: all or none (a mix would not be reproducible)."""
    return _check_generator(gens, len(gens)) if gens else None


@torch.inference_mode()
def denoise_staircase(pipe, groups, *, num_inference_steps=None, max_batch=None, prompt=None,
                      prompt_embeds=None, negative_prompt_embeds=None, guidance_scale=None,
                      eta=None, pooled_prompt_embeds=None, negative_pooled_prompt_embeds=None,
                      return_evaluations=False, condition=None, **call_kwargs):
    """`denoise_from` for many ``groups`` of ``(x_t, timestep, generators)`` at once.

    Single-step schedulers (`noise.SchedulerKind.single_step`: DDPM, DDIM, Euler, Euler
    ancestral, FlowMatch Euler, flow-ancestral) run one loop from the largest timestep; a group
    joins when the loop reaches its start (an off-grid custom start first takes its own step to
    the next grid timestep), so
    every model call is one batch at a scalar timestep. Schedulers with history or
    second-order stages (DPM-Solver, UniPC, PNDM, Heun) run one loop per distinct start.
    ``max_batch`` caps the samples per loop: samples are ordered by start (then group order)
    and cut into fixed chunks, so results are a fixed function of the groups. Conditioning is
    shared (batch 1) or given per sample, for all samples in group order. ``generators``: one
    per sample (or None for all groups). Returns one model-space tensor per group, in group
    order; with ``return_evaluations`` also, per group, each sample's model evaluations as
    counted in the loop (an int tensor: one per model call it took part in, two with guidance).

    Example::

        outs = denoise_staircase(pipe, [(x_500, 500, gens_a), (x_200, 200, gens_b)], num_inference_steps=20)
    """
    den = denoiser(pipe)
    n_steps = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    device, dtype = den.device, den.dtype
    xs, starts, gens = [], [], []
    for x_t, timestep, generators in groups:
        den.check_sample(x_t)
        xs.append(x_t.to(device, dtype))
        starts.extend([timestep] * x_t.shape[0])
        gens.extend(_norm_generators(generators, x_t.shape[0]))
    if not xs:
        return ([], []) if return_evaluations else []
    x_all = torch.cat(xs)
    total = x_all.shape[0]
    cond = _condition(den, total, x_all.shape[-2:], condition, dict(
        prompt=prompt, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        guidance_scale=guidance_scale, pooled_prompt_embeds=pooled_prompt_embeds,
        negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, **call_kwargs))
    grid_kwargs = den.grid_kwargs(n_steps, tuple(x_all.shape[2:]))
    plans, keys = {}, []
    for t in starts:  # one restart plan per distinct start
        key = float(t) if not torch.is_tensor(t) else float(t.item())
        if key not in plans:
            plans[key] = restart_plan(pipe.scheduler, t, n_steps, device, grid_kwargs)
        keys.append(key)
    base = restart_plan(pipe.scheduler, inference_timesteps(pipe.scheduler, n_steps, grid_kwargs)[0], n_steps, device,
                        grid_kwargs)
    staircase = noise_table.scheduler_kind(pipe.scheduler).single_step
    base_seq = base[1].double().cpu().numpy()

    def join_of(key):  # (join position in the base loop, needs its own first step)
        seq = plans[key][1].double().cpu().numpy()
        for pre in (0, 1):
            rest = seq[pre:]
            tail = base_seq[len(base_seq) - len(rest):]
            if len(rest) <= len(base_seq) and np.allclose(tail, rest, rtol=0, atol=1e-3):
                return len(base_seq) - len(rest), pre
        raise RuntimeError(f"restart at {key} is not on the base grid")  # not reached

    if staircase:
        join = {key: join_of(key) for key in plans}
        order = sorted(range(total), key=lambda i: (join[keys[i]], -keys[i], i))
    else:
        order = sorted(range(total), key=lambda i: (-keys[i], i))
    out = torch.empty_like(x_all)
    evals = torch.zeros(total, dtype=torch.int64)
    rows = _rows(cond)
    chunk = total if not max_batch else int(max_batch)
    if chunk < 1:
        raise ValueError(f"max_batch {max_batch!r} must be >= 1")
    if staircase:
        pieces = [order[i:i + chunk] for i in range(0, total, chunk)]
    else:  # one loop per distinct start, each cut into chunks
        pieces = []
        for key in sorted(set(keys), reverse=True):
            members = [i for i in order if keys[i] == key]
            pieces += [members[i:i + chunk] for i in range(0, len(members), chunk)]
    for piece in pieces:
        index = torch.tensor(piece, device=device)
        x = x_all.index_select(0, index)
        c = cond.take(index) if cond is not None else None
        g = [gens[i] for i in piece]
        if not staircase:
            scheduler, seq, start = plans[keys[piece[0]]]
            scheduler = copy.deepcopy(scheduler)  # a fresh one per chunk: no shared history
            if len(seq) == 0:
                x = noise_table.to_model_space(scheduler, x, start)
            else:
                x = _loop(den, scheduler, seq, x, c, _gens(g), eta)
                evals[piece] += rows * len(seq)
            out[index] = x
            continue
        joins = [join[keys[i]] for i in piece]
        # off-grid custom starts: their own first step, batched per start
        for key in sorted({keys[i] for i, (_, pre) in zip(piece, joins) if pre}, reverse=True):
            rows_of = [r for r, i in enumerate(piece) if keys[i] == key]
            sel = torch.tensor(rows_of, device=device)
            scheduler, seq, _ = plans[key]
            scheduler = copy.deepcopy(scheduler)
            x[sel] = _loop(den, scheduler, seq[:1], x[sel], c and c.take(sel), _gens([g[r] for r in rows_of]), eta)
            evals[[piece[r] for r in rows_of]] += rows
        scheduler, seq = copy.deepcopy(base[0]), base[1]
        first = joins[0][0]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        positions = [j for j, _ in joins]
        for k in range(first, len(seq)):
            m = bisect.bisect_right(positions, k)  # samples that have joined: a prefix
            kwargs = _step_kwargs(scheduler, _gens(g[:m]), eta)
            out_k = den(_model_input(scheduler, x[:m], seq[k]), seq[k], c)
            evals[piece[:m]] += rows
            x[:m] = scheduler.step(out_k, seq[k], x[:m], **kwargs, return_dict=False)[0]
        for key in {keys[i] for i in piece if join[keys[i]] == (len(seq), 0)}:  # no step ran
            sel = torch.tensor([r for r, i in enumerate(piece) if keys[i] == key], device=device)
            x[sel] = noise_table.to_model_space(scheduler, x[sel], key)
        out[index] = x
    sizes = [x_t.shape[0] for x_t, _, _ in groups]
    if return_evaluations:
        return list(out.split(sizes)), list(evals.split(sizes))
    return list(out.split(sizes))
