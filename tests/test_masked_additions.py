"""``default-masked``'s tasks: the run reads a response the way the model was trained to write it.

The training data (`masked.language.response_ids`: prompt with ``<bos>``, response padded with end-of-sequence
tokens to its task's fixed length) and the run (the `masked.backend.MaskedBackend` that ``--model
default-masked`` builds: prompt ids from the tokenizer folder, a response's text up to its first
end-of-sequence token, `text.default`'s outcome) must agree: the same prompt ids and response lengths, every
padded true addition ``correct`` (``incorrect`` once its answer is off by one), every padded story its genre.
"""
import numpy as np
import pytest

from diffusion_windows.masked import language
from diffusion_windows.text import tasks


@pytest.fixture(scope="module")
def backend():
    from diffusion_windows.masked.models import load_backend
    from diffusion_windows.options import resolve

    return load_backend(resolve(dict(model="default-masked", samples=40, seed=0, out="unused")))


def _ids(prompt, response):
    return language.response_ids(language.build_tokenizer(), prompt, response)


def test_the_runs_additions_are_laid_out_as_in_training_and_read_back(backend):
    correct, incorrect = backend.labels.index("correct"), backend.labels.index("incorrect")
    additions = [b for b in range(40) if backend.prompt_of(b).task == "addition"]
    assert len(additions) == 20
    for b in additions:
        prompt, total = backend.prompt_of(b).text, backend.prompt_of(b).reference
        a, c = int(prompt.split()[1]), int(prompt.split()[3])
        assert a + c == total and tasks.is_held_out(a, c)
        p, r = _ids(prompt, tasks.addition_response(a, c))
        assert list(backend.bases[b][0]) == p and backend.gen_length(b) == len(r) == len(backend.bases[b][1])
        assert len(p) + len(r) <= backend.model.config.max_position_embeddings
        assert backend.label(backend.text(b, r), total) == correct, backend.text(b, r)
        wrong = tasks.addition_response(a, c).rsplit("=", 1)[0] + f"= {total + 1}"
        assert backend.label(backend.text(b, _ids(prompt, wrong)[1]), total) == incorrect


@pytest.mark.parametrize("a, c", [(99999, 99999), (10, 90), (12345, 99), (50000, 50000)])
def test_the_longest_and_carrying_additions_fit_and_read_correct(backend, a, c):
    p, r = _ids(tasks.addition_prompt(a, c), tasks.addition_response(a, c))
    assert r[-1] == backend.eos_id and len(p) + len(r) <= backend.model.config.max_position_embeddings
    assert backend.label(backend.text(1, r), a + c) == backend.labels.index("correct")


def test_the_runs_stories_are_laid_out_as_in_training_and_read_by_their_ending(backend):
    rng = np.random.default_rng(3)
    stories = [b for b in range(40) if backend.prompt_of(b).task == "story"]
    for b in stories[:10]:
        g, story = tasks.sample_story(rng)
        p, r = _ids(tasks.STORY_PROMPT, story)
        assert list(backend.bases[b][0]) == p and backend.gen_length(b) == len(r)
        assert backend.label(backend.text(b, r), None) == backend.labels.index(tasks.GENRES[g])
