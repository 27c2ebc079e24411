"""diffusers' ``LLaDA2Pipeline`` and the toolkit's loop of it (`masked.schedulers.llada2_loop`): from a fully
masked start the loop reproduces the stock pipeline token for token (tiny random model and tokenizer built in
code, as diffusers' tests build them); a pipeline folder loads as the masked kind and runs its own sampler,
flagged as not a sampler of the reverse process."""
import json

import pytest
import torch

from diffusion_windows.masked import language


@pytest.fixture(scope="module")
def parts():
    from diffusers import BlockRefinementScheduler
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    from diffusion_windows.text import tasks

    tok = PreTrainedTokenizerFast(tokenizer_object=language.build_tokenizer(), bos_token=tasks.BOS,
                                  eos_token=tasks.EOS, pad_token=tasks.PAD, unk_token=tasks.UNK,
                                  mask_token=language.MASK)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=1)
    return BertForMaskedLM(cfg).eval(), tok, BlockRefinementScheduler(block_length=4)


@pytest.mark.parametrize("kwargs", [dict(temperature=1.0), dict(temperature=0.0),
                                    dict(temperature=0.8, top_k=5, threshold=0.3, editing_threshold=0.2,
                                         max_post_steps=2),
                                    dict(temperature=1.0, editing_threshold=None, block_length=8,
                                         num_inference_steps=3)])
def test_loop_reproduces_the_stock_llada2_pipeline(parts, kwargs):
    from diffusers import LLaDA2Pipeline

    from diffusion_windows.masked.schedulers import llada2_loop

    model, tok, scheduler = parts
    pipe = LLaDA2Pipeline(model=model, scheduler=scheduler, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    prompt = torch.tensor([tok("tell a story :")["input_ids"]] * 2)
    kw = {"gen_length": 10, "num_inference_steps": 4, **kwargs}
    stock = pipe(input_ids=prompt, generator=torch.Generator().manual_seed(3), output_type="seq", **kw).sequences
    x = torch.cat([prompt, torch.full((2, 10), tok.mask_token_id)], dim=1)
    mine, calls = llada2_loop(model, scheduler, x, prompt_length=prompt.shape[1], mask_token_id=tok.mask_token_id,
                              eos_token_id=tok.eos_token_id, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(mine, stock) and calls > 0


def test_pipeline_folder_is_the_masked_kind_and_runs_its_own_sampler(parts, tmp_path):
    from diffusion_windows.backends import load_backend, model_kind
    from diffusion_windows.options import resolve

    model, tok, scheduler = parts
    folder = tmp_path / "llada2"
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "LLaDA2Pipeline", "model": ["transformers", "BertForMaskedLM"],
        "scheduler": ["diffusers", "BlockRefinementScheduler"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}))
    assert model_kind(str(folder)) == "masked"
    o = resolve(dict(model=str(folder), prompt="tell a story :", max_new_tokens=6, samples=2, restarts=2,
                     timesteps="0,0.5,1", scheduler="pipeline", out=str(tmp_path / "run")))
    b = load_backend(o)
    assert b.describe()["reverse_process"] is False and b.time_unit == "fraction masked"
    res = b.run({0: [0.0, 0.5], 1: [1.0]}, restarts=2, seed=0, batch_size=4)
    assert [r.times for r in res] == [(0.0, 0.5), (1.0,)]
    assert all(len(row) == 2 for r in res for row in r.labels) and res[0].labels[0] == (res[0].base_label,) * 2
    again = b.run({1: [1.0]}, restarts=2, seed=0, batch_size=1)
    assert again[0].labels == res[1].labels and again[0].nfe == res[1].nfe > 0
    few = load_backend({**o, "num_inference_steps": 2, "temperature": 0.5})   # the CLI's flags reach the loop
    assert few.describe()["num_inference_steps"] == 2 and few.describe()["temperature"] == 0.5
    assert 0 < few.run({1: [1.0]}, restarts=2, seed=0, batch_size=4)[0].nfe < res[1].nfe


@pytest.mark.parametrize("kwargs", [dict(temperature=1.0),
                                    dict(temperature=0.8, top_k=5, threshold=0.3, editing_threshold=0.2,
                                         max_post_steps=2)])
def test_batched_rows_equal_one_at_a_time(parts, kwargs):
    """`llada2_rows` (one model call per step for all rows, a generator per row) gives each row the tokens
    `llada2_loop` gives it alone, from fully and partially masked starts; from a fully masked one, the stock
    pipeline's for one prompt."""
    from diffusers import LLaDA2Pipeline

    from diffusion_windows.masked.schedulers import llada2_loop, llada2_rows

    model, tok, scheduler = parts
    prompt = tok("tell a story :")["input_ids"]
    m = tok.mask_token_id
    starts = [[m] * 10, [7, m, m, 9, m, m, m, 11, m, m], [m, 5, 6, m, 8, 9, m, m, m, 12], [m] * 10]
    x = torch.tensor([prompt + s for s in starts])
    kw = {"gen_length": 10, "num_inference_steps": 4, "prompt_length": len(prompt), "mask_token_id": m,
          "eos_token_id": tok.eos_token_id, **kwargs}
    seen = []   # rows of each model call: only the rows still refining their block are computed
    hook = model.register_forward_pre_hook(lambda mod, a, k: seen.append(a[0].shape[0]), with_kwargs=True)
    try:
        mine, rows, calls = llada2_rows(model, scheduler, x, generators=[torch.Generator().manual_seed(s) for s in
                                                                        range(4)], **kw)
    finally:
        hook.remove()
    assert len(seen) == calls and sum(seen) == sum(rows) and min(seen) < 4   # rows that finished early sit out
    pipe = LLaDA2Pipeline(model=model, scheduler=scheduler, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    for j in range(4):
        alone, n = llada2_loop(model, scheduler, x[j:j + 1], generator=torch.Generator().manual_seed(j), **kw)
        assert torch.equal(mine[j], alone[0]) and rows[j] == n
    stock = pipe(input_ids=torch.tensor([prompt]), generator=torch.Generator().manual_seed(3), output_type="seq",
                 **{k: v for k, v in kw.items() if k not in ("prompt_length", "mask_token_id")}).sequences
    assert torch.equal(mine[3], stock[0]) and max(rows) <= calls < sum(rows)   # calls shared, per block
