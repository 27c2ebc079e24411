"""A checkpoint that behaves as a published LLaDA2 one (``model_type`` ``llada2_moe``, its own modeling code under
``AutoModelForCausalLM``) runs on the first try: the toolkit calls it with the 4-D block-causal mask its own
``generate()`` builds, and names ``<|mask|>`` the mask token of a tokenizer that declares none.

The tiny model mirrors what the LLaDA2 modeling code does with ``attention_mask``: it refuses anything but a
``[batch, 1, T, T]`` mask ("only support block attention mask") and adds it to the attention scores (SDPA);
``block_diffusion_mask`` builds the mask as the checkpoint's ``generate()`` does (a ``tril`` of blocks, each entry
repeated ``block_length`` times both ways, ``log``: 0 or ``-inf``). Its tokenizer has ``<|mask|>`` in its vocabulary
but no ``mask_token``."""
import json

import pytest
import torch

from tiny_custom_code import export_classes, modeling_source

from diffusion_windows.masked import language
from diffusion_windows.sweep import main
from diffusion_windows.text import tasks

MODELING = modeling_source("tinyllada2", "TinyLLaDA2ModelLM", "TinyLLaDA2Config",
                           "One attention layer whose scores get the caller's additive 4-D mask, as LLaDA2's SDPA "
                           "attention does.", "qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)", '''

    @staticmethod
    def block_diffusion_mask(total, block_length, dtype=torch.float32):
        blocks = total // block_length
        ones = torch.tril(torch.ones(blocks, blocks))
        full = ones.repeat_interleave(block_length, dim=0).repeat_interleave(block_length, dim=1)
        return full[None, None].log().to(dtype)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        b, n = input_ids.shape
        if attention_mask is None or tuple(attention_mask.shape) != (b, 1, n, n):
            shape = None if attention_mask is None else tuple(attention_mask.shape)
            raise ValueError(f"LLaDA2.0 only support block attention mask with shape {(b, 1, n, n)}, got {shape}")
        if position_ids is None:
            position_ids = torch.arange(n, device=input_ids.device)[None].expand(b, -1)
        h = self.embed(input_ids) + self.pos(position_ids)
        heads = self.config.num_heads
        q, k, v = (t.view(b, n, heads, -1).transpose(1, 2) for t in self.qkv(h).chunk(3, dim=-1))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.to(q.dtype))
        return CausalLMOutput(logits=self.lm_head(self.norm(h + a.transpose(1, 2).reshape(b, n, -1))))
''')

MASK = "<|mask|>"


def _tokenizer():
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=language.build_tokenizer(), bos_token=tasks.BOS,
                                  eos_token=tasks.EOS, pad_token=tasks.PAD, unk_token=tasks.UNK)
    tok.add_tokens([AddedToken(MASK, special=True)])   # in the vocabulary, not declared its mask token
    return tok


@pytest.fixture(scope="module")
def llada2(tmp_path_factory):
    """``{"plain": folder, "pipeline": folder (block_length 4), "raw": the model built from the source, "tok"}``."""
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    root = tmp_path_factory.mktemp("llada2")
    config, model_class = export_classes(root, "tinyllada2", MODELING, config_class="TinyLLaDA2Config",
                                         model_type="llada2_moe")   # LLaDA2's model_type and Auto class
    tok = _tokenizer()
    torch.manual_seed(0)
    model = model_class(config(vocab_size=len(tok), max_position_embeddings=128)).eval()
    model.save_pretrained(root / "plain")
    tok.save_pretrained(root / "plain")
    LLaDA2Pipeline(model=model, scheduler=BlockRefinementScheduler(block_length=4), tokenizer=tok) \
        .save_pretrained(root / "pipeline")
    tok.save_pretrained(root / "pipeline" / "tokenizer")
    return {"plain": str(root / "plain"), "pipeline": str(root / "pipeline"), "raw": model, "tok": tok}


