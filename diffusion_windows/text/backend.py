"""The text backend: the forward-reverse experiment on a causal language model (THEORY.md,
"Autoregressive models"): truncate a response, resample the rest, classify the outcome.

`TextBackend(model, tokenizer, prompts, outcome=..., samples=..., seed=...)` is the engine's
`Backend` for transformers causal LMs. Its time is the fraction of a response's tokens removed
(``time_unit = "fraction removed"``): a restart at ``t`` keeps the first
``kept_tokens(t, L)`` tokens of a response of ``L`` tokens (`theory.text.kept_tokens`, the one
cutting rule; ``t = 0`` keeps it whole, ``t = 1`` only the prompt) and samples the rest.

- base samples: base ``b`` is a response to prompt ``b % len(prompts)`` drawn with
  ``unit_seed(seed, "base", b)``; its length ``L`` counts its content tokens, not the
  end-of-sequence token it ended with, and a cut that keeps all ``L`` keeps that end too
  (``t = 0`` is the finished response). All base responses are made when the backend is built: an open
  label set (answers) is read off them (`text.outcomes.Outcome.fit`), and everything else
  becomes "other", as forking-paths does;
- `run`: all truncation points and restarts of a batch group decode together
  (`text.resample.resample`: one pass per base response gives every prefix's cache); restart
  ``k`` from a prefix of ``kept`` tokens of base ``b`` draws from
  ``unit_seed(seed, "reverse", b, kept, k)`` (a function of the prefix, so two grids that cut
  the same prefix share its restarts; results never depend on batching or processes); a plan
  entry ``(t, k0, k1)`` runs restarts ``k0..k1-1`` only (``--timesteps auto`` adds re-samples in
  later rounds; `engine.backend.restart_slots`), decoded with the other points of the same
  ``(k0, k1)``; its label is the outcome of the kept tokens plus the continuation; ``nfe``
  counts the tokens sampled;
- `cost(t)`: tokens to sample from ``t``: about ``t`` times the mean response length;
- theory: exact for the story language of the bundled default (`theory.text`), in fractions;
- `probe(batch_size)`: ``--batch-size auto`` (one forward pass at the longest sequence);
  `report(merged, settings, out)`: per-response jumps and ``tokens.html`` (`text.report`).

Base responses are made when the backend is built (``seed``: the run seed); `prepare` refuses a
run whose seed is another (one line), so they always follow the run's seed.

Example::

    backend = TextBackend(model, tokenizer, ["What is 2 + 2?"], outcome="answer", samples=8, seed=0)
    Engine(backend, Settings(samples=8, restarts=8, timesteps=list(backend.grid)), MemoryStore()).run()
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.backend import UnitResult, restart_slots
from ..engine.seeds import unit_seed
from ..theory.text import DEFAULT_FRACTIONS, kept_tokens
from . import lm
from .outcomes import OTHER, make_outcome
from .resample import resample

__all__ = ["TextBackend", "FractionAxis", "Prompt", "label_bases"]


@dataclass(frozen=True)
class Prompt:
    """A question, and its reference answer when the outcome compares with one."""

    text: str
    reference: object = None
    task: str | None = None      # which task of a mixed run it belongs to (the default's "story", "addition")


@dataclass(frozen=True)
class FractionAxis:
    """Text time: the fraction removed is also the theory's time (`analysis.compare`)."""

    def to_theory(self, times) -> np.ndarray:
        return np.asarray(times, dtype=float)

    def from_theory(self, t):
        if t is None or not np.isfinite(t):
            return None, ("above" if t == np.inf else None)
        if t > 1:
            return None, "above"
        if t < 0:
            return None, "below"
        return float(round(t, 6)), None


def label_bases(backend, labels=None, features=None) -> None:
    """Set ``backend``'s outcome labels (fitted on its base responses when ``labels`` is None), its
    features (one over the labels when None) and each base response's label: what every language-model
    backend (truncation or re-masking) does once its base responses exist."""
    texts = [backend.text(b) for b in range(len(backend.bases))]
    refs = [backend.prompt_of(b).reference for b in range(len(backend.bases))]
    if labels is None:
        backend.outcome = backend.outcome.fit(texts, refs)
        labels = backend.outcome.labels
    backend.labels = tuple(labels)
    if features is None:
        from ..features import labels_feature

        features = (labels_feature(backend.labels),)
    backend.features = tuple(features)
    backend.base_labels = [backend.label(t, r) for t, r in zip(texts, refs)]


