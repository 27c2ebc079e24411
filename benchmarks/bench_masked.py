"""Benchmark: the toolkit's batched re-masking (`masked.sampler.ancestral`) against the loop a user writes.

Same model (the bundled ``default-masked``), base story responses, fractions masked and restarts K, two
ways, each restart with the same seed (so the same mask, reveal order and token uniforms):

1. ``baseline``: one restart at a time (batch of one row), as a loop over bases, times and restarts calling
   the model once per reverse step;
2. ``toolkit``: every restart of every base and time in one `ancestral` call (rows of all of them share each
   forward pass, ``--batch-size`` rows at most).

The restarts' outputs must agree token for token up to the last bits of batched logits (``identical``
counts the restarts that agree). Prints one JSON object: seconds of each, the ``speedup`` (baseline /
toolkit), model forward calls of each and their ratio, forward rows (the same for both: the model
evaluations). Ratios are what to compare: absolute times drift on shared machines.

With ``--sampler pipeline`` both ways run the folder's own ``LLaDA2Pipeline`` loop instead
(`masked.schedulers.PipelineSampler`): one restart at a time, or all of them batched through
`masked.schedulers.llada2_rows` (one model call per step, a generator per row).

With ``--sampler gemma`` both ways run the toolkit's ``DiffusionGemmaPipeline`` loop (`masked.gemma.GemmaSampler`,
``BlockRefinementScheduler``, temperature 1) on the tiny random ``DiffusionGemmaForBlockDiffusion`` that
``tests/test_masked_gemma.py`` builds (canvas of 4; no DiffusionGemma weights ship), with story responses rounded up
to whole canvases (28 positions) and the fractions corrupted snapped to the pipeline's grid ``1 - i / steps``: one
restart at a time, or all of them batched (a shared KV cache, one call per step and canvas for each start time).
Its sizes are the tests', not the default's: the ratios say what the batching saves in calls and Python overhead.

    python benchmarks/bench_masked.py --bases 4 --restarts 8
    python benchmarks/bench_masked.py --bases 4 --restarts 8 --sampler pipeline
    python benchmarks/bench_masked.py --bases 4 --restarts 8 --sampler gemma
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusion_windows.engine.seeds import unit_seed  # noqa: E402
from diffusion_windows.masked import language  # noqa: E402
from diffusion_windows.masked.default import model_folder  # noqa: E402
from diffusion_windows.masked.gemma import GemmaSampler, round_length  # noqa: E402
from diffusion_windows.masked.language import STORY_LENGTH  # noqa: E402
from diffusion_windows.masked.models import load_masked_lm  # noqa: E402
from diffusion_windows.masked.sampler import Restart, ancestral  # noqa: E402
from diffusion_windows.masked.schedulers import PipelineSampler  # noqa: E402
from diffusion_windows.text import lm, tasks  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bases", type=int, default=4)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--times", default="0.1,0.3,0.5,0.7,0.9")
    p.add_argument("--steps", type=int, default=16, help="ancestral steps (0: one token per step)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sampler", choices=("ancestral", "pipeline", "gemma"), default="ancestral")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sampler == "gemma":
        sample, runs = gemma_runs(args)
        return report(args, sample, runs, args.steps or 16)
    model, tok, scheduler = load_masked_lm(model_folder())
    steps = args.steps or None
    prompt = tuple(lm.prompt_ids(tok, tasks.STORY_PROMPT))
    mask = tok.mask_token_id
    bases = ancestral(model, [Restart(prompt, (mask,) * STORY_LENGTH, 1.0, unit_seed(0, "base", b))
                              for b in range(args.bases)], mask_id=mask, steps=steps).responses
    times = [float(t) for t in args.times.split(",")]
    runs = [Restart(prompt, bases[b], t, unit_seed(0, "reverse", b, t, k))
            for b in range(args.bases) for t in times for k in range(args.restarts)]
    sample = lambda rs, size: ancestral(model, rs, mask_id=mask, steps=steps, batch_size=size)  # noqa: E731
    if args.sampler == "pipeline":
        pipe = PipelineSampler.from_parts(model, tok, scheduler, model_folder(),
                                          **({"num_inference_steps": steps} if steps else {}))
        sample = lambda rs, size: pipe.run(rs, mask_id=mask, eos_id=tok.eos_token_id, batch_size=size)  # noqa: E731
    return report(args, sample, runs, steps)


def tiny_gemma():
    """(model, tokenizer): the tiny random DiffusionGemma of ``tests/test_masked_gemma.py`` (canvas of 4)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=language.build_tokenizer(), bos_token=tasks.BOS,
                                  eos_token=tasks.EOS, pad_token=tasks.PAD, unk_token=tasks.UNK)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, global_head_dim=16, max_position_embeddings=128, sliding_window=16,
                layer_types=["sliding_attention", "full_attention"], num_experts=2, top_k_experts=1,
                moe_intermediate_size=16, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8, position_embedding_size=16, patch_size=4)
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(text_config=text, vision_config=vision,
                                                                 canvas_length=4)).eval()
    return model, tok


def gemma_runs(args):
    """(sample, restarts) of ``--sampler gemma`` (module docstring): base responses from the fully corrupted start."""
    from diffusers import BlockRefinementScheduler

    model, tok = tiny_gemma()
    sampler = GemmaSampler.from_parts(model, BlockRefinementScheduler(), num_inference_steps=args.steps or 16,
                                      temperature=1.0)
    prompt, length = tuple(lm.prompt_ids(tok, tasks.STORY_PROMPT)), round_length(model, STORY_LENGTH)
    bases = sampler.run([Restart(prompt, (tok.pad_token_id,) * length, 1.0, unit_seed(0, "base", b))
                         for b in range(args.bases)], eos_id=tok.eos_token_id).responses
    times = sampler.snap([float(t) for t in args.times.split(",")])
    runs = [Restart(prompt, bases[b], t, unit_seed(0, "reverse", b, t, k))
            for b in range(args.bases) for t in times for k in range(args.restarts)]
    return (lambda rs, size: sampler.run(rs, eos_id=tok.eos_token_id, batch_size=size)), runs


def report(args, sample, runs, steps):
    """Time both ways and print the JSON object (module docstring)."""
    t0 = time.perf_counter()
    loop = [sample([r], 1) for r in runs]
    baseline_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = sample(runs, args.batch_size)
    toolkit_s = time.perf_counter() - t0
    calls_loop = sum(x.calls for x in loop)
    print(json.dumps({"sampler": args.sampler, "restarts": len(runs), "steps": steps,
                      "baseline_s": round(baseline_s, 3),
                      "toolkit_s": round(toolkit_s, 3), "speedup": round(baseline_s / toolkit_s, 2),
                      "calls_baseline": calls_loop, "calls_toolkit": batched.calls,
                      "calls_ratio": round(calls_loop / max(batched.calls, 1), 2),
                      "rows_baseline": sum(sum(x.rows) for x in loop), "rows_toolkit": sum(batched.rows),
                      "identical": sum(x.responses[0] == y for x, y in zip(loop, batched.responses))}))


if __name__ == "__main__":
    main()