def test_the_folders_are_what_a_llada2_checkpoint_is(llada2):
    from diffusion_windows.backends import model_kind

    for name, sub in (("plain", ""), ("pipeline", "/model")):
        cfg = json.loads(open(llada2[name] + sub + "/config.json").read())
        assert cfg["model_type"] == "llada2_moe" and "AutoModelForCausalLM" in cfg["auto_map"]
        assert model_kind(llada2[name]) == "masked"
    tok_cfg = json.loads(open(llada2["plain"] + "/tokenizer_config.json").read())
    assert "mask_token" not in tok_cfg and llada2["tok"].mask_token_id is None
    assert MASK in llada2["tok"].get_vocab()
    ids = torch.tensor([[1, 5, 7]])
    with pytest.raises(ValueError, match="only support block attention mask"):   # a 2-D mask is refused
        llada2["raw"](ids, attention_mask=torch.ones_like(ids))


def test_resolve_picks_the_block_mask_and_the_llada2_mask_token(llada2, tmp_path):
    from diffusion_windows.options import OptionError, resolve

    base = {"model": llada2["plain"], "trust_remote_code": True, "prompt": "tell a story :", "out": str(tmp_path)}
    o = resolve(base)
    assert o["attention_mask"] == "block" and o["mask_token"] == MASK
    o = resolve({**base, "attention_mask": "2d", "mask_token": "7"})
    assert o["attention_mask"] == "2d" and o["mask_token"] == "7"
    with pytest.raises(OptionError, match="--attention-mask: 'diagonal'"):
        resolve({**base, "attention_mask": "diagonal"})
    with pytest.raises(OptionError, match="--mask-token"):
        resolve({"model": "default-masked", "mask_token": MASK, "out": str(tmp_path)})


@pytest.mark.parametrize("which,block", [("plain", 32), ("pipeline", 4)])
def test_the_toolkit_calls_the_model_with_its_generate_mask(llada2, which, block):
    from diffusion_windows.masked.attention import BlockAttention
    from diffusion_windows.masked.models import load_masked_lm

    mask_id = llada2["tok"].convert_tokens_to_ids(MASK)
    model, tok, _ = load_masked_lm(llada2[which], trust_remote_code=True,   # the token, or its id
                                   mask_token=MASK if which == "plain" else str(mask_id))
    assert isinstance(model, BlockAttention) and model.block_length == block
    assert tok.mask_token_id == mask_id and tok.mask_token == MASK
    with pytest.raises(ValueError, match=r"--mask-token: '<\|nope\|>' is not a token"):
        load_masked_lm(llada2[which], trust_remote_code=True, mask_token="<|nope|>")
    n = block + block // 2 + 3                      # ends inside the second (plain) or fifth (pipeline) block
    ids = torch.randint(0, mask_id, (2, n))
    ids[:, n // 2:][:, ::3] = mask_id
    total = -(-n // block) * block
    padded = torch.nn.functional.pad(ids, (0, total - n), value=mask_id)   # generate()'s tail of mask tokens
    raw = llada2["raw"]
    with torch.no_grad():
        mine = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(n)[None]).logits
        want = raw(padded, attention_mask=raw.block_diffusion_mask(total, block).expand(2, -1, -1, -1),
                   position_ids=torch.arange(total)[None]).logits[:, :n]
        later = ids.clone()
        later[:, -1] = (later[:, -1] + 1) % mask_id  # a token of the last block
        moved = model(input_ids=later, attention_mask=torch.ones_like(ids)).logits
    assert mine.shape == (2, n, len(tok)) and torch.equal(mine, want)
    first = (n - 1) // block * block                # the last block's first position
    assert torch.equal(moved[:, :first], mine[:, :first])        # earlier blocks never read a later one
    assert not torch.allclose(moved[:, first:], mine[:, first:])  # a block reads itself both ways


def test_the_pipeline_loop_passes_each_window_its_generate_mask(llada2):
    from diffusers import LLaDA2Pipeline

    from diffusion_windows.masked.models import load_masked_lm
    from diffusion_windows.masked.schedulers import llada2_loop

    model, tok, scheduler = load_masked_lm(llada2["pipeline"], trust_remote_code=True, mask_token=MASK)
    prompt = torch.tensor([tok("tell a story :")["input_ids"]])
    kw = dict(gen_length=9, num_inference_steps=4, temperature=1.0)
    stock = LLaDA2Pipeline(model=llada2["raw"], scheduler=scheduler, tokenizer=tok)
    stock.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="only support block attention mask"):   # diffusers' 2-D mask
        stock(input_ids=prompt, mask_token_id=tok.mask_token_id, output_type="seq", **kw)
    seen = []
    hook = model.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["attention_mask"]), with_kwargs=True)
    try:
        x = torch.cat([prompt, torch.full((1, 9), tok.mask_token_id)], dim=1)
        mine, calls = llada2_loop(model, scheduler, x, prompt_length=prompt.shape[1], mask_token_id=tok.mask_token_id,
                                  eos_token_id=None, generator=torch.Generator().manual_seed(1), **kw)
    finally:
        hook.remove()
    assert len(seen) == calls > 0
    full = llada2["raw"].block_diffusion_mask(32, 4)
    assert all(torch.equal(m, full[:, :, :m.shape[-1], :m.shape[-1]]) for m in seen)
    stock = LLaDA2Pipeline(model=model, scheduler=scheduler, tokenizer=tok)   # the same block mask: same tokens
    stock.set_progress_bar_config(disable=True)
    want = stock(input_ids=prompt, mask_token_id=tok.mask_token_id, eos_token_id=None,
                 generator=torch.Generator().manual_seed(1), output_type="seq", **kw).sequences
    assert torch.equal(mine, want)


