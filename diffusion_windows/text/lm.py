"""Causal language models from local folders: loading, prompts, base responses, decoding.

- `load_lm(path, *, dtype, device) -> (model, tokenizer)`: any ``transformers`` causal LM
  saved in a folder (``AutoModelForCausalLM`` + ``AutoTokenizer``, ``local_files_only``);
- `prompt_ids(tokenizer, prompt, *, system)`: the chat template when the tokenizer has one
  (with an optional system prompt), else the plain prompt;
- `generate(model, tokenizer, prompts, *, seeds, ...)`: one base response per prompt, each
  from its own seed, through the same sampler as the restarts (`resample.resample` with no
  response tokens kept), so a base response and a restart from its prompt are draws of the
  same law;
- `decode(tokenizer, ids)`: text without special tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .resample import eos_ids, resample

__all__ = ["DTYPES", "load_lm", "prompt_ids", "generate", "decode"]

# Files any tokenizer saved by `save_pretrained` leaves (fast, sentencepiece or BPE vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer_config.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_lm(path, *, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) from a local folder, model in eval mode on ``device`` in ``dtype``."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()  # loading bars and notices: the run's own progress speaks for it
    tlog.disable_progress_bar()
    try:
        return _load_lm(path, dtype, device)
    finally:
        tlog.set_verbosity(level)
        tlog.enable_progress_bar()


def _load_lm(path, dtype, device):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such model folder")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: no readable model config ({_cause(err)})") from err
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=DTYPES[dtype])
    except ValueError as err:
        raise ValueError(f"{path}: not a causal language model ({type(config).__name__}: {_cause(err)})") from err
    except OSError as err:
        raise ValueError(f"{path}: no readable model weights ({_cause(err)})") from err
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ValueError(f"{path}: no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: no tokenizer ({_cause(err)})") from err
    if not getattr(tokenizer, "vocab_size", 0):   # transformers 5 builds an empty one from a bare config
        raise ValueError(f"{path}: no tokenizer (an empty vocabulary)")
    if tokenizer.eos_token_id is not None and model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    if not eos_ids(model):
        raise ValueError(f"{path}: no eos token (neither the tokenizer nor the generation config names one)")
    return model.to(device).eval(), tokenizer


def _first_line(err) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _cause(err) -> str:
    """A library's error in one line that keeps its kind: ``TypeError: first line of its message``
    (a bug in a model's code reads as one, not as a file that cannot be read)."""
    return f"{type(err).__name__}: {_first_line(err)}"


def prompt_ids(tokenizer, prompt: str, *, system: str | None = None) -> list[int]:
    """Token ids of a prompt: chat template (user turn, generation prompt) when there is one."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = f"{system}\n\n{prompt}" if system else prompt
        ids = tokenizer(text)["input_ids"]
    if not ids:  # an empty prompt: start from BOS (or EOS, which GPT-2 uses as its BOS)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [start]
    return list(ids)


def generate(model, tokenizer, prompts: Sequence[str], *, seeds: Sequence[int], max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, system: str | None = None,
             batch_size: int = 64) -> list[tuple[list[int], list[int]]]:
    """Base responses: ``(prompt ids, response ids)`` per prompt, response ``i`` drawn with ``seeds[i]``.

    The response includes its eos token when the model stopped by itself.
    """
    if len(seeds) != len(prompts):
        raise ValueError(f"generate needs one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
    ids = [prompt_ids(tokenizer, p, system=system) for p in prompts]
    out = resample(model, [(p, []) for p in ids], [(i, 0) for i in range(len(ids))], restarts=1,
                   seed=lambda b, kept, k: int(seeds[b]), max_new_tokens=max_new_tokens,
                   temperature=temperature, top_p=top_p, batch_size=batch_size)
    return [(p, list(t[0])) for p, t in zip(ids, out.tokens)]


def decode(tokenizer, ids) -> str:
    """Text of token ids, special tokens (eos, padding) left out."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return tokenizer.decode(list(ids), skip_special_tokens=True)
