"""The masked backend: the forward-reverse experiment on a masked-diffusion language model
(THEORY.md, "Masked diffusion"): re-mask a response, run the reverse process, classify the outcome.

`MaskedBackend(model, tokenizer, prompts, outcome=..., samples=..., seed=...)` is the engine's
`Backend` for models that take token ids with mask tokens and return logits over the vocabulary
(LLaDA-style, MDLM, a BERT-style masked LM, the bundled ``default-masked``). Time is the
*fraction masked* (``time_unit = "fraction masked"``): a restart at ``t`` masks each response
token independently with probability ``t`` (``t = 0`` keeps the response, ``t = 1`` masks it all;
the prompt never) and runs the reverse process back to ``t = 0``.

- base samples: base ``b`` answers prompt ``b % len(prompts)``: the reverse process from the fully
  masked response (``t = 1``) with ``unit_seed(seed, "base", b)``; a response has a fixed number of
  positions (``gen_length``; a model pads with end-of-sequence tokens), and its text runs to its
  first end-of-sequence token. All base responses are made when the backend is built (an open
  label set is read off them, as for causal LMs: `text.outcomes`);
- `run`: every (base, time, restart) of a batch group is one `masked.sampler.Restart` seeded by
  ``unit_seed(seed, "reverse", b, t, k)``: its mask, reveal order and token draws come from that seed
  only, so results never depend on batch size, rounds or processes; all of them go through
  `masked.sampler.ancestral` together (one forward pass per reverse step for all rows in flight);
  ``nfe`` counts model forward rows;
- `cost(t)`: forward rows of a restart from ``t``: the masked tokens (``steps`` None) or the
  steps below ``t`` that reveal one;
- ``sampler``: ``"ancestral"`` (samples the reverse process: the theory's quantity; not under block-causal
  attention when a response spans more than one block, `masked.attention`: ``describe`` says so) or a
  diffusers pipeline's own loop (`masked.schedulers` for LLaDA2, `masked.gemma` for DiffusionGemma,
  whose forward process is uniform corruption: time unit ``"fraction corrupted"``), flagged in
  ``describe``; a sampler with ``snap`` and ``cost`` sets the grid and the cost model;
- theory: exact for the story language of ``default-masked`` (`theory.story_mask`).

Example::

    backend = MaskedBackend(model, tokenizer, ["What is 2 + 2?"], outcome="answer", samples=8, seed=0,
                            gen_length=32)
    Engine(backend, Settings(samples=8, restarts=8, timesteps=list(backend.grid)), MemoryStore()).run()
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.backend import UnitResult, restart_slots
from ..engine.seeds import unit_seed
from ..text.backend import LanguageTheory, Prompt, label_bases
from ..text.outcomes import OTHER, make_outcome
from .sampler import Restart, ancestral, reveal_schedule

__all__ = ["MaskedBackend", "DEFAULT_GRID"]

DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


class MaskedBackend(LanguageTheory):
    """The engine's `Backend` for a masked-diffusion language model (module docstring)."""

    time_unit = "fraction masked"
    more_samples = False  # base responses are made (and the label set fit) when built

    def __init__(self, model, tokenizer, prompts, *, outcome, samples: int, seed: int, features=None, labels=None,
                 grid=DEFAULT_GRID, gen_length=64, steps: int | None = None, temperature: float = 1.0,
                 top_p: float = 1.0, system: str | None = None, batch_size: int = 64, theory=None,
                 name: str = "model", mask_id: int | None = None, sampler="ancestral"):
        from ..text import lm

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.prompts = tuple(p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts)
        if not self.prompts:
            raise ValueError("a masked backend needs at least one prompt")
        self.mask_id = getattr(tokenizer, "mask_token_id", None) if mask_id is None else int(mask_id)
        if self.mask_id is None:
            raise ValueError(f"{name}: its tokenizer has no mask token (a masked-diffusion model needs one)")
        self.eos_id = getattr(tokenizer, "eos_token_id", None)
        self.steps = None if steps is None else int(steps)
        self.temperature, self.top_p, self.system, self.story = float(temperature), float(top_p), system, theory
        self.sampler = sampler
        self.time_unit = getattr(sampler, "time_unit", self.time_unit)
        self.grid = tuple(self.snap(grid))
        self.outcome = make_outcome(outcome)
        self._length = gen_length if callable(gen_length) else (lambda prompt, n=int(gen_length): n)
        self.prompt_ids = [tuple(lm.prompt_ids(tokenizer, p.text, system=system)) for p in self.prompts]
        self._check_context()
        self.seed = int(seed)
        self.bases = self._generate(samples, seed, batch_size)
        label_bases(self, labels, features)
        self.mean_length = float(np.mean([len(r) for _, r in self.bases])) if self.bases else 0.0

    # ------------------------------------------------------------------ base responses
    def prompt_of(self, b: int) -> Prompt:
        return self.prompts[b % len(self.prompts)]

    def gen_length(self, b: int) -> int:
        """Response positions of base ``b``."""
        return int(self._length(self.prompt_of(b).text))

    def _check_context(self):
        cfg = getattr(self.model, "config", None)
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        for i, p in enumerate(self.prompts):
            n = len(self.prompt_ids[i]) + int(self._length(p.text))
            if limit and n > limit:
                raise ValueError(f"--max-new-tokens: {int(self._length(p.text))} response positions after a prompt "
                                 f"of {len(self.prompt_ids[i])} tokens exceed the model's {limit} positions")

    def _generate(self, samples, seed, batch_size):
        restarts = [Restart(self.prompt_ids[b % len(self.prompts)], (self.mask_id,) * self.gen_length(b), 1.0,
                            unit_seed(seed, "base", b)) for b in range(samples)]
        res = self.reverse(restarts, batch_size=batch_size)
        return [(restarts[b].prompt, res.responses[b]) for b in range(samples)]

    def reverse(self, restarts, *, batch_size: int):
        """Sampled responses of ``restarts`` (`masked.sampler.Restart`) with this backend's sampler."""
        if self.sampler == "ancestral":
            return ancestral(self.model, restarts, mask_id=self.mask_id, steps=self.steps,
                             temperature=self.temperature, top_p=self.top_p, batch_size=batch_size)
        return self.sampler.run(restarts, mask_id=self.mask_id, eos_id=self.eos_id, batch_size=batch_size)

    def content(self, response) -> list:
        """A response's tokens up to and without its first end-of-sequence token."""
        r = list(response)
        return r[:r.index(self.eos_id)] if self.eos_id is not None and self.eos_id in r else r

    def text(self, b: int, response=None) -> str:
        from ..text import lm

        return lm.decode(self.tokenizer, self.content(self.bases[b][1] if response is None else response))

    def length(self, b: int) -> int:
        """Content tokens of base ``b``'s response (end-of-sequence padding not counted)."""
        return len(self.content(self.bases[b][1]))

    def tokens(self, b: int) -> list:
        """Base ``b``'s response as token strings, all ``gen_length`` positions (for display)."""
        return [self.tokenizer.decode([i]) for i in self.bases[b][1]]

    def label(self, text: str, reference=None) -> int:
        value = self.outcome(text, reference)
        return self.labels.index(value) if value in self.labels else self.labels.index(OTHER)

    # ------------------------------------------------------------------ time and cost
    def snap(self, times) -> list:
        """Times as given, or the sampler's grid times nearest them (a sampler with a ``snap``)."""
        snap = getattr(self.sampler, "snap", None)
        return snap(times) if snap is not None else sorted({float(t) for t in times})

    def cost(self, time: float) -> int:
        if hasattr(self.sampler, "cost"):
            return self.sampler.cost(time, self.mean_length)
        masked = float(time) * self.mean_length
        if self.steps is not None:
            masked = min(masked, math.ceil(float(time) * self.steps))
        return max(1, int(round(masked)))

    def describe(self) -> dict:
        from .attention import describe as attention   # how the model is called (LLaDA2: block-causal)

        how = attention(self.model)
        if self.sampler != "ancestral":
            return {**self.sampler.describe(), **how}
        split = self._split_by_blocks(how.get("block_length"))
        note = {} if not split else {"reverse_process_note": (
            f"block-causal attention: the responses of {split} of {len(self.prompts)} prompts span more than one "
            f"block of {how['block_length']}: a token is drawn given its own and earlier blocks only, never "
            "the tokens (kept or revealed) of a later block")}
        return {"name": "ancestral sampler of the masked process", "stochastic": self.temperature > 0,
                "reverse_process": not split, **note, "steps": self.steps, "temperature": self.temperature,
                "top_p": self.top_p, **how}

    def _split_by_blocks(self, block_length) -> int:
        """Prompts whose response positions fall in more than one attention block (0 without block attention):
        there a response token never reads the later blocks, so the sampler's conditional is not the posterior
        given every kept token (`masked.attention`)."""
        if not block_length:
            return 0
        ends = [(len(ids), len(ids) + self.gen_length(i) - 1) for i, ids in enumerate(self.prompt_ids)]
        return sum(first // block_length != last // block_length for first, last in ends if last >= first)

    def schedule_arrays(self) -> dict:
        return {}

    def mask_of(self, b: int, time: float, k: int, seed: int):
        """The positions restart ``k`` of base ``b`` at ``time`` masked [bool gen_length] (from its seed)."""
        return reveal_schedule(self.gen_length(b), float(time), unit_seed(seed, "reverse", b, float(time), k))[0]

    # ------------------------------------------------------------------ restarts
    def prepare(self, bases, *, total, seed, batch_size, start=0):
        """Base responses are made when the backend is built, from its ``seed``: another run seed is refused."""
        if int(seed) != self.seed:
            raise ValueError(f"seed: the run's seed is {seed}, but this masked backend made its base responses "
                             f"with seed {self.seed}: build it with seed={seed}")
        if any(b >= len(self.bases) for b in bases):
            raise ValueError(f"base samples {sorted(b for b in bases if b >= len(self.bases))} beyond the "
                             f"{len(self.bases)} made when the masked backend was built")

    def restarts_of(self, b: int, time: float, k0: int, k1: int, seed: int) -> list:
        prompt, response = self.bases[b]
        return [Restart(prompt, response, float(time), unit_seed(seed, "reverse", b, float(time), k))
                for k in range(k0, k1)]

    def run(self, plan: dict, *, restarts: int, seed: int, batch_size: int, keep=()) -> list:
        """Restart each base of ``plan`` (base -> fractions masked, or slots ``(fraction, k0, k1)``); every
        restart of the group runs through one `reverse` call."""
        order = sorted(plan)
        slots = [(b, t, k0, k1) for b in order for t, k0, k1 in restart_slots(plan[b], restarts)]
        runs = [r for b, t, k0, k1 in slots for r in self.restarts_of(b, t, k0, k1, seed)]
        res = self.reverse(runs, batch_size=batch_size)
        results, pos = [], 0
        for b in order:
            mine = [s for s in slots if s[0] == b]
            labels, nfe = [], 0
            for _, t, k0, k1 in mine:
                n = k1 - k0
                labels.append(tuple(self.label(self.text(b, r), self.prompt_of(b).reference)
                                    for r in res.responses[pos:pos + n]))
                nfe += int(sum(res.rows[pos:pos + n]))
                pos += n
            results.append(UnitResult(b, self.base_labels[b], tuple(float(t) for _, t, _, _ in mine), tuple(labels),
                                      nfe, first=tuple(k0 for _, _, k0, _ in mine)))
        return results

    def probe(self, batch_size: int) -> None:
        """The heaviest single step at ``batch_size`` (`engine.memory`): one forward pass over ``batch_size`` rows of
        the longest prompt and response."""
        import torch

        device = next(self.model.parameters()).device
        if self.sampler != "ancestral":   # a pipeline's own loop: one fully noised batch of the longest prompt
            i = max(range(len(self.prompts)), key=lambda i: len(self.prompt_ids[i]) + self.gen_length(i))
            self.reverse([Restart(self.prompt_ids[i], (self.mask_id,) * self.gen_length(i), 1.0, k)
                          for k in range(int(batch_size))], batch_size=int(batch_size))
            return
        n = max(len(self.prompt_ids[i]) + int(self._length(p.text)) for i, p in enumerate(self.prompts))
        ids = torch.full((int(batch_size), n), self.mask_id, dtype=torch.long, device=device)
        with torch.inference_mode():
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def report(self, merged, settings, out) -> dict:
        """Per-response curves and jumps, token influence and ``tokens.html`` (`masked.report`)."""
        from .report import report

        return report(self, merged, settings, out)
