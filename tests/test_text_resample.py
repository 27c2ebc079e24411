"""Truncate-and-resample for causal LMs: batched, cached decoding equals an unbatched reference.

Tiny random GPT-2 and Llama models (2 layers, vocabulary 50) and a word-level tokenizer are
built in code; everything runs on the CPU in seconds.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_windows.text.resample import (continuation_seed, count_calls, resample, sample_tokens,
                                             uniforms)

ROOT = Path(__file__).resolve().parent.parent
EOS = 1
WORDS = ["<bos>", "<eos>", "<unk>", "system", "user", "assistant"] + [f"w{i}" for i in range(44)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two threads on two shared cores spin against each other: tiny models run 100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(arch="gpt2", dtype=torch.float32):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                            bos_token_id=0, eos_token_id=EOS)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             bos_token_id=0, eos_token_id=EOS)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = EOS
    return model.to(dtype).eval()


def tiny_tokenizer(eos=True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"bos_token": "<bos>", "unk_token": "<unk>"} | ({"eos_token": "<eos>"} if eos else {})
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def random_bases():
    g = torch.Generator().manual_seed(1)
    bases = [(torch.randint(6, 50, (n,), generator=g).tolist(), torch.randint(6, 50, (m,), generator=g).tolist())
             for n, m in [(3, 8), (5, 10), (1, 6)]]
    bases[1][1][4] = EOS     # a base response with an eos inside: a prefix ending there is finished
    bases[2][1][-1] = EOS    # and one that ends with eos
    return bases


POINTS = [(0, 0), (0, 4), (0, 8), (1, 0), (1, 3), (1, 5), (1, 10), (2, 2), (2, 6)]


def reference(model, prompt, response, kept, seed, *, max_new_tokens, temperature, top_p):
    """The unbatched decode: the whole prefix through the model at every step, no cache."""
    ids, out = list(prompt) + list(response[:kept]), []
    if kept and response[kept - 1] == EOS:
        return out
    while len(out) < max_new_tokens - kept:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        t = int(sample_tokens(logits[None], uniforms([seed], [len(out)]), temperature=temperature, top_p=top_p)[0])
        out.append(t)
        ids.append(t)
        if t == EOS:
            break
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_resample_equals_unbatched_reference(arch, temperature, top_p):
    model, bases = tiny_model(arch), random_bases()
    res = resample(model, bases, POINTS, restarts=3, max_new_tokens=12, seed=7, temperature=temperature,
                   top_p=top_p, batch_size=4)   # chunks of 4 rows split points across batches
    for i, (b, kept) in enumerate(POINTS):
        for k in range(3):
            expect = reference(model, *bases[b], kept, continuation_seed(7, b, kept, k), max_new_tokens=12,
                               temperature=temperature, top_p=top_p)
            assert list(res.tokens[i][k]) == expect, (i, k)


def test_batching_and_companions_do_not_change_tokens():
    model, bases = tiny_model("llama"), random_bases()
    kw = dict(restarts=4, max_new_tokens=12, seed=3, temperature=1.0)
    full = resample(model, bases, POINTS, batch_size=64, **kw).tokens
    assert resample(model, bases, POINTS, batch_size=1, **kw).tokens == full
    assert resample(model, bases, POINTS, batch_size=5, **kw).tokens == full
    assert resample(model, bases, POINTS[::-1], batch_size=7, **kw).tokens == full[::-1]
    alone = resample(model, bases, [POINTS[4]], batch_size=64, **kw).tokens
    assert alone[0] == full[4]
    # the seed is a function of (base, kept, restart): restarts differ, a callable seed is used as given
    assert len(set(full[0])) > 1
    fn = resample(model, bases, POINTS, seed=lambda b, kept, k: continuation_seed(3, b, kept, k),
                  batch_size=64, **{k: v for k, v in kw.items() if k != "seed"}).tokens
    assert fn == full


def test_finished_rows_leave_the_batch_and_counts_add_up():
    model, bases = tiny_model("gpt2"), random_bases()
    stops = list(range(1, 50, 4))   # many stop tokens: rows finish at scattered steps
    with count_calls(model) as calls:
        sizes = []
        handle = model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].shape), with_kwargs=True)
        try:
            res = resample(model, bases, POINTS, restarts=5, max_new_tokens=16, seed=1, eos_token_id=stops,
                           batch_size=64)
        finally:
            handle.remove()
    conts = [c for point in res.tokens for c in point]
    for c in conts:   # each continuation stops at its first stop token
        assert all(t not in stops for t in c[:-1])
    assert res.decoded == sum(len(c) for c in conts)
    assert res.prefill == sum(len(p) + len(r) for p, r in bases)
    assert res.forwards == calls["calls"] == len(sizes)
    decode_rows = [s[0] for s in sizes if s[1] == 1]
    assert decode_rows == sorted(decode_rows, reverse=True) and decode_rows[-1] < decode_rows[0] / 4
    # a row is fed every token it drew but its last; finished rows leave once they are an
    # eighth of the batch, so fewer than one fed row in eight is a finished one
    useful = sum(len(c) - 1 for c in conts if c)
    assert useful <= sum(decode_rows) < 8 / 7 * useful + 1
    assert calls["tokens"] == res.prefill + sum(decode_rows)


def test_greedy_restarts_are_decoded_once():
    model, bases = tiny_model("gpt2"), random_bases()
    one = resample(model, bases, POINTS, restarts=1, max_new_tokens=12, temperature=0)
    many = resample(model, bases, POINTS, restarts=5, max_new_tokens=12, temperature=0)
    assert many.tokens == tuple(point * 5 for point in one.tokens)
    assert many.decoded == one.decoded == sum(len(p[0]) for p in one.tokens)


def test_cache_rows_are_dropped_in_place():
    from diffusion_windows.text.kvcache import _GrowingLayer

    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        rows = int(torch.randint(1, 30, (1,), generator=g))
        keep = sorted(set(torch.randint(0, rows, (rows // 2 + 1,), generator=g).tolist()))
        layer = _GrowingLayer(torch.randn(rows, 2, 5, 3), torch.randn(rows, 2, 5, 3), room=4)
        layer.update(torch.randn(rows, 2, 1, 3), torch.randn(rows, 2, 1, 3))
        expect = layer.keys[keep].clone(), layer.values[keep].clone()
        layer.batch_select_indices(torch.tensor(keep))
        assert torch.equal(layer.keys, expect[0]) and torch.equal(layer.values, expect[1])
        assert layer.get_seq_length() == 6


def test_cut_at_prompt_and_at_full_response():
    model, bases = tiny_model("gpt2"), random_bases()
    res = resample(model, bases, [(0, 0), (0, 8), (2, 6)], restarts=2, max_new_tokens=8, seed=0, temperature=0)
    assert all(len(c) > 0 for c in res.tokens[0])   # only the prompt kept: a fresh response
    assert res.tokens[1] == ((), ())                # the whole response at max_new_tokens: nothing to add
    assert res.tokens[2] == ((), ())                # a response that ended with eos is finished
    more = resample(model, bases, [(0, 8)], restarts=1, max_new_tokens=11, seed=0, temperature=0)
    assert len(more.tokens[0][0]) in range(1, 4)    # a longer budget continues the full response


def test_top_p_and_temperature_semantics():
    torch.manual_seed(0)
    logits = torch.randn(200, 50)
    u = uniforms(range(200), [0] * 200)
    greedy = logits.argmax(-1)
    assert torch.equal(sample_tokens(logits, u, temperature=1.0, top_p=1e-6), greedy)
    assert torch.equal(sample_tokens(logits, u, temperature=1e-4), greedy)
    # frequencies: temperature 2 flattens softmax; top-p keeps the smallest set with mass >= top_p
    row = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    n = 20000
    u = uniforms(np.arange(n), np.zeros(n, dtype=int))
    draws = sample_tokens(row.expand(n, 4), u, temperature=2.0)
    expect = torch.softmax(row / 2, -1)
    assert torch.allclose(torch.bincount(draws, minlength=4) / n, expect, atol=0.015)
    draws = sample_tokens(row.expand(n, 4), u, top_p=0.7)
    assert torch.allclose(torch.bincount(draws, minlength=4) / n, torch.tensor([5 / 8, 3 / 8, 0, 0]), atol=0.015)
    # on a model: tiny top_p decodes the greedy continuations
    model, bases = tiny_model("llama"), random_bases()
    kw = dict(restarts=2, max_new_tokens=10, seed=2)
    assert resample(model, bases, POINTS, top_p=1e-9, **kw).tokens == \
        resample(model, bases, POINTS, temperature=0, **kw).tokens


def test_uniform_streams():
    u = uniforms([5, 5, 6], [0, 1, 0])
    assert np.array_equal(u, uniforms([5, 5, 6], [0, 1, 0])) and len(set(u)) == 3
    big = uniforms(np.arange(50000), np.arange(50000) % 7)
    assert 0 <= big.min() and big.max() < 1 and abs(big.mean() - 0.5) < 0.01
    assert continuation_seed(0, 1, 2, 3) != continuation_seed(0, 1, 2, 4) < 2 ** 63


def test_half_precision_model_runs():
    model, bases = tiny_model("llama", torch.bfloat16), random_bases()
    res = resample(model, bases, POINTS, restarts=2, max_new_tokens=10, seed=0)
    for (b, kept), point in zip(POINTS, res.tokens):
        for c in point:
            assert len(c) <= 10 - kept and all(0 <= t < 50 for t in c)


@pytest.mark.parametrize("points,kw,match", [
    ([(3, 0)], {}, "base 3 out of range"),
    ([(0, 9)], {}, "kept=9 outside 0..8"),
    ([(0, 0)], {"temperature": -1}, "temperature"),
    ([(0, 0)], {"top_p": 0}, "top_p"),
    ([(0, 0)], {"restarts": 0}, "restarts"),
])
def test_bad_arguments_raise_one_line(points, kw, match):
    model, bases = tiny_model("gpt2"), random_bases()
    args = {"restarts": 1, "max_new_tokens": 4} | kw
    with pytest.raises(ValueError, match=match):
        resample(model, bases, points, **args)
    with pytest.raises(ValueError, match="empty prompt"):
        resample(model, [([], [5])], [(0, 0)], restarts=1, max_new_tokens=4)


# --- lm.py: loading from a folder, prompts, base responses ---

def save_tiny(path, *, tokenizer=True, eos=True, chat=False):
    model = tiny_model("gpt2")
    if not eos:
        model.config.eos_token_id = None
        model.generation_config.eos_token_id = None
    model.save_pretrained(path)
    if tokenizer:
        tok = tiny_tokenizer(eos=eos)
        if chat:
            tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                                 "{% if add_generation_prompt %}assistant{% endif %}")
        tok.save_pretrained(path)
    return path


def test_load_generate_and_decode(tmp_path):
    from diffusion_windows.text.lm import decode, generate, load_lm, prompt_ids

    model, tok = load_lm(save_tiny(tmp_path / "lm"))
    assert prompt_ids(tok, "w1 w2") == [WORDS.index("w1"), WORDS.index("w2")]
    assert prompt_ids(tok, "") == [0]   # an empty prompt starts from BOS
    out = generate(model, tok, ["w1 w2", "w3"], seeds=[4, 5], max_new_tokens=6)
    assert out == generate(model, tok, ["w1 w2", "w3"], seeds=[4, 5], max_new_tokens=6, batch_size=1)
    again = resample(model, [(out[0][0], [])], [(0, 0)], restarts=1, seed=lambda b, kept, k: 4, max_new_tokens=6)
    assert list(again.tokens[0][0]) == out[0][1]
    assert all(0 < len(r) <= 6 for _, r in out)
    assert decode(tok, [WORDS.index("w1"), EOS]) == "w1"

    chat_model, chat_tok = load_lm(save_tiny(tmp_path / "chat", chat=True))
    ids = prompt_ids(chat_tok, "w5", system="w6")
    assert decode(chat_tok, ids) == "system w6 user w5 assistant"


def test_load_errors_name_the_folder(tmp_path):
    from transformers import ViTConfig

    from diffusion_windows.text.lm import load_lm

    with pytest.raises(ValueError, match="no such model folder"):
        load_lm(tmp_path / "missing")
    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="not a causal language model"):
        load_lm(tmp_path / "vit")
    with pytest.raises(ValueError, match="no tokenizer"):
        load_lm(save_tiny(tmp_path / "notok", tokenizer=False))
    with pytest.raises(ValueError, match="no eos token"):
        load_lm(save_tiny(tmp_path / "noeos", eos=False))
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_lm(tmp_path, dtype="fp8")


@pytest.mark.slow
def test_benchmark_tiny_mode_agrees():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_text.py"), "--tiny"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["greedy_identical"] and result["sampled_agree"]
    for key in ("resample_s", "baseline_s", "speedup", "decoded_resample", "decoded_baseline"):
        assert key in result, key
