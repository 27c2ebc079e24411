"""Measure the bundled default language model against the exact theory of its story language.

    nice python experiments/measure_default_lm.py > experiments/out/default_lm/measure.json

Prints JSON with
- "next_token": on every prefix of `--n-prefix` stories drawn from the language itself,
  KL(exact || model) and TV between the model's next-token law and the exact posterior
  predictive (cue positions) or the exact posterior (the ending), and the model's mass on
  words the language cannot emit there;
- "retention": the forward-reverse experiment on the model (THEORY.md, "Autoregressive
  models"): `--n-base` stories sampled from the model (temperature 1, top_p 1), each cut
  at every fraction of the grid by `theory.text.kept_tokens` (length M + 1: the cues and
  the ending; the end-of-sequence token not counted) and resampled once, the genre read
  from the ending; per feature value and fraction, the retention with a 95% Wilson
  interval (one resample per base sample: independent Bernoulli draws) and the exact
  `theory.text.retention`, with z = (measured - exact) / sqrt(exact (1 - exact) / n) and
  the two-sided binomial p-value; a summary counts the cells with p < 0.01 and the mean
  z (a systematic bias shows as a mean z far from 0);
- "format": the share of sampled stories in the right format (24 cue words, a genre,
  end-of-sequence), the model's genre rates and the retention summary;
- "addition": accuracy (and format) of sampled answers on `--n-add` held-out problems.
Deterministic from --seed and --batch (one torch generator per fraction of the grid).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion_windows.text import tasks  # noqa: E402
from diffusion_windows.theory import text as tx  # noqa: E402


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _cache_kw(model):
    """The keyword of the key-value cache: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def sample(model, ids: torch.Tensor, max_new: int, eos_id: int, generator: torch.Generator) -> list:
    """Ancestral sampling at temperature 1 (no top-k, no top-p) from prefixes ids [B, T] of one
    length; returns the new tokens of each row up to and including its end-of-sequence."""
    kw = _cache_kw(model)
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    new = []
    done = torch.zeros(len(ids), dtype=torch.bool)
    for _ in range(max_new):
        nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1, generator=generator)
        new.append(nxt[:, 0])
        done |= nxt[:, 0] == eos_id
        if done.all():
            break
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        out = model(input_ids=nxt, attention_mask=mask, use_cache=True, **{kw: getattr(out, kw)})
    toks = torch.stack(new, 1).tolist() if new else [[] for _ in range(len(ids))]
    return [row[:row.index(eos_id) + 1] if eos_id in row else row for row in toks]


def story_words(tok, row, eos_id):
    """Response words of a story (end-of-sequence dropped) and whether it ended with it."""
    ended = bool(row) and row[-1] == eos_id
    return tok.convert_ids_to_tokens(row[:-1] if ended else row), ended


def well_formed(words, ended, language=tasks.DEFAULT_STORY) -> bool:
    m = language.num_cues
    return (ended and len(words) == m + 1 and all(w in language.cue_words for w in words[:m])
            and words[m] in language.genre_names)


def wilson(k, n, z=1.96):
    if n == 0:
        return [None, None]
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(c - h), 4), round(float(c + h), 4)]


