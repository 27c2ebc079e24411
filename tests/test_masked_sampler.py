"""The ancestral sampler of the masked process (`masked.sampler`): on a table model whose conditionals are the
story language's exact ones it lies on the exact curve under masking (`theory.story_mask`); its restarts do
not depend on the batch size; its schedule is the masked process's."""
import numpy as np
import pytest
import torch

from diffusion_windows.masked.sampler import Restart, ancestral, reveal_schedule
from diffusion_windows.theory.story import StoryLanguage, posterior
from diffusion_windows.theory.story_mask import retention_masked

TINY = StoryLanguage(worlds=("sea", "land"), genres=(("pirate", "sailor"), ("ninja",)), uniform_cues=("day",),
                     world_cues=(("ship",), ("castle",)), genre_cues=(("gold",), ("rope",), ("blade",)),
                     num_cues=4, p_uniform=0.4, p_world=0.35, p_genre=0.25, genre_weights=(0.3, 0.2, 0.5))
VOCAB = ["<bos>", "<mask>", "<eos>", *TINY.cue_words, *TINY.genre_names]
ID = {w: i for i, w in enumerate(VOCAB)}
MASK, EOS, BOS = ID["<mask>"], ID["<eos>"], ID["<bos>"]


class TableModel(torch.nn.Module):
    """Exact conditionals of the story language: response = M cues, the ending, one end-of-sequence token after
    a one-token prompt. A masked cue: the posterior predictive given the kept cues (and the ending, if kept); the
    ending: the posterior of the genre; the last position: end-of-sequence."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.calls += 1
        m = TINY.num_cues
        out = torch.full((*input_ids.shape, len(VOCAB)), -1e9)
        for r, row in enumerate(input_ids.tolist()):
            cues = [VOCAB[i] for i in row[1:1 + m] if i != MASK]
            end = row[1 + m]
            if end != MASK:
                post = np.zeros(len(TINY.genre_names))
                post[TINY.genre_names.index(VOCAB[end])] = 1.0
            else:
                post = posterior(TINY, cues)
            cue_law = post @ TINY.cue_probs
            with np.errstate(divide="ignore"):
                for p in range(1, 1 + m):
                    out[r, p, [ID[c] for c in TINY.cue_words]] = torch.tensor(np.log(cue_law), dtype=torch.float32)
                out[r, 1 + m, [ID[g] for g in TINY.genre_names]] = torch.tensor(np.log(post), dtype=torch.float32)
            out[r, 2 + m, EOS] = 0.0
        return type("Out", (), {"logits": out})()


def _stories(genre, n, rng):
    q = TINY.cue_probs[genre]
    cues = rng.choice(len(TINY.cue_words), size=(n, TINY.num_cues), p=q)
    return [tuple(ID[TINY.cue_words[c]] for c in row) + (ID[TINY.genre_names[genre]], EOS) for row in cues]


def test_reveal_schedule_is_the_masked_process():
    masked = np.stack([reveal_schedule(40, 0.3, s)[0] for s in range(300)])
    assert masked.mean() == pytest.approx(0.3, abs=0.01)          # each token masked with probability t
    m, buckets, u = reveal_schedule(30, 0.8, 7)
    assert sorted(p for bk in buckets for p in bk) == list(np.flatnonzero(m))
    assert all(len(bk) == 1 for bk in buckets)                     # continuous time: one token per step
    _, coarse, _ = reveal_schedule(30, 0.8, 7, steps=4)
    assert len(coarse) <= 4 and sorted(p for bk in coarse for p in bk) == list(np.flatnonzero(m))
    assert reveal_schedule(30, 0.0, 1)[0].sum() == 0 and reveal_schedule(30, 1.0, 1)[0].all()


@pytest.mark.slow
def test_table_model_lies_on_the_exact_curve():
    """Measured retention of every genre at three fractions masked within 4 standard errors of R^mask_g(t)."""
    model, rng = TableModel(), np.random.default_rng(0)
    times, n = (0.3, 0.6, 0.9), 500
    restarts, want = [], []
    for g in range(3):
        for t in times:
            for i, story in enumerate(_stories(g, n, rng)):
                restarts.append(Restart((BOS,), story, t, int(rng.integers(2 ** 62))))
                want.append((g, t))
    res = ancestral(model, restarts, mask_id=MASK, batch_size=512)
    assert sum(res.rows) == sum(len(reveal_schedule(TINY.num_cues + 2, r.t, r.seed)[1]) for r in restarts)
    for g in range(3):
        for t in times:
            hits = [r[TINY.num_cues] == ID[TINY.genre_names[g]] for r, w in zip(res.responses, want) if w == (g, t)]
            exact = retention_masked(TINY, [g], [t])[0]
            se = np.sqrt(exact * (1 - exact) / len(hits))
            assert abs(np.mean(hits) - exact) < 4 * se + 1e-3, (g, t, np.mean(hits), exact)
            assert all(x != MASK for r in res.responses for x in r)


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=16, type_vocab_size=1)
    return BertForMaskedLM(cfg).eval()


def test_restarts_do_not_depend_on_batch_size(tiny_bert):
    rng = np.random.default_rng(1)
    base = _stories(0, 1, rng)[0]
    restarts = [Restart((BOS,), base, t, 1000 + 7 * k) for t in (0.2, 0.5, 1.0) for k in range(3)]
    restarts += [Restart((BOS, BOS), base[:-1], 0.7, 5)]            # another length: its own forward passes
    one = ancestral(tiny_bert, restarts, mask_id=MASK, batch_size=1)
    many = ancestral(tiny_bert, restarts, mask_id=MASK, batch_size=64)
    alone = ancestral(tiny_bert, restarts[4:5], mask_id=MASK, batch_size=64)
    assert one.responses == many.responses and one.rows == many.rows
    assert alone.responses[0] == many.responses[4]
    assert many.calls < one.calls == sum(one.rows)
    steps = ancestral(tiny_bert, restarts, mask_id=MASK, batch_size=64, steps=4)
    assert all(r <= 4 for r in steps.rows) and sum(steps.rows) < sum(many.rows)
