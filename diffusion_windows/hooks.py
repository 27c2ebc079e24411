"""Restart hooks on any diffusers pipeline: noise to a timestep, denoise from it (DESIGN.md,
"The measurement"). The denoising loop is written here over the pipeline's public parts
(``unet``, ``scheduler``, ``vae``, ``encode_prompt``) so that a restart runs exactly the
grid's steps below its timestep, with the scheduler's full loop (``scale_model_input``,
``init_noise_sigma``), classifier-free guidance, and a fresh copy of the scheduler per call
(multistep history never leaks; ``pipe.scheduler`` is never modified).

Time arguments are training timesteps (``timestep``): an integer in ``[0, T)`` or one of the
N-step grid's own values (fractional for Euler-type schedulers); see
:func:`diffusion_windows.schedule.restart_timestep` for integers off the grid.
Samples live in model space: latents for latent models, ``[-1, 1]`` pixels otherwise; for
Euler-type schedulers intermediate samples are at variance-exploding scale.
"""
from __future__ import annotations

import bisect
import copy
import inspect
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)
from diffusers.utils.torch_utils import randn_tensor

from .conditioning import _conditioning, _device_dtype
from .schedule import (alpha_bar, check_timestep, inference_timesteps, is_variance_exploding,
                       restart_plan, restart_timestep, sigma)

__all__ = ["Trajectory", "noise_to", "denoise_from", "denoise_staircase", "sample_trajectory",
           "restart_timestep", "decode", "encode"]

# Schedulers whose step() depends only on (timestep, sample): samples may join a running loop.
_SINGLE_STEP = (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler)


@dataclass(frozen=True)
class Trajectory:
    """One generation: ``states[i]`` is the model-space sample entering grid step ``i`` (at
    training timestep ``timesteps[i]``, VE scale for Euler-type schedulers); ``final`` is the
    model-space output (not decoded)."""

    timesteps: np.ndarray
    states: tuple
    final: torch.Tensor