class LanguageTheory:
    """What every language-model backend (truncation or re-masking) shares for the comparison with
    theory: the fraction axis and the story language's exact predictions (``self.story``, the run's
    `text.tasks` language or None, and ``self.features``)."""

    theory_ahead = False  # the story language's exact sums take a second: no process beside the run

    def axis(self):
        return FractionAxis()

    def theory(self, store, merged, *, delta: float, times, device=None):
        """The story language's exact theory when the run has one, else ``(None, reason)``."""
        if self.story is None:
            return None, "no theory for this language model's outcomes (exact only for the story language)"
        return self.story.predictions(self.features, delta=delta, times=times), None


class TextBackend(LanguageTheory):
    """The engine's `Backend` for a causal language model (module docstring)."""

    time_unit = "fraction removed"
    more_samples = False  # base responses are made (and the label set fit) when built: none beyond --samples

    def __init__(self, model, tokenizer, prompts, *, outcome, samples: int, seed: int, features=None, labels=None,
                 grid=DEFAULT_FRACTIONS, max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0,
                 system: str | None = None, batch_size: int = 64, theory=None, name: str = "model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.prompts = tuple(p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts)
        if not self.prompts:
            raise ValueError("a text backend needs at least one prompt")
        self.max_new_tokens, self.temperature, self.top_p = int(max_new_tokens), float(temperature), float(top_p)
        self.system, self.story = system, theory
        self.grid = tuple(sorted({float(t) for t in grid}))
        self.outcome = make_outcome(outcome)
        self._check_context()
        self.seed = int(seed)  # the run seed the base responses (and an open label set) are made from
        self.bases = self._generate(samples, seed, batch_size)
        if self.bases and not any(self.length(b) for b in range(len(self.bases))):
            raise ValueError(f"every base response is empty: the model ends at once after {self.prompts[0].text!r}")
        label_bases(self, labels, features)
        lengths = [self.length(b) for b in range(len(self.bases))]
        self.mean_length = float(np.mean(lengths)) if lengths else 0.0

    # ------------------------------------------------------------------ base responses
    def prompt_of(self, b: int) -> Prompt:
        return self.prompts[b % len(self.prompts)]

    def _check_context(self):
        """A prompt and ``max_new_tokens`` must fit in the model's positions (past them it fails deep inside)."""
        self._longest = max(len(lm.prompt_ids(self.tokenizer, p.text, system=self.system)) for p in self.prompts)
        cfg = self.model.config
        limit = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if not limit:
            return
        if self._longest + self.max_new_tokens > limit:
            raise ValueError(f"--max-new-tokens: {self.max_new_tokens} tokens after a prompt of {self._longest} exceed "
                             f"the model's {limit} positions")

    def _generate(self, samples, seed, batch_size):
        from .resample import eos_ids

        prompts = [self.prompt_of(b).text for b in range(samples)]
        out = lm.generate(self.model, self.tokenizer, prompts, seeds=[unit_seed(seed, "base", b) for b in range(samples)],
                          max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                          system=self.system, batch_size=batch_size)
        self._stops = set(eos_ids(self.model))
        return out

    def text(self, b: int, response=None) -> str:
        """Text of base ``b``'s response (or of ``response``, token ids after its prompt)."""
        return lm.decode(self.tokenizer, self.bases[b][1] if response is None else response)

    def length(self, b: int) -> int:
        """Content tokens of base ``b``'s response (its end-of-sequence token not counted)."""
        r = self.bases[b][1]
        return len(r) - 1 if r and r[-1] in self._stops else len(r)

    def tokens(self, b: int) -> list:
        """Base ``b``'s response as token strings (for display; its end-of-sequence token left out)."""
        return [self.tokenizer.decode([i]) for i in self.bases[b][1][:self.length(b)]]

    def label(self, text: str, reference=None) -> int:
        value = self.outcome(text, reference)
        return self.labels.index(value) if value in self.labels else self.labels.index(OTHER)

    # ------------------------------------------------------------------ time and cost
    def kept(self, b: int, time: float) -> int:
        """Tokens of base ``b``'s response kept at ``time``: `kept_tokens` of its content, and its end
        of sequence when every content token is kept (`prefix`)."""
        return self.prefix(b, kept_tokens(float(time), self.length(b)))

    def prefix(self, b: int, position: int) -> int:
        """Tokens of base ``b``'s response to keep for content position ``position`` (0..L): the end of
        sequence comes with the last content token."""
        return len(self.bases[b][1]) if position >= self.length(b) else int(position)

    def snap(self, times) -> list:
        return sorted({float(t) for t in times})

    def cost(self, time: float) -> int:
        return max(1, int(round(float(time) * self.mean_length)))

    def describe(self) -> dict:
        return {"name": f"{type(self.model).__name__} sampling", "stochastic": self.temperature > 0,
                "temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}

    def schedule_arrays(self) -> dict:
        return {}

    # ------------------------------------------------------------------ restarts
    def prepare(self, bases, *, total, seed, batch_size, start=0):
        """Base responses are made when the backend is built, from its ``seed`` (an open label set is read
        off them): a run with another seed is refused, never run on responses of the wrong seed."""
        if int(seed) != self.seed:
            raise ValueError(f"seed: the run's seed is {seed}, but this text backend made its base responses "
                             f"with seed {self.seed}: build it with seed={seed}")
        if any(b >= len(self.bases) for b in bases):
            raise ValueError(f"base samples {sorted(b for b in bases if b >= len(self.bases))} beyond the "
                             f"{len(self.bases)} made when the text backend was built")

    def continuations(self, points, *, restarts: int, seed: int, batch_size: int, first: int = 0):
        """Resampled continuations of ``points`` [(base, kept)]: restarts ``first..first + restarts - 1``,
        restart ``k`` seeded by (base, kept, k)."""
        return resample(self.model, self.bases, points, restarts=restarts, max_new_tokens=self.max_new_tokens,
                        seed=lambda b, kept, k: unit_seed(seed, "reverse", b, kept, k + first),
                        temperature=self.temperature, top_p=self.top_p, batch_size=batch_size)

    def outcomes_of(self, points, tokens) -> list:
        """Label indices of every continuation: the outcome of the kept tokens plus the new ones."""
        out = []
        for (b, kept), conts in zip(points, tokens):
            head, ref = self.bases[b][1][:kept], self.prompt_of(b).reference
            out.append(tuple(self.label(self.text(b, head + list(c)), ref) for c in conts))
        return out

    def run(self, plan: dict, *, restarts: int, seed: int, batch_size: int, keep=()) -> list:
        """Restart each base of ``plan`` (base -> fractions, or slots ``(fraction, k0, k1)``); the slots
        that share ``(k0, k1)`` decode together (a plain plan: all of them, in one call)."""
        order = sorted(plan)
        slots = [(b, t, k0, k1) for b in order for t, k0, k1 in restart_slots(plan[b], restarts)]
        drawn = (lambda conts: len(conts[0])) if self.temperature == 0 else (lambda conts: sum(map(len, conts)))
        labels, nfe = [None] * len(slots), [0] * len(slots)
        for k0, k1 in sorted({(k0, k1) for _, _, k0, k1 in slots}):
            mine = [i for i, s in enumerate(slots) if s[2:] == (k0, k1)]
            points = [(slots[i][0], self.kept(slots[i][0], slots[i][1])) for i in mine]
            res = self.continuations(points, restarts=k1 - k0, seed=seed, batch_size=batch_size, first=k0)
            for i, row, conts in zip(mine, self.outcomes_of(points, res.tokens), res.tokens):
                labels[i], nfe[i] = tuple(row), int(drawn(conts))
        results, pos = [], 0
        for b in order:
            n = sum(1 for s in slots if s[0] == b)
            mine = slots[pos:pos + n]
            results.append(UnitResult(b, self.base_labels[b], tuple(float(t) for _, t, _, _ in mine),
                                      tuple(labels[pos:pos + n]), int(sum(nfe[pos:pos + n])),
                                      first=tuple(k0 for _, _, k0, _ in mine)))
            pos += n
        return results

    def probe(self, batch_size: int) -> None:
        """The heaviest single step of a restart at ``batch_size`` (`engine.memory`): one forward pass over
        ``batch_size`` rows of the longest prompt plus ``max_new_tokens`` (no decoding step's cache is longer)."""
        import torch

        device = next(self.model.parameters()).device
        ids = torch.zeros((int(batch_size), self._longest + self.max_new_tokens), dtype=torch.long, device=device)
        with torch.inference_mode():
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def report(self, merged, settings, out) -> dict:
        """Per-response jumps and critical tokens, ``tokens.html`` (`text.report`): extra keys of ``windows.json``."""
        from .report import report

        return report(self, merged, settings, out)

