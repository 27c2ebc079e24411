"""Bad input to a masked-diffusion run: one ``error:`` line, exit 2, no traceback (a tokenizer without a mask
token, a causal LM given as a masked-diffusion pipeline, an encoder-decoder in a DiffusionGemmaPipeline folder,
an empty prompts file, an unknown sampler)."""
import json

import pytest
import torch

from diffusion_windows.masked import language
from diffusion_windows.sweep import main
from diffusion_windows.text import tasks


def _tokenizer(mask: bool):
    from transformers import PreTrainedTokenizerFast

    extra = {"mask_token": language.MASK} if mask else {}
    return PreTrainedTokenizerFast(tokenizer_object=language.build_tokenizer(), bos_token=tasks.BOS,
                                   eos_token=tasks.EOS, pad_token=tasks.PAD, unk_token=tasks.UNK, **extra)


def _folder(path, model, tok, cls, pipeline="LLaDA2Pipeline"):
    model.save_pretrained(path / "model")
    tok.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline, "model": ["transformers", cls],
        "scheduler": [None, None], "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}))
    return str(path)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, T5Config,
                              T5ForConditionalGeneration)

    root = tmp_path_factory.mktemp("masked_errors")
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=43, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16, max_position_embeddings=64, type_vocab_size=1))
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=43, n_embd=16, n_layer=1, n_head=2, n_positions=64))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=43, d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                                             decoder_start_token_id=0))
    (root / "empty.jsonl").write_text("\n")
    return {"nomask": _folder(root / "nomask", bert, _tokenizer(False), "BertForMaskedLM"),
            "causal": _folder(root / "causal", gpt, _tokenizer(True), "GPT2LMHeadModel"),
            "ok": _folder(root / "ok", bert, _tokenizer(True), "BertForMaskedLM"),
            "encdec": _folder(root / "encdec", t5, _tokenizer(True), "T5ForConditionalGeneration",
                              "DiffusionGemmaPipeline"),
            "empty": str(root / "empty.jsonl")}


CASES = [
    (["--model", "{nomask}", "--prompt", "tell a story :"], "has no mask token"),
    (["--model", "{causal}", "--prompt", "tell a story :"], "reads only earlier tokens"),
    (["--model", "{ok}", "--prompts", "{empty}"], "holds no prompt"),
    (["--model", "{encdec}", "--prompt", "tell a story :"], "model must be a DiffusionGemmaForBlockDiffusion"),
    (["--model", "{ok}", "--prompt", "tell a story :", "--scheduler", "ddim"], "valid: ancestral, pipeline"),
    (["--model", "{ok}", "--prompt", "tell a story :", "--max-new-tokens", "200"], "exceed the model's 64 positions"),
    (["--model", "default-masked", "--prompt", "hi"], "has its own tasks"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[n for _, n in CASES])
def test_bad_input_exits_2_with_one_line(argv, needle, places, capsys, tmp_path):
    code = main([a.format(**places) for a in argv] + ["--samples", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0] and "Traceback" not in err
