"""Language models by name: a run's resolved options -> a `TextBackend`.

- ``"default-text"``: the bundled story/addition model (`text.default`): its prompts, outcome,
  features (genre, world, addition correctness) and the story language's exact theory;
- a folder: any transformers causal LM and its tokenizer (`text.lm.load_lm`; chat template
  applied when it has one, ``--system``), prompts from ``--prompt`` or ``--prompts FILE.jsonl``,
  the outcome from ``--outcome`` (labels read off the base responses for open sets).

A folder that is not a causal LM, has no tokenizer or no end-of-sequence token raises
`errors.ModelLoadError` (one line; the CLI exits 2), as does an empty response set.
"""
from __future__ import annotations

from ..errors import ModelLoadError
from .resolve import DEFAULT_TEXT, read_prompts

__all__ = ["load_backend"]


def load_backend(o: dict):
    """The `TextBackend` a run with resolved options ``o`` runs on (all base responses made)."""
    from . import default, lm
    from .backend import Prompt, TextBackend

    batch = o["batch_size"] if isinstance(o["batch_size"], int) else 64
    common = dict(samples=o["samples"], seed=o["seed"], grid=_grid(o), max_new_tokens=o["max_new_tokens"],
                  temperature=o["temperature"], top_p=o["top_p"], batch_size=batch)
    if o["model"] == DEFAULT_TEXT:
        model, tokenizer = _load(default.model_folder(), o)
        return TextBackend(model, tokenizer, default.prompts(o["samples"], o["seed"]), outcome=default.OUTCOME,
                           labels=default.LABELS, features=default.FEATURES, theory=default.STORY_THEORY,
                           name=DEFAULT_TEXT, **common)
    model, tokenizer = _load(o["model"], o)
    prompts = ([Prompt(o["prompt"])] if o["prompt"] is not None
               else [Prompt(p, r) for p, r in read_prompts(o["prompts"])])
    try:
        return TextBackend(model, tokenizer, prompts, outcome=o["outcome"], system=o["system"], name=o["model"],
                           **common)
    except ValueError as e:
        msg = lm._first_line(e)
        raise ModelLoadError(msg if msg.startswith("--") else f"--model: {msg}") from e


def _load(folder, o):
    from . import lm

    try:
        return lm.load_lm(folder, dtype=o["dtype"], device=o["device"])
    except ValueError as e:
        raise ModelLoadError(f"--model: {lm._first_line(e)}") from e


def _grid(o):
    """The fractions a restart may start from: the requested ones, or (auto) a grid of twentieths."""
    from ..engine.adaptive import auto_times

    if o["timesteps"] == "auto":
        return tuple(round(i / 20, 6) for i in range(21))
    asked = auto_times(o["timesteps"])  # "auto:START:STOP:STEP": that grid
    return tuple(o["timesteps"] if asked is None else asked)