@torch.no_grad()
def next_token_check(model, tok, n_prefix: int, seed: int, language=tasks.DEFAULT_STORY) -> dict:
    """Model vs exact next-token law on every prefix of n_prefix true stories."""
    rng = np.random.default_rng(seed)
    vocab = tok.get_vocab()
    cue_ids = np.array([vocab[c] for c in language.cue_words])
    end_ids = np.array([vocab[g] for g in language.genre_names])
    prompt = tok(tasks.STORY_PROMPT).input_ids
    stories = [tasks.sample_story(rng, language)[1].split() for _ in range(n_prefix)]
    ids = torch.tensor([prompt + [vocab[w] for w in s] for s in stories])
    logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1).numpy()
    m = language.num_cues
    stats = {"cue": [], "ending": []}
    for i, s in enumerate(stories):
        for j in range(m + 1):  # j response words known
            lp = logp[i, len(prompt) - 1 + j]
            exact = np.zeros(lp.shape)
            law = tx.next_word_probs(language, s[:j])
            exact[cue_ids if j < m else end_ids] = list(law.values())
            pos = exact > 0
            kl = float(np.sum(exact[pos] * (np.log(exact[pos]) - lp[pos])))
            tv = 0.5 * float(np.abs(exact - np.exp(lp)).sum())
            stats["cue" if j < m else "ending"].append((kl, tv, float(np.exp(lp[~pos]).sum())))
    out = {}
    for k, v in stats.items():
        a = np.array(v)
        out[k] = {"n": len(a), "kl_mean": round(float(a[:, 0].mean()), 5), "kl_max": round(float(a[:, 0].max()), 5),
                  "tv_mean": round(float(a[:, 1].mean()), 5), "tv_max": round(float(a[:, 1].max()), 5),
                  "impossible_mass_mean": float(f"{a[:, 2].mean():.3g}"),
                  "impossible_mass_max": float(f"{a[:, 2].max():.3g}")}
    return out


def retention_check(model, tok, n_base: int, seed: int, fractions, batch: int,
                    language=tasks.DEFAULT_STORY) -> tuple:
    """Forward-reverse retention per feature value and fraction (one resample per base story)
    against the exact curve -> (per-value tables, summary)."""
    eos = tok.eos_token_id
    prompt = tok(tasks.STORY_PROMPT).input_ids
    m, length = language.num_cues, language.length
    g = torch.Generator().manual_seed(seed)
    base = []
    for s in range(0, n_base, batch):
        b = min(batch, n_base - s)
        base += sample(model, torch.tensor([prompt] * b), length + 2, eos, g)
    words = [story_words(tok, r, eos) for r in base]
    ok = [well_formed(w, e) for w, e in words]
    genre = np.array([language.genre_names.index(w[m]) if f else -1 for (w, _), f in zip(words, ok)])
    world_of = np.array(language.genre_world)
    res = {"genre": {}, "world": {}}
    counts = {}
    for fi, f in enumerate(fractions):
        k = tx.kept_tokens(f, length)
        g = torch.Generator().manual_seed(seed * 1000 + 1 + fi)  # one seed per fraction
        keep = np.flatnonzero(genre >= 0)
        new = []
        for s in range(0, len(keep), batch):
            rows = [prompt + base[i][:k] for i in keep[s:s + batch]]
            new += sample(model, torch.tensor(rows), length + 2 - k, eos, g)
        re_genre = np.full(len(genre), -1)
        for i, r in zip(keep, new):
            w, e = story_words(tok, base[i][:k] + r, eos)
            re_genre[i] = language.genre_names.index(w[m]) if well_formed(w, e) else -1
        for feat, lab, relab, n_vals in [("genre", genre, re_genre, len(language.genre_names)),
                                         ("world", np.where(genre >= 0, world_of[genre], -1),
                                          np.where(re_genre >= 0, world_of[re_genre], -1), len(language.worlds))]:
            for v in range(n_vals):
                sel = lab == v
                counts.setdefault((feat, v), []).append((int((relab[sel] == v).sum()), int(sel.sum())))
    names = {"genre": language.genre_names, "world": language.worlds}
    sets = {("genre", v): (v,) for v in range(len(language.genre_names))}
    sets.update({("world", v): tuple(np.flatnonzero(world_of == v)) for v in range(len(language.worlds))})
    kept = [tx.kept_tokens(f, length) for f in fractions]
    p_values, zs = [], []
    for (feat, v), cs in counts.items():
        exact = tx.retention(language, sets[(feat, v)], kept)
        rows = {}
        for f, k, (hits, n), r in zip(fractions, kept, cs, exact):
            r = float(r)
            z = (hits / n - r) / np.sqrt(r * (1 - r) / n) if n and 0 < r < 1 else None
            p = float(stats.binomtest(hits, n, min(r, 1.0)).pvalue) if n else None
            if p is not None:
                p_values.append(p)
            if z is not None:
                zs.append(z)
            rows[str(f)] = {"kept": int(k), "retention": round(hits / n, 4) if n else None,
                            "wilson95": wilson(hits, n), "n": n, "exact": round(r, 4),
                            "z": None if z is None else round(float(z), 2),
                            "p": None if p is None else float(f"{p:.3g}")}
        res[feat][names[feat][v]] = rows
    p_values, zs = np.array(p_values), np.array(zs)
    base_rate = {n: round(float(np.mean(genre == i)), 4) for i, n in enumerate(language.genre_names)}
    return res, {"stories": len(base), "well_formed": round(float(np.mean(ok)), 4), "genre_rate": base_rate,
                 "cells": len(p_values), "cells_p_below_0.01": int(np.sum(p_values < 0.01)),
                 "min_p": float(f"{p_values.min():.3g}"), "mean_z": round(float(zs.mean()), 3),
                 "share_abs_z_above_2": round(float(np.mean(np.abs(zs) > 2)), 3)}


