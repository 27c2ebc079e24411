"""The two synthetic tasks of the bundled default language model (`assets/default_lm`).

- Stories of the story language (`theory.text`, THEORY.md "Autoregressive models"): the
  prompt `STORY_PROMPT`, a response of M cue words drawn given a hidden genre, then the
  genre's name, then end-of-sequence. Exactly solvable: its retention and windows are
  known (`theory.text.retention`, `predict_text_windows`). Features "genre" (4 values) and
  "world" (2 values, 2 genres each), read from the ending by `read_genre`.
- Addition written out step by step: "add 457 + 386 :" -> "7 + 6 = 13 , 5 + 8 + 1 = 14 ,
  4 + 3 + 1 = 8 , = 843"; a small model sometimes errs, so correct and incorrect answers
  both occur (`read_answer`, `is_correct`).

Texts are words separated by spaces; the word-level tokenizer (`build_tokenizer`) maps
each word, and each digit of a number, to one token, so cutting a response's tokens cuts
its words (and digits). Samplers take a numpy Generator.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..features import Feature
from ..theory.text import StoryLanguage, story_features

__all__ = [
    "PAD", "BOS", "EOS", "UNK",
    "DEFAULT_STORY", "STORY_PROMPT", "GENRES", "WORLDS", "STORY_FEATURES",
    "read_genre", "genre_label", "read_world", "story_response", "sample_story",
    "ADD_DIGITS", "addition_prompt", "addition_response", "read_answer", "is_correct",
    "is_held_out", "sample_addition",
    "sample_example", "vocabulary", "build_tokenizer", "save_tokenizer",
]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"

# The bundled default's language (THEORY.md's worlds and genres). Why these numbers:
# Def. 4's nested window of a genre inside its world exists only where the world is
# already separated (TV >= 1 - eps^2, eps = 0.059 at delta = 0.1) while the genre is still
# hidden inside it (TV(genre, world) <= eps). Here world cues are 22.5% of the cues and
# uniform ones 77%, so the world is decided gradually over the story (retention from 0.5
# to 0.998 across the fraction grid) and separated only by its last cues (k >= 22 of 24);
# genre cues are rare (0.5%: 11% of stories show one), so the genre is mostly decided by
# the ending: nested windows, coarse (world) first, the genre last. The other way to nest
# (a world decided by the first cues, a genre by frequent genre cues) leaves most of the
# grid at a world retention of 1 - 1e-6, where the rare world switches of a small trained
# model (0.1-0.4% of resamples after 34 min of training, tried) lie far outside sampling
# error.
DEFAULT_STORY = StoryLanguage(
    worlds=("sea", "land"),
    genres=(("pirate", "sailor"), ("ninja", "samurai")),
    uniform_cues=("morning", "night", "friend", "journey"),
    world_cues=(("ship", "wave", "sail", "harbor"), ("castle", "forest", "village", "mountain")),
    genre_cues=(("treasure",), ("anchor",), ("shuriken",), ("katana",)),  # one word each: a rare
    # cue's embedding is learnt faster alone, and the theory depends on class weights only
    num_cues=24,
    p_uniform=0.77,
    p_world=0.225,
    p_genre=0.005,
)
STORY_PROMPT = "tell a story :"
GENRES = DEFAULT_STORY.genre_names
WORLDS = DEFAULT_STORY.worlds
STORY_FEATURES = tuple(Feature(f["name"], f["values"]) for f in story_features(DEFAULT_STORY))

_GENRE_RE = re.compile(r"(?:^|\s)(" + "|".join(GENRES) + r")\s*(?:" + re.escape(EOS) + r")?\s*$")


def read_genre(response: str) -> str | None:
    """The genre named by a story's ending (its last word), or None when it names none."""
    m = _GENRE_RE.search(response)
    return m.group(1) if m else None


def genre_label(response: str) -> int:
    """Index of the ending's genre in GENRES (the label of STORY_FEATURES), -1 if none."""
    g = read_genre(response)
    return -1 if g is None else GENRES.index(g)


def read_world(response: str) -> str | None:
    """The world of the ending's genre, or None."""
    g = genre_label(response)
    return None if g < 0 else WORLDS[DEFAULT_STORY.genre_world[g]]


def story_response(cues, genre: str) -> str:
    """A story's response text: the cue words, then the genre's name."""
    return " ".join([*cues, genre])


