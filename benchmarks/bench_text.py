"""Benchmark: `diffusion_windows.text.resample` against the plain loop a user would write.

Same model, base responses, cut points (fractions of each response's own length, as in
the paper's LLM experiments) and restarts K, two ways:

1. ``baseline``: for each base and each cut, ``model.generate`` on the prefix repeated K
   times (``transformers``' own sampling, top-k off);
2. ``resample``: one call of `resample` (one base pass per response, every cut and
   restart decoded together from the cached prefixes).

Each runs twice: greedy (temperature 0; the continuations must be identical) and sampled
(``--temperature``, ``--top-p``; the retention of each base's outcome must agree within
sampling error: ``sampled_z`` is the summed difference over cut points in standard
errors, ``sampled_agree`` is ``|z| < 3``). Prints one JSON object as its last line:
seconds of each (``resample_s``/``baseline_s`` sampled, ``greedy_*`` greedy), the
``speedup`` (baseline / resample, sampled) and ``greedy_speedup``, tokens sampled
(``decoded_*``), tokens run through the model (``model_tokens_*``, prefill and padding
included) and model calls (``forwards_*``). Ratios are what to compare: absolute times
drift on shared machines.

    python benchmarks/bench_text.py                 # the bundled assets/default_lm, story prompt
    python benchmarks/bench_text.py --tiny          # a tiny random GPT-2 built in code (CI)
    python benchmarks/bench_text.py --model PATH --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # measure the package of this checkout, not an installed one
DEFAULT_MODEL = ROOT / "assets" / "default_lm"
TINY_OUTCOME = r"regex:\b(w[0-4])\b"    # the first of five words named: retention varies with the cut
MODEL_OUTCOME = r"regex:(\w+)\W*$"      # the last word of the response


def tiny_lm():
    """A random 2-layer GPT-2 (vocabulary 50) and a word-level tokenizer for it, built in code."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(47)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                       bos_token_id=0, eos_token_id=1)).eval()
    model.generation_config.eos_token_id = 1
    return model, tokenizer


def default_prompt() -> str:
    """The bundled default's story prompt (`text.tasks.STORY_PROMPT`) when that module is there, else BOS."""
    try:
        from diffusion_windows.text.tasks import STORY_PROMPT
    except ImportError:
        return ""
    return STORY_PROMPT


def plain_loop(model, bases, points, *, restarts, max_new_tokens, temperature, top_p, stops, seed):
    """What a user writes without the toolkit: ``generate`` per (base, cut) on K copies of the prefix."""
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    out = []
    for b, kept in points:
        prompt, response = bases[b]
        budget = max_new_tokens - kept
        if budget <= 0 or (kept and response[kept - 1] in stops):
            out.append(((),) * restarts)
            continue
        ids = torch.tensor([prompt + response[:kept]] * restarts, device=device)
        config = GenerationConfig(max_new_tokens=budget, eos_token_id=list(stops), pad_token_id=stops[0],
                                  **sampling)
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        out.append(tuple(_until_stop(row, stops) for row in gen[:, ids.shape[1]:].tolist()))
    return tuple(out)


def _until_stop(row, stops):
    for i, t in enumerate(row):
        if t in stops:
            return tuple(row[:i + 1])
    return tuple(row)


def cut_points(bases, fractions):
    """(base, kept) for kept = round(f * L) over the fraction grid, per base (duplicates dropped)."""
    points = []
    for b, (_, response) in enumerate(bases):
        points += [(b, k) for k in dict.fromkeys(round(f * len(response)) for f in fractions)]
    return points


def retention(outcome, tokenizer, bases, points, tokens):
    """Per point, the fraction of restarts whose outcome equals the base response's."""
    from diffusion_windows.text.lm import decode

    base_label = [outcome(decode(tokenizer, r)) for _, r in bases]
    labels = [[outcome(decode(tokenizer, bases[b][1][:kept] + list(c))) for c in conts]
              for (b, kept), conts in zip(points, tokens)]
    rates = np.array([np.mean([x == base_label[b] for x in row]) for (b, _), row in zip(points, labels)])
    return rates, labels


