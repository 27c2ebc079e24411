"""Masked-diffusion checkpoints that ship their own modeling code (LLaDA2: ``config.json`` ``auto_map`` to
``LLaDA2MoeModelLM`` under ``AutoModelForCausalLM``): refused with one line unless ``--trust-remote-code``; with
it, the folder's own code runs, as a plain model folder and inside a ``LLaDA2Pipeline`` folder.

The tiny custom model is written here as modeling files, exported the way a real checkpoint is
(``register_for_auto_class`` + ``save_pretrained``: the files copied beside the weights and an ``auto_map``),
and mirrors LLaDA2's interface: a causal-LM Auto class, read both ways, called with token ids, a 2-D attention
mask and ``position_ids`` (the installed diffusers' ``LLaDA2Pipeline``'s call)."""
import json

import pytest
import torch

from tiny_custom_code import export_classes, modeling_source

from diffusion_windows.masked import language
from diffusion_windows.sweep import main
from diffusion_windows.text import tasks

MODELING = modeling_source("tinymdm", "TinyMDMModelLM", "TinyMDMConfig",
                           "One bidirectional attention layer over token and position embeddings.",
                           "attn = nn.MultiheadAttention(config.hidden_size, config.num_heads, batch_first=True)", '''

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError("TinyMDM takes a 2-D attention mask")
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
        h = self.embed(input_ids) + self.pos(position_ids)
        pad = None if attention_mask is None else attention_mask == 0
        a, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)
        return CausalLMOutput(logits=self.lm_head(self.norm(h + a)))
''')


def _tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=language.build_tokenizer(), bos_token=tasks.BOS,
                                   eos_token=tasks.EOS, pad_token=tasks.PAD, unk_token=tasks.UNK,
                                   mask_token=language.MASK)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``{"plain": folder, "pipeline": folder, "direct": the same model built from the source}``."""
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    root = tmp_path_factory.mktemp("remote_code")
    TinyMDMConfig, TinyMDMModelLM = export_classes(root, "tinymdm", MODELING, config_class="TinyMDMConfig",
                                                   model_type="tinymdm")   # LLaDA2's Auto class
    tok = _tokenizer()
    torch.manual_seed(0)
    model = TinyMDMModelLM(TinyMDMConfig(vocab_size=len(tok))).eval()
    plain = root / "tinymdm"
    model.save_pretrained(plain)
    tok.save_pretrained(plain)
    pipe = LLaDA2Pipeline(model=model, scheduler=BlockRefinementScheduler(block_length=4), tokenizer=tok)
    pipe.save_pretrained(root / "llada2")   # model_index.json names the model's own module; the tokenizer:
    tok.save_pretrained(root / "llada2" / "tokenizer")   # diffusers does not save transformers 5's fast tokenizer
    nomask = root / "nomask"   # its tokenizer names no mask token
    model.save_pretrained(nomask)
    tok.save_pretrained(nomask)
    cfg = json.loads((nomask / "tokenizer_config.json").read_text())
    (nomask / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "mask_token"}))
    return {"plain": str(plain), "pipeline": str(root / "llada2"), "nomask": str(nomask), "direct": model,
            "tok": tok}


def test_the_folders_are_what_a_real_checkpoint_is(folders):
    from diffusion_windows.backends import model_kind

    for name in ("plain", "pipeline", "nomask"):
        model_dir = folders[name] + ("/model" if name == "pipeline" else "")
        cfg = json.loads(open(f"{model_dir}/config.json").read())
        assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_tinymdm.TinyMDMModelLM"
        assert cfg["architectures"] == ["TinyMDMModelLM"]
        assert model_kind(folders[name]) == "masked"


def _one_error_line(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --model: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("which", ["plain", "pipeline"])
def test_custom_code_without_the_flag_is_one_error_line(folders, which, capsys, tmp_path):
    from diffusion_windows.masked.models import load_masked_lm

    folder = folders[which]
    line = _one_error_line(["--model", folder, "--prompt", "tell a story :", "--samples", "2",
                            "--out", str(tmp_path / "r")], capsys)
    assert folder in line and "pass --trust-remote-code" in line
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="pass trust_remote_code=True"):
        load_masked_lm(folder)


def test_custom_code_without_a_mask_token_is_one_error_line(folders, capsys, tmp_path):
    line = _one_error_line(["--model", folders["nomask"], "--trust-remote-code", "--prompt", "tell a story :",
                            "--samples", "2", "--out", str(tmp_path / "r")], capsys)
    assert folders["nomask"] in line and "has no mask token" in line


@pytest.mark.parametrize("which", ["plain", "pipeline"])
def test_the_folders_own_code_runs_with_the_flag(folders, which):
    from diffusion_windows.masked.models import load_masked_lm

    model, tok, scheduler = load_masked_lm(folders[which], trust_remote_code=True)
    assert type(model).__name__ == "TinyMDMModelLM" and type(model).__module__.startswith("transformers_modules")
    assert type(model) is not type(folders["direct"])   # imported from the checkpoint folder, not the source
    assert tok.mask_token_id == folders["tok"].mask_token_id
    assert (scheduler is not None) == (which == "pipeline")
    ids = torch.tensor([[1, 5, 7, tok.mask_token_id, 9, tok.mask_token_id]] * 2)
    mask = torch.tensor([[1] * 6, [1] * 5 + [0]])
    with torch.no_grad():
        mine = model(ids, attention_mask=mask, position_ids=torch.arange(6).expand(2, -1)).logits
        want = folders["direct"](ids, attention_mask=mask, position_ids=torch.arange(6).expand(2, -1)).logits
    assert torch.equal(mine, want)


def test_the_stock_pipeline_and_the_toolkit_loop_agree_on_the_custom_model(folders):
    from diffusers import LLaDA2Pipeline

    from diffusion_windows.masked.models import load_masked_lm
    from diffusion_windows.masked.schedulers import llada2_loop

    model, tok, scheduler = load_masked_lm(folders["pipeline"], trust_remote_code=True)
    pipe = LLaDA2Pipeline(model=model, scheduler=scheduler, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    prompt = torch.tensor([tok("tell a story :")["input_ids"]])
    kw = dict(gen_length=8, num_inference_steps=4, temperature=1.0)
    stock = pipe(input_ids=prompt, generator=torch.Generator().manual_seed(1), output_type="seq", **kw).sequences
    x = torch.cat([prompt, torch.full((1, 8), tok.mask_token_id)], dim=1)
    mine, _ = llada2_loop(model, scheduler, x, prompt_length=prompt.shape[1], mask_token_id=tok.mask_token_id,
                          eos_token_id=tok.eos_token_id, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(mine, stock)


@pytest.mark.parametrize("which,sampler", [("plain", "ancestral"), ("pipeline", "pipeline")])
def test_sweep_cli_runs_the_custom_model_with_the_flag(folders, which, sampler, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--model", folders[which], "--trust-remote-code", "--prompt", "tell a story :", "--scheduler",
                 sampler, "--max-new-tokens", "6", "--samples", "2", "--restarts", "2", "--timesteps", "0,0.5,1",
                 "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    windows = json.loads((out / "windows.json").read_text())
    assert windows["time_unit"] == "fraction masked" and windows["options"]["trust_remote_code"] is True
    assert windows["nfe"] > 0 and windows["sampler"]["reverse_process"] is (sampler == "ancestral")
