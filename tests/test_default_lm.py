"""The bundled default language model (assets/default_lm) and its tasks (text/tasks.py):
offline loading, size, sampled formats, and its next-token law against the exact theory."""
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_windows.text import tasks
from diffusion_windows.theory import text as tx

ASSET = Path(__file__).resolve().parent.parent / "assets" / "default_lm"


# ---------------------------------------------------------------- tasks (no model)

def test_addition_format_and_reader():
    assert tasks.addition_response(457, 386) == "7 + 6 = 13 , 5 + 8 + 1 = 14 , 4 + 3 + 1 = 8 , = 843"
    assert tasks.addition_response(95, 7) == "5 + 7 = 12 , 9 + 0 + 1 = 10 , = 102"
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = tasks.sample_addition(rng)
        assert not tasks.is_held_out(a, b) and 10 <= a < 100_000 and 10 <= b < 100_000
        assert tasks.read_answer(tasks.addition_response(a, b)) == a + b
    a, b = tasks.sample_addition(rng, held_out=True)
    assert tasks.is_held_out(a, b)
    assert tasks.read_answer("7 + 6 = 1 3 , = 8 4 3 <eos>") == 843  # as the tokenizer decodes it
    assert tasks.read_answer("7 + 6 = 13 ,") is None and tasks.read_answer("") is None
    held = np.mean([tasks.is_held_out(a, b) for a in range(100, 200) for b in range(100, 200)])
    assert 0.08 < held < 0.12


def test_story_sampler_and_reader():
    rng = np.random.default_rng(1)
    lang = tasks.DEFAULT_STORY
    labels = []
    for _ in range(400):
        g, text = tasks.sample_story(rng)
        words = text.split()
        assert len(words) == lang.length and words[-1] == tasks.GENRES[g]
        assert tasks.genre_label(text) == g and tasks.read_genre(text + " <eos>") == tasks.GENRES[g]
        tx.posterior(lang, words[:-1])  # every sampled story is possible
        labels.append(g)
    assert set(labels) == {0, 1, 2, 3}
    assert tasks.read_world("ship wave pirate") == "sea" and tasks.read_genre("pirate ship") is None
    assert [f.name for f in tasks.STORY_FEATURES] == ["genre", "world"]
    assert tasks.STORY_FEATURES[1].values == {"sea": (0, 1), "land": (2, 3)}


def test_tokenizer_is_word_level_and_round_trips():
    tok = tasks.build_tokenizer()
    enc = tok.encode("add 457 + 38 :")
    assert enc.tokens == ["<bos>", "add", "4", "5", "7", "+", "3", "8", ":"]
    assert tok.token_to_id("<pad>") == 0 and tok.get_vocab_size() == len(tasks.vocabulary())
    _, story = tasks.sample_story(np.random.default_rng(2))
    ids = tok.encode(story, add_special_tokens=False).ids
    assert len(ids) == tasks.DEFAULT_STORY.length and tok.decode(ids) == story
    assert tok.token_to_id("<unk>") not in ids


# ---------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def lm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ASSET, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(ASSET, local_files_only=True)
    return model, tok


def test_shipped_folder_is_small_and_complete(lm):
    files = {p.name: p.stat().st_size for p in ASSET.iterdir()}
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert name in files
    assert sum(files.values()) < 5e6
    model, tok = lm
    assert sum(p.numel() for p in model.parameters()) < 3e6
    assert model.config.n_positions <= 96
    g = model.generation_config
    assert g.do_sample and g.temperature == 1.0 and g.top_p == 1.0 and not g.top_k
    assert tok.eos_token_id == model.config.eos_token_id and tok.pad_token_id == model.config.pad_token_id
    assert tok(tasks.STORY_PROMPT).input_ids[0] == tok.bos_token_id


def exact_next(lang, vocab, words):
    """The exact next-token law [V] after the response words of a story."""
    p = np.zeros(len(vocab))
    for w, q in tx.next_word_probs(lang, words).items():
        p[vocab[w]] = q
    return p


PREFIXES = [  # response words so far (M = 24 cues, then the ending)
    [],                                                # nothing: world and genre unknown
    ["morning", "night"],                              # uniform cues: still unknown
    ["ship", "morning", "wave"],                       # sea, genre unknown
    ["castle", "friend", "shuriken", "night"],         # land, and a ninja cue
    ["harbor", "morning", "night"] * 8,                # 24 cues, sea: the ending is 1/2, 1/2
    ["village"] + ["journey"] * 9 + ["katana"] + ["night"] * 13,  # 24 cues, samurai: decided
]


def mean_kl(model, tok, prefixes):
    lang = tasks.DEFAULT_STORY
    vocab = tok.get_vocab()
    prompt = tok(tasks.STORY_PROMPT).input_ids
    kls = []
    with torch.no_grad():
        for words in prefixes:
            ids = torch.tensor([prompt + [vocab[w] for w in words]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1).numpy()
            p = exact_next(lang, vocab, words)
            kls.append(float(np.sum(p[p > 0] * (np.log(p[p > 0]) - logp[p > 0]))))
    return np.array(kls)


def test_next_token_law_matches_the_exact_posterior_predictive(lm):
    model, tok = lm
    kl = mean_kl(model, tok, PREFIXES)
    assert kl.max() < 0.05, kl          # trained: KL(exact || model) ~ 1e-3 nats
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    random = GPT2LMHeadModel(model.config).eval()
    assert mean_kl(random, tok, PREFIXES).min() > 0.5  # an untrained model fails by far


def test_sampled_stories_and_additions_are_well_formed(lm):
    model, tok = lm
    lang = tasks.DEFAULT_STORY
    torch.manual_seed(0)
    ids = tok([tasks.STORY_PROMPT] * 16, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=lang.length + 2)
    formed = 0
    for row in out[:, ids.input_ids.shape[1]:].tolist():
        words = tok.convert_ids_to_tokens(row)
        if tok.eos_token in words:
            words = words[:words.index(tok.eos_token)]
            formed += (len(words) == lang.length and set(words[:-1]) <= set(lang.cue_words)
                       and words[-1] in tasks.GENRES)
    assert formed >= 15
    answers = []
    for a, b in [(457, 386), (12, 3456), (999, 1)]:
        p = tok(tasks.addition_prompt(a, b), return_tensors="pt")
        row = model.generate(**p, max_new_tokens=60)[0, p.input_ids.shape[1]:]
        answers.append(tasks.read_answer(tok.decode(row, skip_special_tokens=True)))
    assert all(isinstance(x, int) for x in answers), answers