# ----------------------------------------------------------------------------- pipeline parts
def _check_pipe(pipe) -> None:
    for part in ("unet", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise ValueError(f"pipeline {type(pipe).__name__} has no {part}")


def _default_steps(pipe) -> int:
    p = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
    return p.default if p is not None and isinstance(p.default, int) else 50


def _check_sample(pipe, x, name="x_t") -> None:
    if not torch.is_tensor(x) or x.ndim != 4:
        raise ValueError(f"{name} shape {tuple(getattr(x, 'shape', ()))} is not [N, C, H, W]")
    cfg = pipe.unet.config
    channels = getattr(cfg, "in_channels", None)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes {channels} channels")
    if getattr(pipe, "vae", None) is None:
        size = getattr(cfg, "sample_size", None)
        size = (size, size) if isinstance(size, int) else size
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            raise ValueError(f"{name} shape {tuple(x.shape)}: the model takes size {tuple(size)}")
    else:
        factor = 2 ** (len(getattr(cfg, "block_out_channels", (0,))) - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"{name} shape {tuple(x.shape)}: size must be a multiple of {factor}")


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


# ----------------------------------------------------------------------------- the loop
def _model_output(pipe, scheduler, cond, x, t):
    """One model call at scalar timestep ``t`` for the batch ``x`` (guidance batched in)."""
    inp = scheduler.scale_model_input(x, t)
    if cond is None:
        out = pipe.unet(inp, t)
        return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
    m = x.shape[0]
    enc, added = cond.embeds[:m], cond.added and {k: v[:m] for k, v in cond.added.items()}
    if cond.negative is not None:
        inp = torch.cat([inp, inp])
        enc = torch.cat([cond.negative[:m], enc])
        if added:
            added = {k: torch.cat([cond.negative_added[k][:m], v]) for k, v in added.items()}
    out = pipe.unet(inp, t, encoder_hidden_states=enc, added_cond_kwargs=added or None,
                    return_dict=False)[0]
    if cond.negative is not None:
        uncond, text = out.chunk(2)
        out = uncond + cond.scale * (text - uncond)
    return out


def _step_kwargs(scheduler, generator, eta) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if eta is not None and "eta" in params:
        kwargs["eta"] = eta
    if generator is not None and "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _loop(pipe, scheduler, seq, x, cond, generator, eta, record=None, evals=None):
    """Run ``scheduler`` over the timesteps ``seq`` from ``x``; ``record`` collects the
    samples entering the listed positions of ``seq``; ``evals`` (int tensor, one per sample)
    counts each sample's model evaluations (one per call, two with guidance)."""
    kwargs = _step_kwargs(scheduler, generator, eta)
    for k, t in enumerate(seq):
        if record is not None and k in record:
            record[k] = x
        out = _model_output(pipe, scheduler, cond, x, t)
        if evals is not None:
            evals += _rows(cond)
        x = scheduler.step(out, t, x, **kwargs, return_dict=False)[0]
    return x


def _rows(cond) -> int:
    """Denoiser rows one sample takes per model call: two with classifier-free guidance."""
    return 1 if cond is None or cond.negative is None else 2


def _to_model_space(scheduler, x, timestep: float):
    """A sample no step ran on: undo the VE scale of Euler-type schedulers (``scheduler`` has
    its grid set: a grid timestep takes the grid's own sigma)."""
    if is_variance_exploding(scheduler):
        n = getattr(scheduler, "num_inference_steps", None)
        return x * float(np.sqrt(alpha_bar(scheduler, timestep, n)))
    return x


def _prepare(pipe, x_t, num_inference_steps):
    _check_pipe(pipe)
    _check_sample(pipe, x_t)
    device, dtype = _device_dtype(pipe)
    n = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    return x_t.to(device, dtype), n


# ----------------------------------------------------------------------------- public API
@torch.inference_mode()
def noise_to(scheduler, x0, timestep, *, noise=None, generator=None, num_inference_steps=None):
    """A draw of ``q(x_t | x_0)`` at training ``timestep`` (one value or a 1-D tensor, one per
    sample): ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise``, returned in the scale the
    scheduler's loop works in (Euler-type: VE scale ``x0 + sigma noise``). ``generator`` may
    be a list with one generator per sample. With ``num_inference_steps``, a timestep of that
    grid is noised to the sigma the scheduler runs it at (Karras and other custom sigmas;
    `schedule.sigma`): pass it for restarts that `denoise_from` continues on that grid.

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
        noise = randn_tensor(x0.shape, generator=_check_generator(generator, n),
                             device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    shape = (n,) + (1,) * (x0.ndim - 1)
    coef = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(shape).to(x0.device, x0.dtype)
    if is_variance_exploding(scheduler):
        return x0 + coef(sigma(scheduler, t, num_inference_steps)) * noise.to(x0)
    a = alpha_bar(scheduler, t, num_inference_steps)
    return coef(np.sqrt(a)) * x0 + coef(np.sqrt(1.0 - a)) * noise.to(x0)


@torch.inference_mode()
def denoise_from(pipe, x_t, timestep, *, num_inference_steps=None, generator=None, prompt=None,
                 prompt_embeds=None, negative_prompt_embeds=None, guidance_scale=None, eta=None,
                 output_type="latent", pooled_prompt_embeds=None,
                 negative_pooled_prompt_embeds=None):
    """Reverse process of ``pipe``'s model and scheduler from training ``timestep`` to the end,
    on the pipeline's N-step grid: the steps whose timesteps are <= ``timestep``.

    ``x_t`` is in the scheduler's loop scale (what :func:`noise_to` returns). Off the grid, an
    integer timestep starts exactly there where the scheduler accepts custom timesteps, else
    at the largest grid timestep below it (:func:`restart_timestep` says which). Model calls:
    one per step (Heun: two per step, one for its last; PNDM: one extra to warm up).
    ``generator``: one, or a list with one per sample. ``output_type``: "latent" returns the
    model-space sample, "pt" images in [0, 1] (:func:`decode`). SDXL also takes
    ``pooled_prompt_embeds``/``negative_pooled_prompt_embeds``.

    Example::

        x0_new = denoise_from(pipe, noise_to(pipe.scheduler, x0, 500), 500, num_inference_steps=20, output_type="pt")
    """
    if output_type not in ("latent", "pt"):
        raise ValueError(f"output_type {output_type!r} is not 'latent' or 'pt'")
    x, n_steps = _prepare(pipe, x_t, num_inference_steps)
    cond = _conditioning(pipe, x.shape[0], x.shape[-2:], prompt, prompt_embeds,
                         negative_prompt_embeds, guidance_scale, pooled_prompt_embeds,
                         negative_pooled_prompt_embeds)
    scheduler, seq, start = restart_plan(pipe.scheduler, timestep, n_steps, x.device)
    generator = _check_generator(generator, x.shape[0])
    if len(seq) == 0:
        x = _to_model_space(scheduler, x, start)
    else:
        x = _loop(pipe, scheduler, seq, x, cond, generator, eta)
    return decode(pipe, x) if output_type == "pt" else x


@torch.inference_mode()
def sample_trajectory(pipe, *, batch_size=1, num_inference_steps=None, generator=None,
                      prompt=None, prompt_embeds=None, negative_prompt_embeds=None,
                      guidance_scale=None, eta=None, pooled_prompt_embeds=None,
                      negative_pooled_prompt_embeds=None) -> Trajectory:
    """Generate ``batch_size`` samples from pure noise (drawn with ``generator`` as the stock
    pipelines do, times ``init_noise_sigma``), keeping the state entering every grid step:
    ``denoise_from(pipe, traj.states[i], traj.timesteps[i])`` branches from the sampler's own
    state (exactly reproducing ``final`` for history-free deterministic samplers).

    Example::

        traj = sample_trajectory(pipe, batch_size=4, num_inference_steps=20)
        branch = denoise_from(pipe, traj.states[10], traj.timesteps[10], num_inference_steps=20)
    """
    _check_pipe(pipe)
    device, dtype = _device_dtype(pipe)
    n_steps = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    cfg = pipe.unet.config
    size = cfg.sample_size if not isinstance(cfg.sample_size, int) else (cfg.sample_size,) * 2
    shape = (int(batch_size), cfg.in_channels, *size)
    cond = _conditioning(pipe, shape[0], size, prompt, prompt_embeds, negative_prompt_embeds,
                         guidance_scale, pooled_prompt_embeds, negative_pooled_prompt_embeds)
    grid = inference_timesteps(pipe.scheduler, n_steps)
    scheduler, seq, _ = restart_plan(pipe.scheduler, grid[0], n_steps, device)
    generator = _check_generator(generator, shape[0])
    x = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    values = seq.double().cpu().numpy()
    positions = [int(np.nonzero(np.abs(values - g) < 1e-3)[0][-1]) for g in grid]
    record = dict.fromkeys(positions)
    final = _loop(pipe, scheduler, seq, x, cond, generator, eta, record)
    return Trajectory(timesteps=grid, states=tuple(record[p] for p in positions), final=final)


@torch.inference_mode()
def decode(pipe, x):
    """Model-space samples -> images in [0, 1] (pixel models: ``x / 2 + 0.5``; latent models:
    the VAE, undoing ``scaling_factor`` and any ``shift_factor``/``latents_mean``).

    Example::

        images = decode(pipe, traj.final)   # [N, C, H, W] in [0, 1]
    """
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return (x.float() / 2 + 0.5).clamp(0, 1)
    cfg = vae.config
    with _upcast(vae):
        z = x.to(vae.device, vae.dtype)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            view = lambda v: torch.tensor(v, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
            z = z * view(std) / cfg.scaling_factor + view(mean)
        else:
            z = z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        images = vae.decode(z, return_dict=False)[0].float()
    # NaN survives clamp: keep it visible so that the caller can refuse it
    return torch.where(torch.isfinite(images), (images / 2 + 0.5).clamp(0, 1), images)


class _upcast:
    """Run a fp16 VAE whose config says ``force_upcast`` in float32, as diffusers' pipelines do
    (SDXL's VAE overflows to NaN in fp16); the VAE is cast back afterwards."""

    def __init__(self, vae):
        self.vae = vae
        self.needed = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))

    def __enter__(self):
        if self.needed:
            self.vae.to(torch.float32)

    def __exit__(self, *exc):
        if self.needed:
            self.vae.to(torch.float16)


