"""How many held-out additions the bundled masked-diffusion model (``--model default-masked``) solves, per sampler.

    OMP_NUM_THREADS=1 nice python experiments/eval_masked_additions.py --n 100 --seed 1

The problems: ``N`` held-out step-by-step additions (`text.tasks.is_held_out`: never trained on), drawn as a
default run draws its own (`text.default.prompts`: the odd bases of a run with ``2 N`` samples and this seed; with
``--seed 0`` the first 20 are the default run's 20). Each is answered once from the fully masked response (52
positions) by a `masked.backend.MaskedBackend` over these prompts alone, so the sampling, its seeds
(``unit_seed(seed, "base", i)`` for problem ``i``), the decoding and the outcome (`text.default.OUTCOME`: the final
answer against the sum) are the toolkit's own; a setting is

- ``ancestral`` with ``--steps`` (`masked.sampler.ancestral` on that many steps; ``0``: the exact sampler, one
  token per forward pass), at ``--temperature`` (1: the default run's);
- ``pipeline`` with ``--pipeline-steps`` (the folder's own ``LLaDA2Pipeline`` loop, `masked.schedulers`:
  confidence-ordered block commits, not a sampler of the reverse process).

Prints one JSON object: per setting ``correct`` of ``n`` with a 95% Wilson interval (problems are independent),
``answered`` (responses with a final answer at all, right or wrong), forward rows, model calls and seconds; and the
total seconds. Deterministic from --seed for a given --threads (up to the last bits of batched logits).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.analysis.windows import wilson_interval  # noqa: E402
from diffusion_windows.masked import default  # noqa: E402
from diffusion_windows.masked.backend import MaskedBackend  # noqa: E402
from diffusion_windows.masked.models import load_masked_lm  # noqa: E402
from diffusion_windows.masked.schedulers import PipelineSampler  # noqa: E402
from diffusion_windows.text import tasks  # noqa: E402


def problems(n: int, seed: int) -> list:
    """The first ``n`` held-out additions a default run with this seed would draw (its odd bases' prompts)."""
    return [p for p in default.prompts(2 * n, seed) if p.reference is not None][:n]


def evaluate(model, tokenizer, prompts, *, seed: int, sampler="ancestral", steps=None, temperature: float = 1.0,
             batch_size: int = 128) -> dict:
    """One setting: each prompt answered once (base ``i`` answers prompt ``i``); correct and answered counts.
    ``model``: a `Counting` one (the sampler's too), whose calls are counted from here."""
    calls = model.calls
    calls.clear()
    t0 = time.perf_counter()
    backend = MaskedBackend(model, tokenizer, prompts, outcome=default.OUTCOME, labels=default.LABELS,
                            features=default.FEATURES, samples=len(prompts), seed=seed,
                            gen_length=default.response_length,
                            steps=steps, temperature=temperature, batch_size=batch_size, name="default-masked",
                            sampler=sampler)
    seconds = time.perf_counter() - t0
    labels = [backend.labels[i] for i in backend.base_labels]
    answered = sum(tasks.read_answer(backend.text(b)) is not None for b in range(len(prompts)))
    k, n = labels.count("correct"), len(prompts)
    low, high = wilson_interval(k, n)
    return {"correct": k, "n": n, "ci95": [round(float(low), 3), round(float(high), 3)], "answered": answered,
            "forward_rows": sum(r[0] for r in calls), "model_calls": len(calls), "seconds": round(seconds, 1)}


class Counting(torch.nn.Module):
    """``model`` unchanged, each call's input shape recorded (forward rows and calls, whichever sampler runs)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    @property
    def config(self):
        return self.model.config

    @property
    def device(self):
        return self.model.device

    def forward(self, input_ids=None, **kwargs):
        self.calls.append(tuple(input_ids.shape))
        return self.model(input_ids=input_ids, **kwargs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="held-out additions")
    p.add_argument("--seed", type=int, default=1, help="draws the problems and every sampling seed")
    p.add_argument("--steps", default="16,32,64,0", help="ancestral steps, comma-separated (0: the exact sampler)")
    p.add_argument("--pipeline-steps", default="16,32",
                   help="steps of the LLaDA2Pipeline loop, comma-separated ('' for none)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
        pipe_steps = [int(s) for s in args.pipeline_steps.split(",") if s.strip()]
    except ValueError:
        p.error(f"--steps/--pipeline-steps: comma-separated integers, got {args.steps!r} / {args.pipeline_steps!r}")
    if any(s < 0 for s in steps) or any(s < 1 for s in pipe_steps):
        p.error(f"--steps must be >= 0 and --pipeline-steps >= 1, got {args.steps!r} / {args.pipeline_steps!r}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    folder = default.model_folder()
    model, tokenizer, scheduler = load_masked_lm(folder)
    model = Counting(model)
    prompts = problems(args.n, args.seed)
    kw = dict(seed=args.seed, temperature=args.temperature, batch_size=args.batch_size)
    settings = []
    for s in steps:
        settings.append({"sampler": "ancestral", "steps": s or "exact",
                         **evaluate(model, tokenizer, prompts, steps=s or None, **kw)})
    for s in pipe_steps:
        pipe = PipelineSampler.from_parts(model, tokenizer, scheduler, folder, temperature=args.temperature,
                                          num_inference_steps=s)
        settings.append({"sampler": "pipeline", "steps": s, **evaluate(model, tokenizer, prompts, sampler=pipe, **kw)})
    print(json.dumps({"model": str(folder), "n": args.n, "seed": args.seed, "temperature": args.temperature,
                      "threads": args.threads, "settings": settings,
                      "total_seconds": round(time.perf_counter() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
