"""Train the bundled default language model on the story language and step-by-step addition.

    nice python experiments/train_default_lm.py            # ~11 min on 1 shared core

A GPT-2 (`transformers.GPT2LMHeadModel`: 4 layers, width 128, 4 heads, context 96, tied
embeddings; 0.8 M parameters) trained from scratch on the two tasks of
`diffusion_windows.text.tasks`, four stories for one addition: stories of `DEFAULT_STORY`
(exactly solvable: the least possible loss per story token is known,
`theory.text.response_entropy`, and the log shows the model's excess over it) and
additions of 2- to 5-digit numbers (held-out problems excluded; trained little enough
that sampled answers are sometimes wrong). The loss is next-token cross-entropy on the
response and its end-of-sequence token only (the prompt is given, not modelled). AdamW,
linear warm-up, cosine decay; a fresh sample of the tasks every step, so nothing is seen
twice.

Writes the loss log (CSV) to experiments/out/default_lm/, and the model
(`save_pretrained`, safetensors, with a sampling `generation_config.json`: temperature 1,
top_p 1, no top_k) and its tokenizer (`tokenizer.json`) to assets/default_lm/, loadable
offline by `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
Deterministic from --seed for a given --threads: data come from one numpy Generator,
the initial weights from torch's seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.text import tasks  # noqa: E402
from diffusion_windows.theory.text import response_entropy  # noqa: E402

ASSET_DIR = ROOT / "assets" / "default_lm"
CONTEXT = 96


def model_config(vocab_size: int, n_embd: int, n_layer: int, n_head: int):
    from transformers import GPT2Config

    v = {w: i for i, w in enumerate(tasks.vocabulary())}
    return GPT2Config(vocab_size=vocab_size, n_positions=CONTEXT, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, n_inner=4 * n_embd, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=v[tasks.BOS], eos_token_id=v[tasks.EOS], pad_token_id=v[tasks.PAD],
                      tie_word_embeddings=True)


def encode(tok, examples):
    """input_ids, attention_mask, labels [B, T] of (prompt, response) pairs, right-padded;
    labels -100 on <bos>, the prompt and the padding."""
    eos, pad = tok.token_to_id(tasks.EOS), tok.token_to_id(tasks.PAD)
    rows = []
    for prompt, response in examples:
        p = tok.encode(prompt).ids  # <bos> prompt
        r = tok.encode(response, add_special_tokens=False).ids + [eos]
        rows.append((p + r, [-100] * len(p) + r))
    t = max(len(ids) for ids, _ in rows)
    if t > CONTEXT:
        raise ValueError(f"an example has {t} tokens, more than the context {CONTEXT}")
    ids = torch.full((len(rows), t), pad)
    labels = torch.full((len(rows), t), -100)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return ids, mask, labels


def make_batch(tok, rng, batch_size: int, story_fraction: float) -> dict:
    """`batch_size` fresh examples, each a story with probability story_fraction, else a
    training addition; stories and additions encoded apart (less padding) -> {task: tensors}."""
    parts = {"story": [], "addition": []}
    for _ in range(batch_size):
        prompt, response = tasks.sample_example(rng, story_fraction)
        parts["story" if prompt == tasks.STORY_PROMPT else "addition"].append((prompt, response))
    return {k: encode(tok, v) for k, v in parts.items() if v}


def losses(model, batch: dict, ending_ids: torch.Tensor, ending_weight: float):
    """The training loss: the mean next-token loss over every response token of the batch,
    the story endings weighted by ending_weight (the weight moves no minimiser: each token's
    loss is least at its true conditional law; it speeds up learning the ending, one token
    in 26 that reads the whole story); and per task the unweighted summed loss and token
    count (for the log)."""
    total, count, parts = 0.0, 0.0, {}
    for task, (ids, mask, labels) in batch.items():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                              reduction="none").view(target.shape)
        valid = target != -100
        w = valid.float() * torch.where(torch.isin(target, ending_ids), ending_weight, 1.0)
        total, count = total + (w * nll).sum(), count + w.sum()
        parts[task] = (nll[valid].sum().item(), int(valid.sum()))
    return total / count, parts


def save(model, folder: Path, summary: dict):
    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    # plain ancestral sampling: the forward-reverse experiment needs the model's own law
    model.generation_config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                               max_length=CONTEXT, bos_token_id=c.bos_token_id,
                                               eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
    model.save_pretrained(folder, safe_serialization=True)
    tasks.save_tokenizer(folder, model_max_length=CONTEXT)
    (folder / "dw_text_lm.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--final-lr", type=float, default=0.02, help="cosine decay to this fraction of --lr")
    p.add_argument("--story-fraction", type=float, default=0.8)
    p.add_argument("--ending-weight", type=float, default=8.0, help="loss weight of a story's ending token")
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--assets", type=Path, default=ASSET_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "out" / "default_lm")
    p.add_argument("--dry-run", action="store_true", help="print the options and exit")
    args = p.parse_args(argv)
    if args.dry_run:
        print(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
        return

    from transformers import GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "options.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    tok = tasks.build_tokenizer()
    model = GPT2LMHeadModel(model_config(tok.get_vocab_size(), args.n_embd, args.n_layer, args.n_head))
    n_params = sum(q.numel() for q in model.parameters())
    print(f"params: {n_params / 1e6:.3f} M", flush=True)
    h = response_entropy(tasks.DEFAULT_STORY)
    story_tokens = tasks.DEFAULT_STORY.num_cues + 2  # cues, ending, end-of-sequence
    optimum = (h["cues"] + h["ending"]) / story_tokens  # least story loss per token, nats

    ending_ids = torch.tensor([tok.token_to_id(g) for g in tasks.GENRES])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_at(step):  # linear warm-up, then cosine decay to final_lr of the peak
        if step < args.warmup:
            return (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.final_lr + (1 - args.final_lr) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(args.seed)
    model.train()
    t0 = time.time()
    acc = np.zeros(5)  # weighted loss, story loss sum, story tokens, addition loss sum, addition tokens
    last = {}
    with open(args.out / "loss.csv", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "story_loss", "story_excess", "addition_loss", "lr", "seconds"])
        for step in range(args.steps):
            batch = make_batch(tok, rng, args.batch_size, args.story_fraction)
            loss, parts = losses(model, batch, ending_ids, args.ending_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            acc += (loss.item(), *parts.get("story", (0, 0)), *parts.get("addition", (0, 0)))
            if (step + 1) % 50 == 0:
                s_loss, a_loss = acc[1] / max(acc[2], 1), acc[3] / max(acc[4], 1)
                last = {"step": step + 1, "loss": acc[0] / 50, "story_loss": s_loss,
                        "story_excess": s_loss - optimum, "addition_loss": a_loss}
                row = [step + 1, f"{last['loss']:.5f}", f"{s_loss:.5f}", f"{s_loss - optimum:.5f}",
                       f"{a_loss:.5f}", f"{sched.get_last_lr()[0]:.2e}", f"{time.time() - t0:.1f}"]
                log.writerow(row)
                f.flush()
                acc[:] = 0
                if (step + 1) % 250 == 0:
                    print(*row, flush=True)
            if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
                save(model, args.out / "checkpoint", {"step": step + 1})

    train_seconds = time.time() - t0
    summary = {"train_seconds": round(train_seconds, 1), "steps": args.steps, "batch_size": args.batch_size,
               "seed": args.seed, "threads": args.threads, "params_M": round(n_params / 1e6, 3),
               "story_fraction": args.story_fraction,
               "ending_weight": args.ending_weight, "story_optimum_per_token": round(optimum, 5),
               "final": {k: round(v, 5) for k, v in last.items()}}
    save(model.eval(), args.assets, summary)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