def agreement(r1, r2, restarts):
    """z of the summed per-point retention difference (pooled binomial variances)."""
    p = (r1 + r2) / 2
    var = np.sum(2 * p * (1 - p) / restarts)
    diff = float(np.sum(r1 - r2))
    return 0.0 if var == 0 and diff == 0 else diff / math.sqrt(max(var, 1e-12))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run(*, model_path=None, tiny=False, bases=4, restarts=16, fractions=11, max_new_tokens=None,
        temperature=1.0, top_p=1.0, outcome=None, prompt=None, batch_size=256,
        device="cpu", dtype="float32", seed=0):
    from diffusion_windows.text.lm import decode, generate, load_lm
    from diffusion_windows.text.outcomes import make_outcome
    from diffusion_windows.text.resample import count_calls, eos_ids, resample

    if tiny:
        model, tokenizer = tiny_lm()
        model = model.to(device=device, dtype=getattr(torch, dtype))
        name = "tiny random GPT-2"
    else:
        model_path = Path(model_path or DEFAULT_MODEL)
        if not model_path.is_dir():
            raise SystemExit(f"no model folder at {model_path}: pass --model PATH or --tiny")
        model, tokenizer = load_lm(model_path, dtype=dtype, device=device)
        name = str(model_path)
    stops = eos_ids(model)
    max_new_tokens = max_new_tokens or (24 if tiny else 48)
    prompt = prompt if prompt is not None else ("" if tiny else default_prompt())
    base_seqs = generate(model, tokenizer, [prompt] * bases, seeds=[seed * 1000 + b for b in range(bases)],
                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    points = cut_points(base_seqs, np.linspace(0, 1, fractions))
    outcome = outcome or (TINY_OUTCOME if tiny else MODEL_OUTCOME)
    classify = make_outcome(outcome).fit([decode(tokenizer, r) for _, r in base_seqs])
    common = dict(restarts=restarts, max_new_tokens=max_new_tokens, top_p=top_p)

    # warm-up: first calls pay for lazy initialisation in torch and transformers
    resample(model, base_seqs, points[:1], restarts=2, max_new_tokens=max_new_tokens, batch_size=2)
    plain_loop(model, base_seqs, points[:1], restarts=2, max_new_tokens=max_new_tokens, temperature=1.0,
               top_p=1.0, stops=stops, seed=seed)

    result = {"model": name, "prompt": prompt, "outcome": outcome,
              "params": sum(p.numel() for p in model.parameters()), "device": device,
              "dtype": dtype, "bases": bases, "points": len(points), "restarts": restarts,
              "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
              "batch_size": batch_size, "threads": torch.get_num_threads()}
    for mode, temp in (("greedy", 0.0), ("sampled", temperature)):
        with count_calls(model) as ours_calls:
            ours, ours_s = timed(lambda: resample(model, base_seqs, points, seed=seed, temperature=temp,
                                                  batch_size=batch_size, **common))
        with count_calls(model) as plain_calls:
            plain, plain_s = timed(lambda: plain_loop(model, base_seqs, points, temperature=temp, stops=stops,
                                                      seed=seed, **common))
        r_ours, labels_ours = retention(classify, tokenizer, base_seqs, points, ours.tokens)
        r_plain, labels_plain = retention(classify, tokenizer, base_seqs, points, plain)
        prefix = "" if mode == "sampled" else "greedy_"
        result |= {f"{prefix}resample_s": round(ours_s, 3), f"{prefix}baseline_s": round(plain_s, 3),
                   f"{prefix}speedup": round(plain_s / ours_s, 2)}
        if mode == "greedy":
            result |= {"greedy_identical": ours.tokens == plain,
                       "greedy_outcomes_identical": labels_ours == labels_plain}
        else:
            z = agreement(r_ours, r_plain, restarts)
            result |= {"retention_resample": round(float(r_ours.mean()), 4),
                       "retention_baseline": round(float(r_plain.mean()), 4),
                       "sampled_z": round(z, 3), "sampled_agree": abs(z) < 3,
                       "decoded_resample": ours.decoded,
                       "decoded_baseline": sum(len(c) for row in plain for c in row),
                       "model_tokens_resample": ours_calls["tokens"], "model_tokens_baseline": plain_calls["tokens"],
                       "forwards_resample": ours_calls["calls"], "forwards_baseline": plain_calls["calls"]}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="model_path", help=f"a local causal LM folder (default {DEFAULT_MODEL})")
    parser.add_argument("--tiny", action="store_true", help="a tiny random GPT-2 built in code (CI)")
    parser.add_argument("--bases", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=16)
    parser.add_argument("--fractions", type=int, default=11, help="cut points per response: linspace(0, 1, n)")
    parser.add_argument("--max-new-tokens", type=int, help="response tokens in all (default 48; 24 with --tiny)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--outcome", help=f"an outcome spec (text.outcomes; default {MODEL_OUTCOME!r}, "
                                          f"with --tiny {TINY_OUTCOME!r})")
    parser.add_argument("--prompt", help="the prompt of every base response ('' = BOS; default: the bundled "
                                         "default's story prompt, or BOS with --tiny)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spinning on shared cores)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    args = vars(parser.parse_args(argv))
    threads, dry = args.pop("threads"), args.pop("dry_run")
    if dry:
        print(json.dumps(args | {"threads": threads}))
        return
    torch.set_num_threads(threads)
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()   # generate's per-call notes about max_length would bury the result
    print(json.dumps(run(**args)))


if __name__ == "__main__":
    main()
