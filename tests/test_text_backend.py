"""The text backend through the engine and the CLI: tiny random GPT-2 and Llama models with a tokenizer
written here; batch-size and process-count independence, kill and resume, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_windows.engine import Engine, MemoryStore, Settings
from diffusion_windows.sweep import main

WORDS = ["<bos>", "<eos>", "<unk>", "<pad>"] + [f"w{i}" for i in range(28)]
EOS = 1


def tiny_lm_folder(path, arch="gpt2"):
    """A random causal LM of 2 layers over 32 words, saved with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                           bos_token_id=0, eos_token_id=EOS))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, bos_token_id=0, eos_token_id=EOS))
    with torch.no_grad():  # make the end of a response likely, so responses are short and vary
        model.lm_head.weight[EOS] += 0.15 * model.lm_head.weight.abs().mean()
    model.generation_config.eos_token_id = EOS
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>", pad_token="<pad>")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_lm_folder(tmp_path_factory.mktemp("lm") / "gpt2")


ARGS = ["--prompt", "w1 w2 w3", "--outcome", r"regex:(w\d+)\s*$", "--samples", "6", "--restarts", "4",
        "--timesteps", "0:1:0.25", "--max-new-tokens", "8", "--seed", "2", "--quiet"]


def windows(out):
    return json.loads((out / "windows.json").read_text())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cli_runs_end_to_end_on_a_tiny_causal_lm(arch, tmp_path):
    folder = lm_dir_of(arch, tmp_path)
    out = tmp_path / "run"
    assert main(["--model", str(folder), *ARGS, "--out", str(out)]) == 0
    d = windows(out)
    assert d["time_unit"] == "fraction removed" and d["grid"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d["theory"]["available"] is False  # no exact theory for an arbitrary model's outcomes
    labels = {r["value"] for r in d["features"]}
    assert "other" in labels and len(d["responses"]) == 6
    for r in d["features"]:
        if r["retention"] is not None:
            assert r["retention"][0] == 1.0  # keeping the whole response keeps its last word
    assert (out / "window.png").stat().st_size > 0 and (out / "tokens.html").stat().st_size > 0
    assert "<span class='t" in (out / "tokens.html").read_text()


def lm_dir_of(arch, tmp_path):
    return tiny_lm_folder(tmp_path / arch, arch)


def test_batch_size_does_not_change_results(lm_dir, tmp_path):
    runs = {}
    for batch in (3, 64):
        out = tmp_path / f"b{batch}"
        assert main(["--model", str(lm_dir), *ARGS, "--batch-size", str(batch), "--out", str(out)]) == 0
        runs[batch] = [(u["base"], u["base_label"], u["labels"]) for u in
                       map(json.loads, (out / "results.jsonl").read_text().splitlines())]
    assert runs[3] == runs[64]


def test_killed_after_every_unit_resumes_to_the_same_results(lm_dir):
    from test_resume_auto import CutStore, Killed

    from diffusion_windows.backends import load_backend
    from diffusion_windows.options import resolve

    o = resolve(dict(model=str(lm_dir), prompt="w1 w2 w3", outcome=r"regex:(w\d+)\s*$", samples=6, restarts=3,
                     timesteps="0:1:0.25", max_new_tokens=8, seed=2, batch_size=8, out="unused"))
    backend = load_backend(o)
    settings = Settings.from_options(o)
    whole = Engine(backend, settings, MemoryStore(), quiet=True).run()
    want = [r.labels for r in whole.store.read_all()]
    for k in range(1, len(want)):
        killed = Engine(backend, settings, CutStore(k), quiet=True)
        with pytest.raises(Killed):
            killed.run()
        resumed = Engine(backend, settings, CutStore(10 ** 9, killed.store.records), quiet=True).run()
        assert [r.labels for r in resumed.store.read_all()] == want, k


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(lm_dir, tmp_path):
    single, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--model", str(lm_dir), *ARGS, "--batch-size", "8"]
    r = subprocess.run([sys.executable, "-m", "diffusion_windows.sweep", *args, "--out", str(single)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "diffusion_windows.sweep", *args, "--out", str(two)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert windows(two)["features"] == windows(single)["features"]


@pytest.fixture
def not_an_lm(tmp_path):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"  # an image model: transformers has no causal LM for it
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=8, patch_size=4)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("extra,needle", [
    ([], "--prompt"),                                                     # no prompt
    (["--prompt", ""], "--prompt: '' is empty"),
    (["--prompt", "w1", "--outcome", "bogus"], "--outcome: unknown outcome spec 'bogus'"),
    (["--prompt", "w1", "--outcome", "correct"], "needs a reference answer"),
    (["--prompt", "w1", "--scheduler", "ddim"], "--scheduler"),          # a diffusion option
    (["--prompt", "w1", "--timesteps", "0:1.5:0.5"], "1.5"),
    (["--prompt", "w1", "--prompts", "x.jsonl"], "not both"),
    (["--prompt", "w1", "--temperature", "-1"], "--temperature: -1"),
    (["--prompt", "w1 w2", "--max-new-tokens", "80"], "64 positions"),    # past the model's context
])
def test_bad_input_is_one_line_and_exit_2(lm_dir, tmp_path, capsys, extra, needle):
    code = main(["--model", str(lm_dir), *extra, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    if "positions" not in needle:  # found when the model loads; the rest before anything is written
        assert not (tmp_path / "run").exists()


def test_a_folder_that_is_not_a_causal_lm_is_one_line(not_an_lm, tmp_path, capsys):
    code = main(["--model", str(not_an_lm), "--prompt", "w1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a causal language model" in err[0], err


def test_every_response_empty_is_one_line(tmp_path, capsys):
    folder = tiny_lm_folder(tmp_path / "mute")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # the model says nothing: a constant last hidden state that points at end of sequence
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.lm_head.weight[EOS] * 1e4)
    model.save_pretrained(folder)
    capsys.readouterr()  # what saving the model printed
    code = main(["--model", str(folder), "--prompt", "w1", "--samples", "3", "--max-new-tokens", "8",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "empty" in err[0], err


def test_prompts_file_and_correctness_outcome(lm_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"w{i} w{i + 1}", "reference": f"w{i + 2}"})
                                 for i in range(3)) + "\n")
    out = tmp_path / "run"
    assert main(["--model", str(lm_dir), "--prompts", str(prompts), "--outcome", r"correct:regex:(w\d+)\s*$",
                 "--samples", "6", "--restarts", "2", "--timesteps", "0,1", "--max-new-tokens", "6", "--quiet",
                 "--out", str(out)]) == 0
    d = windows(out)
    assert {r["value"] for r in d["features"]} == {"correct", "incorrect"}
    assert [r["prompt"] for r in d["responses"]] == [f"w{i} w{i + 1}" for i in (0, 1, 2, 0, 1, 2)]
    assert set(d["jumps"]) >= {"correct", "incorrect", "all"}
    rates = np.array([d["jumps"][k]["responses"] for k in ("correct", "incorrect")])
    assert rates.sum() == 6


def test_restart_slots_are_the_matching_restarts_of_a_whole_plan(lm_dir):
    """``--timesteps auto`` asks for restarts k0..k1-1 of a cut in a later round: the same continuations
    (seed from base, kept tokens and restart index only) as the whole plan's restarts k0..k1-1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffusion_windows.text.backend import TextBackend

    backend = TextBackend(AutoModelForCausalLM.from_pretrained(lm_dir), AutoTokenizer.from_pretrained(lm_dir),
                          ["w1 w2 w3"], outcome=r"regex:(w\d+)\s*$", samples=4, seed=2, grid=(0, 0.5, 0.75, 1),
                          max_new_tokens=8)
    whole = backend.run({b: [0.5, 0.75] for b in range(4)}, restarts=6, seed=2, batch_size=64)
    parts = backend.run({b: [(0.5, 0, 2), (0.75, 1, 4), (0.5, 2, 6)] for b in range(4)}, restarts=6, seed=2,
                        batch_size=64)
    for w, p in zip(whole, parts):
        assert p.times == (0.5, 0.75, 0.5) and p.first == (0, 1, 2)
        assert p.labels == (w.labels[0][0:2], w.labels[1][1:4], w.labels[0][2:6])
    assert any(len(set(row)) > 1 for w in whole for row in w.labels)  # the restarts differ: a real comparison


def test_auto_on_a_language_model_adds_restarts_and_reports_why_edges_stopped(lm_dir, tmp_path):
    out = tmp_path / "auto"
    args = [a for a in ARGS if a not in ("--timesteps", "0:1:0.25")]
    assert main(["--model", str(lm_dir), *args, "--timesteps", "auto", "--initial-restarts", "2",
                 "--out", str(out)]) == 0
    d = windows(out)
    assert d["rounds"] and sum(r["nfe"] for r in d["rounds"]) == d["nfe"]
    assert all(r["start_stopped_by"] in ("precision", "grid", "budget", "no-edge") for r in d["features"])
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert all(1 <= len(row) <= 4 for u in lines for row in u["labels"])
