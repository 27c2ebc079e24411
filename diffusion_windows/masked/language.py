"""The bundled masked-diffusion model's language: the tasks of `text.tasks` with a mask token and
fixed response lengths.

A masked-diffusion LM writes a response of a fixed number of positions at once, so a response is
its content, then end-of-sequence tokens up to the task's length (as LLaDA pads with its
end-of-text token): ``STORY_LENGTH`` positions for a story (24 cues, the ending, one
end-of-sequence), ``ADDITION_LENGTH`` for an addition (at most 50 content tokens). The
tokenizer is `text.tasks`' word-level one with ``<mask>`` added as a special token (id 42).
End-of-sequence tokens carry no information about the story's genre: THEORY.md, "Masked
diffusion", lets them drop out of the sums.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..text import tasks

__all__ = ["MASK", "STORY_LENGTH", "ADDITION_LENGTH", "response_length", "build_tokenizer", "save_tokenizer",
           "response_ids"]

MASK = "<mask>"
STORY_LENGTH = tasks.DEFAULT_STORY.num_cues + 2    # cues, ending, end-of-sequence
ADDITION_LENGTH = 52                               # 5-digit + 5-digit: 50 content tokens, then end-of-sequence


def response_length(prompt: str) -> int:
    """Positions of the response to ``prompt`` (a story's, or an addition's)."""
    return STORY_LENGTH if prompt.strip() == tasks.STORY_PROMPT else ADDITION_LENGTH


def build_tokenizer():
    """`text.tasks.build_tokenizer` (a `tokenizers.Tokenizer`) with ``<mask>`` appended as a special token."""
    tok = tasks.build_tokenizer()
    tok.add_special_tokens([MASK])
    return tok


def save_tokenizer(folder, model_max_length: int = 96):
    """Write the tokenizer (``mask_token`` set) to ``folder``, loadable offline by ``AutoTokenizer``."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), bos_token=tasks.BOS, eos_token=tasks.EOS,
                                  pad_token=tasks.PAD, unk_token=tasks.UNK, mask_token=MASK,
                                  model_max_length=model_max_length)
    tok.save_pretrained(str(Path(folder)))
    cfg = Path(folder) / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                              indent=2) + "\n")
    return tok


def response_ids(tok, prompt: str, response: str) -> tuple:
    """(prompt ids with ``<bos>``, response ids padded with end-of-sequence to `response_length`)."""
    eos = tok.token_to_id(tasks.EOS)
    p = tok.encode(prompt).ids
    r = tok.encode(response, add_special_tokens=False).ids
    n = response_length(prompt)
    if len(r) >= n:
        raise ValueError(f"a response of {len(r)} tokens does not fit {n} positions")
    return p, r + [eos] * (n - len(r))