@torch.inference_mode()
def encode(pipe, images, *, generator=None):
    """Images in [0, 1] -> model space (pixel models: ``2 x - 1``; latent models: the VAE
    posterior's mode, or a draw with ``generator``, times ``scaling_factor``).

    Example::

        x0 = encode(pipe, images)           # images in [0, 1] -> model space
    """
    _check_pipe(pipe)
    device, dtype = _device_dtype(pipe)
    vae = getattr(pipe, "vae", None)
    if vae is None:
        _check_sample(pipe, images, "images")
        return (images * 2 - 1).to(device, dtype)
    channels = vae.config.in_channels
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"images shape {tuple(getattr(images, 'shape', ()))}: the VAE takes "
                         f"[N, {channels}, H, W]")
    posterior = vae.encode((images * 2 - 1).to(vae.device, vae.dtype)).latent_dist
    z = posterior.sample(generator) if generator is not None else posterior.mode()
    cfg = vae.config
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        view = lambda v: torch.tensor(v, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        z = (z - view(mean)) * cfg.scaling_factor / view(std)
    else:
        z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor
    return z.to(device, dtype)



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
                      return_evaluations=False):
    """:func:`denoise_from` for many ``groups`` of ``(x_t, timestep, generators)`` at once.

    Single-step schedulers (DDPM, DDIM, Euler, Euler ancestral) run one loop from the largest
    timestep; a group joins when the loop reaches its start (an off-grid custom start first
    takes its own step to the next grid timestep), so every model call is one batch at a
    scalar timestep. Schedulers with history or second-order stages (DPM-Solver, UniPC, PNDM,
    Heun) run one loop per distinct start. ``max_batch`` caps the samples per loop: samples
    are ordered by start (then group order) and cut into fixed chunks, so results are a fixed
    function of the groups. Conditioning is shared (batch 1) or given per sample, for all
    samples in group order. ``generators``: one per sample (or None for all groups).
    Returns one model-space tensor per group, in group order; with ``return_evaluations``
    also, per group, each sample's model evaluations as counted in the loop (an int tensor:
    one per model call it took part in, two with guidance).

    Example::

        outs = denoise_staircase(pipe, [(x_500, 500, gens_a), (x_200, 200, gens_b)], num_inference_steps=20)
    """
    _check_pipe(pipe)
    n_steps = _default_steps(pipe) if num_inference_steps is None else int(num_inference_steps)
    device, dtype = _device_dtype(pipe)
    xs, starts, gens = [], [], []
    for x_t, timestep, generators in groups:
        _check_sample(pipe, x_t)
        xs.append(x_t.to(device, dtype))
        starts.extend([timestep] * x_t.shape[0])
        gens.extend(_norm_generators(generators, x_t.shape[0]))
    if not xs:
        return ([], []) if return_evaluations else []
    x_all = torch.cat(xs)
    total = x_all.shape[0]
    cond = _conditioning(pipe, total, x_all.shape[-2:], prompt, prompt_embeds,
                         negative_prompt_embeds, guidance_scale, pooled_prompt_embeds,
                         negative_pooled_prompt_embeds)
    plans, keys = {}, []
    for t in starts:  # one restart plan per distinct start
        key = float(t) if not torch.is_tensor(t) else float(t.item())
        if key not in plans:
            plans[key] = restart_plan(pipe.scheduler, t, n_steps, device)
        keys.append(key)
    base = restart_plan(pipe.scheduler, inference_timesteps(pipe.scheduler, n_steps)[0], n_steps, device)
    staircase = isinstance(pipe.scheduler, _SINGLE_STEP)
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
                x = _to_model_space(scheduler, x, start)
            else:
                x = _loop(pipe, scheduler, seq, x, c, _gens(g), eta)
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
            x[sel] = _loop(pipe, scheduler, seq[:1], x[sel], c and c.take(sel),
                           _gens([g[r] for r in rows_of]), eta)
            evals[[piece[r] for r in rows_of]] += rows
        scheduler, seq = copy.deepcopy(base[0]), base[1]
        first = joins[0][0]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        positions = [j for j, _ in joins]
        for k in range(first, len(seq)):
            m = bisect.bisect_right(positions, k)  # samples that have joined: a prefix
            kwargs = _step_kwargs(scheduler, _gens(g[:m]), eta)
            out_k = _model_output(pipe, scheduler, c, x[:m], seq[k])
            evals[piece[:m]] += rows
            x[:m] = scheduler.step(out_k, seq[k], x[:m], **kwargs, return_dict=False)[0]
        for key in {keys[i] for i in piece if join[keys[i]] == (len(seq), 0)}:  # no step ran
            sel = torch.tensor([r for r, i in enumerate(piece) if keys[i] == key], device=device)
            x[sel] = _to_model_space(scheduler, x[sel], key)
        out[index] = x
    sizes = [x_t.shape[0] for x_t, _, _ in groups]
    if return_evaluations:
        return list(out.split(sizes)), list(evals.split(sizes))
    return list(out.split(sizes))