def sample_story(rng: np.random.Generator, language: StoryLanguage = DEFAULT_STORY) -> tuple:
    """(genre label, response text) of one story: G ~ weights, M cues i.i.d. from q_G."""
    g = int(rng.choice(len(language.genre_names), p=language.weights))
    idx = rng.choice(len(language.cue_words), size=language.num_cues, p=language.cue_probs[g])
    return g, story_response([language.cue_words[i] for i in idx], language.genre_names[g])


# ---------------------------------------------------------------- addition

ADD_DIGITS = (2, 5)  # digits of each operand, drawn uniformly in this range


def addition_prompt(a: int, b: int) -> str:
    return f"add {a} + {b} :"


def addition_response(a: int, b: int) -> str:
    """Digit-wise sums from the right with carries, then the answer:
    457 + 386 -> "7 + 6 = 13 , 5 + 8 + 1 = 14 , 4 + 3 + 1 = 8 , = 843"."""
    if a < 0 or b < 0:
        raise ValueError(f"operands must be non-negative, got {a}, {b}")
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x} + {y}" + (" + 1" if carry else "") + f" = {s} ,")
        carry = s // 10
    return " ".join(steps + [f"= {a + b}"])


_ANSWER_RE = re.compile(r"(?:^|,)\s*=\s*([\d ]+?)\s*(?:" + re.escape(EOS) + r")?\s*$")


def read_answer(response: str) -> int | None:
    """The final answer of an addition response ("... , = 843", digits possibly spaced
    "= 8 4 3" as the tokenizer decodes them), or None when there is none."""
    m = _ANSWER_RE.search(response)
    return int(m.group(1).replace(" ", "")) if m else None


def is_correct(a: int, b: int, response: str) -> bool:
    return read_answer(response) == a + b


def is_held_out(a: int, b: int) -> bool:
    """One problem in ten (by a hash of the pair) is never trained on: held-out accuracy."""
    return ((a * 1_000_003 + b) * 2_654_435_761 % 2 ** 32) % 10 == 0


def sample_addition(rng: np.random.Generator, *, held_out: bool = False, digits=ADD_DIGITS) -> tuple:
    """(a, b) with operands of digits[0]..digits[1] digits (numbers of digits uniform), from
    the training problems (held_out False) or the held-out ones."""
    lo, hi = digits
    while True:
        na, nb = rng.integers(lo, hi + 1, size=2)
        a = int(rng.integers(10 ** (na - 1), 10 ** na))
        b = int(rng.integers(10 ** (nb - 1), 10 ** nb))
        if is_held_out(a, b) == held_out:
            return a, b


def sample_example(rng: np.random.Generator, story_fraction: float = 0.5) -> tuple:
    """(prompt, response) of one training example: a story with probability
    story_fraction, else a training addition problem."""
    if rng.random() < story_fraction:
        return STORY_PROMPT, sample_story(rng)[1]
    a, b = sample_addition(rng)
    return addition_prompt(a, b), addition_response(a, b)


# ---------------------------------------------------------------- tokenizer

def vocabulary(language: StoryLanguage = DEFAULT_STORY) -> list:
    """Every token, special tokens first (ids 0..3: pad, bos, eos, unk)."""
    words = [PAD, BOS, EOS, UNK, *STORY_PROMPT.split(), *language.cue_words, *language.genre_names,
             "add", "+", "=", ",", *map(str, range(10))]
    seen = []
    for w in words:
        if w not in seen:
            seen.append(w)
    return seen


def build_tokenizer(language: StoryLanguage = DEFAULT_STORY):
    """A `tokenizers` WordLevel tokenizer: words split on whitespace and punctuation, numbers
    into digits, `<bos>` prepended; decoding joins tokens with spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(vocabulary(language))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, vocab[BOS])])
    return tok


def save_tokenizer(folder, language: StoryLanguage = DEFAULT_STORY, model_max_length: int = 96):
    """Write tokenizer.json and tokenizer_config.json to folder, loadable offline by
    `transformers.AutoTokenizer.from_pretrained(folder)`; returns that tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(language), bos_token=BOS, eos_token=EOS,
                                  pad_token=PAD, unk_token=UNK, model_max_length=model_max_length)
    tok.save_pretrained(str(Path(folder)))
    # transformers 5 writes its own class name ("TokenizersBackend"); the older name loads in 4.x too
    cfg = Path(folder) / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                              indent=2) + "\n")
    return tok