def addition_check(model, tok, n_add: int, seed: int, batch: int) -> dict:
    rng = np.random.default_rng(seed)
    probs = [tasks.sample_addition(rng, held_out=True) for _ in range(n_add)]
    g = torch.Generator().manual_seed(seed)
    eos = tok.eos_token_id
    by_len = {}
    for a, b in probs:
        ids = tok(tasks.addition_prompt(a, b)).input_ids
        by_len.setdefault(len(ids), []).append((a, b, ids))
    correct = formed = 0
    examples = []
    for _, group in sorted(by_len.items()):
        for s in range(0, len(group), batch):
            chunk = group[s:s + batch]
            out = sample(model, torch.tensor([c[2] for c in chunk]), 80, eos, g)
            for (a, b, _), r in zip(chunk, out):
                text = tok.decode(r, skip_special_tokens=True)
                ans = tasks.read_answer(text)
                formed += ans is not None and bool(r) and r[-1] == eos
                correct += ans == a + b
                if len(examples) < 3:
                    examples.append({"prompt": tasks.addition_prompt(a, b), "response": text, "correct": ans == a + b})
    return {"n": n_add, "accuracy": round(correct / n_add, 4), "wilson95": wilson(correct, n_add),
            "well_formed": round(formed / n_add, 4), "examples": examples}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "assets" / "default_lm")
    p.add_argument("--n-prefix", type=int, default=200)
    p.add_argument("--n-base", type=int, default=2000)
    p.add_argument("--n-add", type=int, default=1000)
    p.add_argument("--fractions", type=float, nargs="+", default=list(tx.DEFAULT_FRACTIONS))
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    t0 = time.time()
    result = {"model": str(args.model), "params_M": round(sum(q.numel() for q in model.parameters()) / 1e6, 3),
              "seed": args.seed}
    result["next_token"] = next_token_check(model, tok, args.n_prefix, args.seed)
    t1 = time.time()
    result["retention"], result["format"] = retention_check(model, tok, args.n_base, args.seed, args.fractions,
                                                            args.batch)
    t2 = time.time()
    result["addition"] = addition_check(model, tok, args.n_add, args.seed, args.batch)
    result["theory"] = [{k: r.to_dict()[k] for k in ("feature", "value", "parent_value", "t_after", "t_before",
                                                      "t_after_tokens", "t_before_tokens", "window_exists")}
                        for r in tx.predict_text_windows(tasks.DEFAULT_STORY, fractions=args.fractions)]
    result["seconds"] = {"next_token": round(t1 - t0, 1), "retention": round(t2 - t1, 1),
                         "addition": round(time.time() - t2, 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
