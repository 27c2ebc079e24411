"""diffusers' ``DiffusionGemmaPipeline`` and the toolkit's loop of it (`masked.gemma`): from a fully noised start the
loop reproduces the stock pipeline token for token with each of its three schedulers (a tiny random
``DiffusionGemmaForBlockDiffusion`` and tokenizer built in code, saved as a pipeline folder and loaded as a user
would); restarts from a partially corrupted response run the pipeline's own steps from the matching grid time,
batched restarts equal one-at-a-time ones, and ``windows.json`` records the uniform forward process.

The stock pipeline (diffusers 0.42.1) calls the decoder's ``create_diffusion_decoder_attention_mask`` with the
keyword ``past_key_values``, which the installed transformers renamed ``cache``: the tests bridge that one keyword
name (`_bridge`) and run the pipeline's code unchanged."""
import json
import sys
from pathlib import Path

import pytest
import torch


PROMPT = "tell a story :"


def _bridge(model):
    """Let the stock pipeline's ``past_key_values=`` reach the decoder's mask builder (renamed ``cache``)."""
    decoder = model.model.decoder
    build = type(decoder).create_diffusion_decoder_attention_mask

    def mask(*args, past_key_values=None, **kwargs):
        return build(*args, cache=past_key_values, **kwargs)

    decoder.create_diffusion_decoder_attention_mask = mask
    return model


@pytest.fixture(scope="session")
def gemma_folder(tmp_path_factory):
    """A saved ``DiffusionGemmaPipeline`` folder: tiny random model (canvas of 4), word-level tokenizer with a chat
    template, ``BlockRefinementScheduler``."""
    from diffusers import BlockRefinementScheduler, DiffusionGemmaPipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_masked import tiny_gemma  # the benchmark's --sampler gemma measures this same model

    model, tok = tiny_gemma()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    folder = tmp_path_factory.mktemp("gemma") / "pipe"
    DiffusionGemmaPipeline(model=model, scheduler=BlockRefinementScheduler(), processor=tok).save_pretrained(folder)
    # diffusers writes the model's library as "diffusion_gemma" (its pipeline's module name); a released folder says
    # "transformers", which is what loads
    index = json.loads((folder / "model_index.json").read_text())
    index["model"] = ["transformers", index["model"][1]]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="session")
def gemma(gemma_folder):
    from diffusers import DiffusionGemmaPipeline

    pipe = DiffusionGemmaPipeline.from_pretrained(gemma_folder)
    pipe.set_progress_bar_config(disable=True)
    _bridge(pipe.model)
    return pipe


def _scheduler(name, **config):
    import diffusers

    return getattr(diffusers, name)(**config)


def _prompt(pipe):
    from diffusion_windows.text import lm

    return torch.tensor([lm.prompt_ids(pipe.processor, PROMPT)])


SCHEDULERS = [("BlockRefinementScheduler", {}, dict(temperature=1.0)),
              ("BlockRefinementScheduler", dict(threshold=0.2, editing_threshold=0.3),
               dict(temperature=0.0, confidence_threshold=None)),
              ("DiscreteDDIMScheduler", {}, dict(temperature=1.0, confidence_threshold=None)),
              ("DiscreteDDIMScheduler", dict(corrector_steps=1), dict(temperature=0.7)),
              ("EntropyBoundScheduler", dict(entropy_bound=0.5), dict(stability_threshold=2)),
              ("EntropyBoundScheduler", {}, dict(confidence_threshold=None))]


@pytest.mark.parametrize("name,config,kwargs", SCHEDULERS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(SCHEDULERS)])
def test_loop_reproduces_the_stock_pipeline(gemma, name, config, kwargs):
    from diffusion_windows.masked.gemma import gemma_loop

    gemma.scheduler = _scheduler(name, **config)
    kw = {"num_inference_steps": 4, **kwargs}
    prompt = _prompt(gemma)
    stock = [gemma(prompt=PROMPT, gen_length=12, generator=torch.Generator().manual_seed(s), output_type="seq", **kw)
             .sequences[0] for s in (3, 4)]
    # one row alone, and two rows batched (one generator each): both equal the stock pipeline
    for rows in ([0], [0, 1]):
        gens = [torch.Generator().manual_seed(3 + r) for r in rows]
        mine, n_rows, calls = gemma_loop(gemma.model, gemma.scheduler, prompt.expand(len(rows), -1),
                                         torch.zeros((len(rows), 12), dtype=torch.long),
                                         torch.ones((len(rows), 12), dtype=torch.bool), start=0, generators=gens,
                                         eos_token_id=gemma.eos_token_id, **kw)
        for j, r in enumerate(rows):
            assert torch.equal(mine[j, :len(stock[r])], stock[r]), (name, rows)
        assert calls >= max(n_rows) > 0


