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

    python benchmarks/bench_masked.py --bases 4 --restarts 8
    python benchmarks/bench_masked.py --bases 4 --restarts 8 --sampler pipeline
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
from diffusion_windows.masked.default import model_folder  # noqa: E402
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
    p.add_argument("--sampler", choices=("ancestral", "pipeline"), default="ancestral")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
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
