"""The bundled default language model (``--model default-text``): two tasks in one run.

The model (`assets/default_lm`, a GPT-2-style transformers model trained by
``experiments/train_default_lm.py``) writes stories of the story language and step-by-step
additions (`text.tasks`). A default run's base responses alternate: even bases answer the
story prompt, odd bases a held-out addition problem drawn from the run seed. Labels: the four
genres, then ``correct``/``incorrect`` (an addition's final answer against its sum), then
``other`` (a story without a genre ending). Features: ``genre`` and ``world`` (nested: coarse
first) over the stories, ``addition`` (correctness) over the additions. The stories' theory is
exact (`StoryTheory`: `theory.text` on the language the model was trained on); the additions
have none, and the report counts how often correct and incorrect answers have a jump.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.compare import Predictions
from ..features import Feature
from ..theory.text import StoryLanguage, predict_text_windows
from . import tasks
from .backend import Prompt
from .outcomes import OTHER, Outcome

__all__ = ["LABELS", "FEATURES", "OUTCOME", "STORY_THEORY", "StoryTheory", "prompts", "model_folder",
           "outcome_of"]

LABELS = tuple(tasks.GENRES) + ("correct", "incorrect", OTHER)
FEATURES = tuple(tasks.STORY_FEATURES) + (
    Feature("addition", {"correct": (LABELS.index("correct"),), "incorrect": (LABELS.index("incorrect"),)}),)
STORY_LENGTH = tasks.DEFAULT_STORY.num_cues + 1  # M cues and the ending (the end-of-sequence token is not content)


def outcome_of(text: str, reference=None):
    """A story's genre (its ending), or an addition's correctness against ``reference`` (the sum)."""
    if reference is None:
        return tasks.read_genre(text)
    answer = tasks.read_answer(text)
    return "correct" if answer is not None and int(answer) == int(reference) else "incorrect"


OUTCOME = Outcome(spec="default-text", extract=outcome_of, labels=LABELS, open=False)


def prompts(samples: int, seed: int) -> list:
    """Base ``b``'s prompt: the story prompt for even ``b``, a held-out addition problem for odd ``b``."""
    rng = np.random.default_rng([seed, 20261130])
    out = []
    for b in range(samples):
        if b % 2 == 0:
            out.append(Prompt(tasks.STORY_PROMPT, None, "story"))
        else:
            a, c = tasks.sample_addition(rng, held_out=True)[:2]
            out.append(Prompt(tasks.addition_prompt(a, c), a + c, "addition"))
    return out


def model_folder():
    """``assets/default_lm``."""
    from ..bundled import asset

    return asset("default_lm", "config.json", "default language model")


@dataclass(frozen=True)
class TokensAxis:
    """The theory's time of a story of ``length`` tokens: tokens removed (Def. 4's thresholds are
    integers there; in fractions a sup is not attained, so edges are compared in tokens)."""

    length: int

    def to_theory(self, times) -> np.ndarray:
        from ..theory.text import removed_tokens

        return np.asarray(removed_tokens(np.asarray(times, dtype=float), self.length), dtype=float)

    def from_theory(self, tokens):
        if tokens is None or not np.isfinite(tokens):
            return None, ("above" if tokens == np.inf else None)
        if tokens > self.length:
            return None, "above"
        if tokens < 0:
            return None, "below"
        return round(float(tokens) / self.length, 6), None


@dataclass(frozen=True)
class _Window:
    """A `theory.text.TextWindow` under the names `analysis.compare` reads (theory time: tokens removed)."""

    feature: str
    value: str
    parent_value: str | None
    ideal_retention: tuple
    t_after_ou: float
    t_before_ou: float
    t_start_before_ou: float
    window_exists: bool
    speciation_ou: float
    eps_after: float
    eps_before: float
    delta_after: float
    delta_before: float
    w_after: float
    w_before: float
    base_rate: float


@dataclass(frozen=True)
class StoryTheory:
    """The exact theory of the story language for the features named after it (genre, world)."""

    language: StoryLanguage
    length: int                       # response tokens of a story

    def predictions(self, features, *, delta: float, times) -> Predictions:
        names = {f["name"] for f in _story_feature_dicts(self.language)}
        story = [f for f in features if f.name in names]
        times = tuple(sorted({float(t) for t in times}))
        windows = [_Window(w.feature, w.value, w.parent_value, w.ideal_retention, w.t_after_tokens, w.t_before_tokens,
                           w.t_start_before_tokens, w.window_exists, float("nan"), w.eps_after, w.eps_before,
                           w.delta_after, w.delta_before, w.w_after, w.w_before, w.base_rate)
                   for w in predict_text_windows(self.language, story, delta=delta, fractions=times,
                                                 length=self.length)]
        summary = {"available": True, "theory": "the story language, exact (theory.text)", "length": self.length,
                   "theory_time": f"tokens removed of {self.length}", "tolerance": float(delta)}
        return Predictions(tuple(windows), times, TokensAxis(self.length), summary)


def _story_feature_dicts(language):
    from ..theory.text import story_features

    return story_features(language)


STORY_THEORY = StoryTheory(tasks.DEFAULT_STORY, STORY_LENGTH)