def test_restart_runs_the_pipeline_steps_left_from_the_grid_time(gemma):
    from diffusion_windows.masked.gemma import GemmaSampler
    from diffusion_windows.masked.sampler import Restart, reveal_schedule

    prompt = tuple(_prompt(gemma)[0].tolist())
    base = tuple(range(5, 17))
    for name, config in [("BlockRefinementScheduler", {}), ("DiscreteDDIMScheduler", {}),
                         ("EntropyBoundScheduler", {})]:
        s = GemmaSampler.from_parts(gemma.model, _scheduler(name, **config), num_inference_steps=4,
                                    temperature=1.0, confidence_threshold=None, eos_early_stop=False)
        assert s.snap([0.0, 0.3, 0.5, 1.0]) == [0.0, 0.25, 0.5, 1.0]
        runs = [Restart(prompt, base, t, 11 + k) for t in (0.0, 0.5, 1.0) for k in range(3)]
        res = s.run(runs)
        # t = 0 keeps the response; from t = 1 - i/N every canvas runs the N - i steps left
        assert res.responses[:3] == (base,) * 3 and res.rows[:3] == (0, 0, 0)
        assert res.rows[3:6] == (6, 6, 6) and res.rows[6:] == (12, 12, 12)
        assert res.calls == 2 * 3 + 4 * 3   # one batched call per step and canvas for each start time
        if name == "BlockRefinementScheduler":   # kept positions are committed: never rewritten (no editing)
            for r, out in zip(runs[3:6], res.responses[3:6]):
                kept = ~reveal_schedule(12, r.t, r.seed)[0]
                assert all(out[i] == base[i] for i in range(12) if kept[i]) and out != base
        # batched restarts equal one-at-a-time ones
        alone = [s.run([r]).responses[0] for r in runs]
        assert tuple(alone) == res.responses
        d = s.describe()
        assert d["forward_process"] == "uniform" and d["masked_theory"] is False
        assert d["reverse_process"] is (name == "DiscreteDDIMScheduler")


def test_pipeline_folder_runs_as_the_masked_kind(gemma_folder, gemma, tmp_path):
    from diffusion_windows.backends import load_backend, model_kind
    from diffusion_windows.engine.seeds import unit_seed
    from diffusion_windows.options import resolve

    assert model_kind(str(gemma_folder)) == "masked"
    o = resolve(dict(model=str(gemma_folder), prompt=PROMPT, max_new_tokens=6, samples=2, restarts=2,
                     timesteps="0,0.5,1", num_inference_steps=4, temperature=0.0, out=str(tmp_path / "run")))
    assert o["scheduler"] == "pipeline"
    b = load_backend(o)
    assert b.time_unit == "fraction corrupted" and b.describe()["forward_process"] == "uniform"
    assert b.describe()["reverse_process"] is False and b.gen_length(0) == 8   # rounded up to whole canvases
    # each base response is the stock pipeline's output for its seed, run as a user runs it
    from diffusers import BlockRefinementScheduler

    gemma.scheduler = BlockRefinementScheduler()
    for k in range(2):
        stock = gemma(prompt=PROMPT, gen_length=6, num_inference_steps=4, temperature=0.0, output_type="seq",
                      generator=torch.Generator().manual_seed(unit_seed(0, "base", k))).sequences[0].tolist()
        assert b.content(b.bases[k][1]) == b.content(stock) and len(b.bases[k][1]) == 8
    res = b.run({0: [0.0, 0.5], 1: [1.0]}, restarts=2, seed=0, batch_size=4)
    assert [r.times for r in res] == [(0.0, 0.5), (1.0,)] and res[0].labels[0] == (res[0].base_label,) * 2
    again = b.run({1: [1.0], 0: [0.5]}, restarts=2, seed=0, batch_size=1)
    assert again[0].labels == res[0].labels[1:] and again[1].labels == res[1].labels
    b.probe(3)   # the memory probe runs the pipeline's loop (the model takes no masked-LM call)


def test_gemma_folder_refuses_the_ancestral_sampler(gemma_folder, tmp_path, capsys):
    from diffusion_windows.sweep import main

    code = main(["--model", str(gemma_folder), "--prompt", PROMPT, "--scheduler", "ancestral", "--samples", "2",
                 "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "only its own scheduler ('pipeline')" in lines[0]


def test_sweep_of_a_gemma_folder_records_the_uniform_process(gemma_folder, tmp_path):
    from diffusion_windows.sweep import main

    out = tmp_path / "run"
    code = main(["--model", str(gemma_folder), "--prompt", PROMPT, "--samples", "2", "--restarts", "2",
                 "--timesteps", "0,0.5,1", "--num-inference-steps", "4", "--max-new-tokens", "4", "--out", str(out)])
    res = json.loads((out / "windows.json").read_text())
    assert code == 0 and res["time_unit"] == "fraction corrupted"
    assert res["sampler"]["forward_process"] == "uniform" and res["sampler"]["masked_theory"] is False
    assert res["sampler"]["reverse_process"] is False   # BlockRefinement: confidence-ordered commits