@pytest.mark.parametrize("which,sampler,extra", [("plain", "ancestral", []),
                                                 ("pipeline", "pipeline", ["--mask-token", MASK, "--dtype", "bfloat16"])])
def test_sweep_cli_runs_a_llada2_checkpoint_on_the_first_try(llada2, which, sampler, extra, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--model", llada2[which], "--trust-remote-code", *extra, "--prompt", "tell a story :", "--scheduler",
                 sampler, "--max-new-tokens", "6", "--samples", "2", "--restarts", "2", "--timesteps", "0,0.5,1",
                 "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    windows = json.loads((out / "windows.json").read_text())
    assert windows["options"]["mask_token"] == MASK and windows["options"]["attention_mask"] == "block"
    assert windows["sampler"]["attention_mask"] == "block"
    assert windows["sampler"]["block_length"] == (32 if which == "plain" else 4) and windows["nfe"] > 0
    # plain: prompt (5 tokens) and response (6) share one block of 32, so each token reads every kept one
    assert windows["sampler"]["reverse_process"] is (which == "plain")


@pytest.mark.parametrize("block,length,reverse", [(4, 6, False), (4, 3, True), (32, 6, True), (2, 1, True)])
def test_the_ancestral_sampler_says_when_blocks_split_a_response(llada2, block, length, reverse):
    """Under block-causal attention a response token never reads a later block: the ancestral sampler samples the
    reverse process only when each response lies in one block (the prompt, 5 tokens, takes positions 0-4)."""
    from diffusion_windows.masked.attention import BlockAttention
    from diffusion_windows.masked.backend import MaskedBackend

    mask_id = llada2["tok"].convert_tokens_to_ids(MASK)
    model = BlockAttention(llada2["raw"], block, pad_id=mask_id)
    b = MaskedBackend(model, llada2["tok"], ["tell a story :"], outcome="answer", samples=1, seed=0,
                      gen_length=length, mask_id=mask_id)
    d = b.describe()
    assert d["attention_mask"] == "block" and d["block_length"] == block
    assert d["reverse_process"] is reverse and ("reverse_process_note" in d) is (not reverse)
    if not reverse:
        assert "1 of 1 prompts" in d["reverse_process_note"] and f"block of {block}" in d["reverse_process_note"]


@pytest.mark.parametrize("argv,named", [(["--mask-token", "<|nope|>"], "'<|nope|>' is not a token"),
                                        (["--mask-token", "100000"], "'100000' is not a token id"),
                                        (["--attention-mask", "2d"], "does not take token ids")])
def test_bad_mask_token_or_a_2d_mask_is_one_error_line(llada2, argv, named, tmp_path, capsys):
    code = main(["--model", llada2["plain"], "--trust-remote-code", *argv, "--prompt", "tell a story :",
                 "--samples", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists() if argv[0] == "--mask-token" else not (tmp_path / "r" / "windows.json").exists()
