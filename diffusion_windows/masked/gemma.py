"""diffusers' ``DiffusionGemmaPipeline`` run from a partially corrupted response (``--scheduler pipeline``).

DiffusionGemma is not an absorbing-state (masked) model. It is a block-diffusion encoder-decoder:
a causal encoder reads the prompt and the canvases written so far into a KV cache; a
bidirectional decoder denoises a *canvas* of ``canvas_length`` tokens that starts as uniformly
random tokens (no mask token), fed back its own previous logits (self-conditioning). Its
forward process is *uniform corruption*: at time ``t`` each token is replaced, independently
with probability ``t``, by a token drawn uniformly from the vocabulary (D3PM's uniform kernel
on the linear schedule, ``alpha = 1 - t``; the draw may give the token back). A response of
several canvases is written canvas by canvas, each from ``t = 1`` to ``0`` given the clean
ones before it.

`gemma_loop` is ``DiffusionGemmaPipeline.__call__`` (its canvas loop, self-conditioning,
predictor-corrector sweeps, adaptive stop and end-of-sequence stop) started from any time
``t = 1 - i / N`` of its ``N``-step grid: every canvas of the response is corrupted at ``t``
(positions of `sampler.reveal_schedule`; the replacements are the pipeline's own random canvas
draw) and denoised from the pipeline's step ``i``. ``BlockRefinementScheduler`` (uniform mode)
takes the kept positions as already committed (its ``_committed`` state); ``DiscreteDDIMScheduler``
samples the uniform process's posterior from ``alpha = i / N``; ``EntropyBoundScheduler`` keeps
no state (it redraws the whole canvas every step: kept tokens are context, not frozen). From
``t = 1`` the loop reproduces the stock pipeline token for token (same model calls, same
``scheduler.step`` calls, same generator: ``tests/test_masked_gemma.py``).

Restarts run together: those with the same prompt length and start step share every model
call (a batched KV cache); each row has its own ``torch.Generator`` (its unit seed) and its own
scheduler copy, so a restart's output never depends on which restarts share its batch.
Time unit ``"fraction corrupted"``; ``describe`` records the forward process (``"uniform"``),
and says that the masked-diffusion exact theory does not apply; only ``DiscreteDDIMScheduler``
at temperature 1 without the adaptive stop samples the (uniform) reverse process.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .sampler import Sampled, reveal_schedule

__all__ = ["gemma_loop", "GemmaSampler", "MODEL_CLASS", "round_length"]

MODEL_CLASS = "DiffusionGemmaForBlockDiffusion"


def _split(scheduler, steps: int) -> tuple:
    """(predictor steps, corrected steps, corrector sweeps) as the pipeline splits its per-canvas budget."""
    sweeps = getattr(scheduler.config, "corrector_steps", 0)
    if sweeps > 0:
        corrected = (steps - 1) // (1 + sweeps)
        return steps - corrected * sweeps, corrected, sweeps
    return steps, 0, 0


@torch.no_grad()
def gemma_loop(model, scheduler, prompt_ids, response, corrupted, *, start: int, generators, num_inference_steps=48,
               temperature: float = 0.0, eos_early_stop: bool = True, eos_token_id=None, stability_threshold: int = 1,
               confidence_threshold=0.005) -> tuple:
    """``(sequences [B, L], forward rows per row, model calls)``: ``DiffusionGemmaPipeline.__call__``'s denoising from
    ``response`` [B, L] (L a multiple of ``canvas_length``) with ``corrupted`` [B, L] positions replaced by the
    pipeline's random canvas draws, every canvas from predictor step ``start`` (``0``: the stock pipeline).
    ``prompt_ids`` [B, P] (no padding); ``generators``: one per row. Rows that stopped at an end-of-sequence
    token keep their later canvases as given."""
    device, (batch, p_len) = prompt_ids.device, prompt_ids.shape
    text_config = model.config.get_text_config(decoder=True)
    canvas_length, vocab = int(model.config.canvas_length), int(text_config.vocab_size)
    num_canvases = response.shape[1] // canvas_length
    predictor, corrected, sweeps = _split(scheduler, num_inference_steps)
    kwargs = {"device": device}
    if "block_length" in inspect.signature(scheduler.set_timesteps).parameters:
        kwargs["block_length"] = canvas_length
    scheduler.set_timesteps(predictor, **kwargs)
    step_names = set(inspect.signature(scheduler.step).parameters)
    scheds = [copy.deepcopy(scheduler) for _ in range(batch)]
    out, cur = response.clone(), prompt_ids
    attn = torch.ones_like(prompt_ids)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    rows, calls = [0] * batch, 0
    from transformers import DynamicCache

    cache = DynamicCache(config=text_config)
    for c in range(num_canvases):
        if start >= predictor or finished.all():
            break
        cur_len, lo = cur.shape[1], c * canvas_length
        positions = torch.arange(cur_len, cur_len + canvas_length, device=device).unsqueeze(0)
        cached = cache.get_seq_length()
        model.model.encoder(input_ids=cur[:, cached:], attention_mask=attn, cache=cache,
                            position_ids=torch.arange(cached, cur_len, device=device).unsqueeze(0))
        mask_map = type(model.model.decoder).create_diffusion_decoder_attention_mask(
            config=model.config, inputs_embeds=torch.empty((batch, canvas_length, 0), device=device), cache=cache,
            decoder_attention_mask=torch.nn.functional.pad(attn.bool(), (0, canvas_length), value=True))
        noise = torch.cat([torch.randint(0, vocab, (1, canvas_length), device=device, generator=g) for g in generators])
        bad = corrupted[:, lo:lo + canvas_length]
        canvas = torch.where(bad, noise, response[:, lo:lo + canvas_length])
        for j, s in enumerate(scheds):
            if start > 0 and hasattr(s, "_committed"):   # BlockRefinement (uniform mode): kept = committed
                s._committed = ~bad[j:j + 1]
        active = ~finished
        self_cond, done = None, torch.zeros(batch, dtype=torch.bool, device=device)
        argmax_canvas = canvas
        history = torch.full((max(stability_threshold, 1), batch, canvas_length), -1, dtype=torch.long, device=device)
        for step in range(start, predictor):
            logits = model(decoder_input_ids=canvas, cache=cache, self_conditioning_logits=self_cond,
                           decoder_attention_mask=mask_map, decoder_position_ids=positions).logits.clone()
            calls += 1
            live = (active & ~done).tolist()
            new, preds = [], []
            for j in range(batch):
                rows[j] += int(live[j])
                kw = {k: v for k, v in {"mask_token_id": None, "temperature": temperature,
                                        "generator": generators[j]}.items() if k in step_names}
                if live[j]:
                    o = scheds[j].step(model_output=logits[j:j + 1], timestep=step, sample=canvas[j:j + 1],
                                       return_dict=True, **kw)
                    new.append(o.prev_sample), preds.append(o.pred_logits)
                else:
                    new.append(canvas[j:j + 1]), preds.append(logits[j:j + 1])
            canvas, self_cond = torch.cat(new), torch.cat(preds)
            if step < corrected:
                for _ in range(sweeps):
                    more = model(decoder_input_ids=canvas, cache=cache, self_conditioning_logits=self_cond,
                                 decoder_attention_mask=mask_map, decoder_position_ids=positions).logits.clone()
                    calls += 1
                    canvas = torch.cat([scheds[j].step_correct(
                        model_output=more[j:j + 1], timestep=step, sample=canvas[j:j + 1],
                        generator=generators[j]).prev_sample if live[j] else canvas[j:j + 1] for j in range(batch)])
                    for j in range(batch):
                        rows[j] += int(live[j])
            if confidence_threshold is not None:
                nxt = torch.where(done[:, None], argmax_canvas, self_cond.argmax(dim=-1))
                stable = (history == nxt[None]).all(dim=-1).all(dim=0)
                history = torch.roll(history, shifts=-1, dims=0)
                history[-1] = nxt
                confident = torch.distributions.Categorical(logits=self_cond.float()).entropy().mean(-1) \
                    < confidence_threshold
                done = done | (stable & confident)
                argmax_canvas = nxt
                canvas = torch.where(done[:, None], argmax_canvas, canvas)
                if bool((done | ~active).all()):
                    break
        out[:, lo:lo + canvas_length] = torch.where(active[:, None], canvas, out[:, lo:lo + canvas_length])
        cur = torch.cat([cur, canvas], dim=-1)
        attn = torch.nn.functional.pad(attn, (0, canvas_length), value=1)
        if eos_early_stop and eos_token_id is not None:
            finished = finished | (active & (canvas == eos_token_id).any(dim=-1))
    return out, rows, calls


@dataclass
class GemmaSampler:
    """``DiffusionGemmaPipeline``'s own sampler for `MaskedBackend` (module docstring); ``options`` are `gemma_loop`'s
    keywords (``num_inference_steps``, ``temperature``, ``confidence_threshold``, ...)."""

    model: object
    scheduler: object
    options: dict = field(default_factory=dict)
    time_unit: str = "fraction corrupted"
    batch_size: int = 64

    @classmethod
    def from_parts(cls, model, scheduler, **options):
        if scheduler is None:
            from diffusers import BlockRefinementScheduler

            scheduler = BlockRefinementScheduler()
        options = {"num_inference_steps": 48, "temperature": 0.0, "confidence_threshold": 0.005, **options}
        options["num_inference_steps"] = int(options["num_inference_steps"] or 48)
        return cls(model, scheduler, options=options)

    @property
    def canvas_length(self) -> int:
        return int(self.model.config.canvas_length)

    @property
    def predictor_steps(self) -> int:
        return _split(self.scheduler, self.options["num_inference_steps"])[0]

    def snap(self, times) -> list:
        """Fractions corrupted -> the nearest of the pipeline's grid ``1 - i / N`` (``N`` predictor steps)."""
        n = self.predictor_steps
        return sorted({round(round(min(max(float(t), 0.0), 1.0) * n) / n, 9) for t in times})

    def cost(self, time: float, length: float) -> int:
        """Forward rows of a restart from ``time`` over ``length`` response tokens: its steps in every canvas."""
        per_canvas = float(time) * self.options["num_inference_steps"]
        return max(1, int(round(per_canvas * math.ceil(length / self.canvas_length))))

    def run(self, restarts, *, mask_id=None, eos_id=None, batch_size: int | None = None) -> Sampled:
        """Each `masked.sampler.Restart` corrupted at its ``t`` (positions from its seed) and denoised; restarts with
        the same prompt length and start step share model calls, ``batch_size`` rows at a time."""
        device = next(self.model.parameters()).device
        n, size = self.predictor_steps, int(batch_size or self.batch_size)
        out, rows, calls = [None] * len(restarts), [0] * len(restarts), 0
        groups = {}
        for i, r in enumerate(restarts):
            start = n - int(round(float(r.t) * n))
            groups.setdefault((len(r.prompt), len(r.response), start), []).append(i)
        for (_, length, start), members in sorted(groups.items()):
            if length % self.canvas_length:
                raise ValueError(f"a DiffusionGemma response has a multiple of {self.canvas_length} positions, "
                                 f"got {length}")
            for k in range(0, len(members), size):
                chunk = members[k:k + size]
                rs = [restarts[i] for i in chunk]
                prompt = torch.tensor([list(r.prompt) for r in rs], dtype=torch.long, device=device)
                resp = torch.tensor([list(r.response) for r in rs], dtype=torch.long, device=device)
                bad = torch.from_numpy(np.stack([reveal_schedule(length, r.t, r.seed)[0] for r in rs])).to(device)
                if start == 0:
                    bad[:] = True
                gens = [torch.Generator(device=device).manual_seed(int(r.seed)) for r in rs]
                seq, n_rows, n_calls = gemma_loop(self.model, self.scheduler, prompt, resp, bad, start=start,
                                                  generators=gens, eos_token_id=eos_id, **self.options)
                calls += n_calls
                for j, i in enumerate(chunk):
                    out[i] = _padded(seq[j].tolist(), eos_id)
                    rows[i] = n_rows[j]
        return Sampled(tuple(out), tuple(rows), calls)

    def describe(self) -> dict:
        name = type(self.scheduler).__name__
        temp = float(self.options.get("temperature", 0.0))
        sweeps = int(getattr(self.scheduler.config, "corrector_steps", 0) or 0)
        reverse = name == "DiscreteDDIMScheduler" and temp == 1.0 and self.options.get("confidence_threshold") is None
        note = ("the uniform process's posterior q(x_s | x_t, x0) with x0 drawn from the model at each position"
                + (" (Gibbs corrector sweeps keep the marginal)" if sweeps else "") if reverse else
                f"{name} as DiffusionGemmaPipeline runs it (temperature {temp:g}, adaptive stop "
                f"{self.options.get('confidence_threshold')}): not a sampler of the reverse process; retention "
                "measures this sampler")
        return {"name": f"DiffusionGemmaPipeline's {name} loop from the corrupted response",
                "stochastic": True, "reverse_process": reverse,
                "forward_process": "uniform", "masked_theory": False, "canvas_length": self.canvas_length,
                "predictor_steps": self.predictor_steps,
                "note": note + "; uniform corruption (no mask token): the masked-diffusion exact theory does not apply",
                **{k: v for k, v in self.options.items() if isinstance(v, (int, float, str))}}


def _padded(tokens, eos_id) -> tuple:
    """A response with every token after its first end-of-sequence canvas set to end-of-sequence (as the stock
    pipeline, which stops there, leaves nothing after it)."""
    if eos_id is not None and eos_id in tokens:
        i = tokens.index(eos_id)
        tokens = tokens[:i] + [eos_id] * (len(tokens) - i)
    return tuple(int(v) for v in tokens)


def round_length(model, n: int) -> int:
    """``n`` response positions rounded up to whole canvases, as the pipeline rounds ``gen_length``."""
    c = int(model.config.canvas_length)
    return int(math.ceil(int(n) / c) * c)
