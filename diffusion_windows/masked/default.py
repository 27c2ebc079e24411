"""The bundled masked-diffusion language model (``--model default-masked``): the tasks of ``default-text``.

The model (`assets/default_masked`, a diffusers ``LLaDA2Pipeline`` folder holding a
``BertForMaskedLM`` trained by ``experiments/train_default_masked_lm.py``) writes stories of the
story language and step-by-step additions (`text.tasks`), each response with a fixed number of
positions (`masked.language`). A run's base responses alternate as ``default-text``'s do (even
bases the story prompt, odd bases a held-out addition), with the same labels, outcome and
features (`text.default`): genre and world over the stories (nested, coarse first), addition
correctness. The stories' theory is exact under masking (`theory.story_mask`), in fractions masked.
"""
from __future__ import annotations

from dataclasses import dataclass



from ..analysis.compare import Predictions
from ..text import tasks
from ..text.backend import FractionAxis
from ..text.default import FEATURES, LABELS, OUTCOME, _Window, prompts
from ..theory.story import StoryLanguage, story_features
from ..theory.story_mask import predict_masked_windows
from .language import response_length

__all__ = ["LABELS", "FEATURES", "OUTCOME", "prompts", "response_length", "MaskedStoryTheory", "STORY_THEORY",
           "model_folder"]


def model_folder():
    """``assets/default_masked``."""
    from ..bundled import asset

    return asset("default_masked", "model_index.json", "default masked language model")


@dataclass(frozen=True)
class MaskedStoryTheory:
    """The exact theory of the story language under re-masking for the features named after it."""

    language: StoryLanguage

    def predictions(self, features, *, delta: float, times) -> Predictions:
        names = {f["name"] for f in story_features(self.language)}
        story = [f for f in features if f.name in names]
        times = tuple(sorted({float(t) for t in times}))
        windows = [_Window(w.feature, w.value, w.parent_value, w.ideal_retention, w.t_after, w.t_before,
                           w.t_start_before, w.window_exists, float("nan"), w.eps_after, w.eps_before,
                           w.delta_after, w.delta_before, w.w_after, w.w_before, w.base_rate)
                   for w in predict_masked_windows(self.language, story, delta=delta, fractions=times)]
        summary = {"available": True, "theory": "the story language under masking, exact (theory.story_mask)",
                   "theory_time": "fraction masked", "tolerance": float(delta)}
        return Predictions(tuple(windows), times, FractionAxis(), summary)


STORY_THEORY = MaskedStoryTheory(tasks.DEFAULT_STORY)
