"""What a language-model run adds to the usual files: per-response curves, jumps, critical tokens, ``tokens.html``.

- `response_curves(backend, merged)`: per base response, the fraction of its restarts from each
  time that keep its own outcome (its retention curve, the paper's per-prompt curve);
- `per_response(backend, merged, settings)`: for each base response, the paper's jump criterion on
  its curve (THEORY.md: a rise of more than 0.5 between consecutive grid points toward less
  truncation, no drop below -0.3), and the token at which its outcome is decided: the largest
  jump between adjacent positions, found by bisection over positions (`text.localize`, restarts
  seeded by the prefix as the grid's), with its interval;
- `jump_rates(rows)`: how often responses have a jump, among correct and among incorrect answers
  (the paper's comparison), and per outcome;
- `write_tokens_html(out, rows)`: each response's tokens coloured by the retention of the prefix
  that ends with them, the critical token outlined, its interval underlined.

`report(backend, merged, settings, out)` runs them for the sweep and returns the extra keys of
``windows.json`` (``responses``, ``jumps``).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..analysis.windows import jump_window
from ..theory.text import kept_tokens
from .localize import localize

__all__ = ["response_curves", "per_response", "jump_rates", "write_tokens_html", "report"]


def response_curves(backend, merged) -> dict:
    """``{base: (times, retention)}``: each base's restarts that keep its own label, per time (ascending)."""
    out = {}
    for b, entry in merged.items():
        times = sorted(entry.labels)
        kept = [np.mean(np.asarray(entry.labels[t]) == entry.label) for t in times]
        out[b] = (np.asarray(times, dtype=float), np.asarray(kept, dtype=float))
    return out


def per_response(backend, merged, *, restarts: int, seed: int, batch_size: int, localize_budget: int = 12) -> list:
    """One row per base response (module docstring): its text, outcome, jump and critical token."""
    curves = response_curves(backend, merged)
    rows = []
    for b in sorted(merged):
        times, curve = curves[b]
        label = backend.labels[merged[b].label]
        prompt = backend.prompt_of(b)
        length = backend.length(b)
        measured = {kept_tokens(t, length): (int(round(r * restarts)), restarts) for t, r in zip(times, curve)}

        def retention(position, b=b):  # restarts from the prefix of `position` content tokens, as the grid's
            if position not in measured:
                point = (b, backend.prefix(b, position))
                res = backend.continuations([point], restarts=restarts, seed=seed, batch_size=batch_size)
                labels = backend.outcomes_of([point], res.tokens)[0]
                measured[position] = (sum(1 for x in labels if x == merged[b].label), len(labels))
            return measured[position]

        found = localize(retention, length, budget=localize_budget) if length else None
        jump = jump_window(times, curve)
        rows.append({
            "base": int(b), "task": prompt.task, "prompt": prompt.text, "reference": prompt.reference,
            "response": backend.text(b), "tokens": backend.tokens(b), "label": label,
            "times": times.tolist(), "retention": [round(float(r), 6) for r in curve],
            "jump": None if jump is None else list(jump),
            "critical_token": None if found is None else {
                "position": int(found.position), "interval": list(found.interval), "resolved": bool(found.resolved),
                "jump": round(float(found.jump), 6), "calls": int(found.calls),
                "token": backend.tokens(b)[found.position - 1] if 0 < found.position <= length else None},
            "position_retention": {int(k): round(n and c / n, 6) for k, (c, n) in sorted(measured.items())},
        })
    return rows


def jump_rates(rows) -> dict:
    """How often responses have a jump: among correct and incorrect answers, and per outcome label."""
    def rate(sel):
        n, k = len(sel), sum(r["jump"] is not None for r in sel)
        return {"responses": n, "with_jump": k, "fraction": round(k / n, 4) if n else None}

    out = {"all": rate(rows), "by_outcome": {}}
    for label in sorted({r["label"] for r in rows}):
        out["by_outcome"][label] = rate([r for r in rows if r["label"] == label])
    for name in ("correct", "incorrect"):
        out[name] = rate([r for r in rows if r["label"] == name])
    return out


def _colour(r):
    """Retention 0 -> pale yellow, 1 -> deep green (sequential, readable in grey)."""
    lo, hi = np.array([255, 247, 188]), np.array([0, 104, 55])
    c = (lo + (hi - lo) * float(np.clip(r, 0, 1))).astype(int)
    return f"rgb({c[0]},{c[1]},{c[2]})", ("#fff" if r > 0.55 else "#111")


def _position_curve(row):
    """Retention of the prefix that keeps ``j`` response tokens, for j = 1..L (interpolated between measured j)."""
    pts = sorted((int(k), v) for k, v in row["position_retention"].items())
    if not pts:
        return []
    ks, vs = zip(*pts)
    return list(np.interp(np.arange(1, len(row["tokens"]) + 1), ks, vs))


def tokens_page(out, title: str, explain: str, legend: str, blocks, css: str = "") -> Path:
    """Write ``tokens.html`` in ``out``: ``title``, the paragraph ``explain`` (what a colour means), a
    0..1 colour legend named ``legend``, then one ``(head, prompt, token spans)`` block per response."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>", f"""<style>
body{{font:14px/1.5 system-ui,sans-serif;margin:24px;max-width:1100px;color:#111}}
.r{{margin:0 0 14px;padding:8px 10px;border:1px solid #ddd;border-radius:6px}}
.h{{font-size:12px;color:#555;margin-bottom:4px}}.p{{color:#777}}
.t{{display:inline-block;padding:1px 3px;margin:1px;border-radius:3px;font-family:ui-monospace,monospace}}
.legend span{{display:inline-block;width:34px;text-align:center;font-size:11px}}{css}
</style>""", f"<h1>{html.escape(title)}</h1>", f"<p>{explain}</p><p class='legend'>{legend} "]
    parts += [f"<span style='background:{_colour(r)[0]};color:{_colour(r)[1]}'>{r:.1f}</span>" for r in
              np.linspace(0, 1, 6)]
    parts.append("</p>")
    parts += [f"<div class='r'><div class='h'>{head}</div><span class='p'>{html.escape(prompt)}</span> "
              + "".join(toks) + "</div>" for head, prompt, toks in blocks]
    path = Path(out) / "tokens.html"
    path.write_text("\n".join(parts))
    return path


def response_head(row, time_word: str) -> str:
    """A response block's header: base, task, outcome, reference and its jump between two ``time_word``."""
    jump = row["jump"]
    return (f"base {row['base']}" + (f" &middot; {html.escape(row['task'])}" if row.get("task") else "")
            + f" &middot; outcome <b>{html.escape(str(row['label']))}</b>"
            + (f" (reference {html.escape(str(row['reference']))})" if row.get("reference") is not None else "")
            + (f" &middot; jump between {time_word} {jump[0]:g} and {jump[1]:g}" if jump else " &middot; no jump"))


def write_tokens_html(out, rows, title: str = "Where each response's outcome is decided") -> Path:
    """``tokens.html``: one block per response (module docstring)."""
    blocks = []
    for row in rows:
        curve = _position_curve(row)
        crit = row["critical_token"] or {}
        lo, hi = (crit.get("interval") or [0, -1])
        head = response_head(row, "fractions") + (
            f" &middot; critical token {crit['position']} ({html.escape(str(crit.get('token')))})"
            + ("" if lo == hi else f", interval {lo}&ndash;{hi}") if crit else "")
        narrow = hi - lo + 1 <= max(1, len(row["tokens"]) // 2)  # a wide interval is said, not drawn
        toks = []
        for j, (tok, r) in enumerate(zip(row["tokens"], curve), start=1):
            bg, fg = _colour(r)
            cls = "t" + (" c" if crit and j == crit["position"] else "") + (" i" if narrow and lo <= j <= hi else "")
            toks.append(f"<span class='{cls}' style='background:{bg};color:{fg}' title='keep {j} tokens: "
                        f"retention {r:.2f}'>{html.escape(tok)}</span>")
        blocks.append((head, row["prompt"], toks))
    return tokens_page(
        out, title, "Each token is coloured by the retention of the prefix that ends with it: the fraction of the "
        "restarts from there that end with the response's own outcome. The critical token (largest jump, found by "
        "bisection) is outlined in red; a red underline spans the positions its interval cannot exclude, when "
        "that is at most half the response.", "retention", blocks,
        css="\n.c{outline:2px solid #d7301f;outline-offset:1px}.i{border-bottom:3px solid #d7301f}")


def report(backend, merged, settings, out, *, localize_budget: int = 12) -> dict:
    """Per-response rows, jump rates and ``tokens.html`` (when ``out`` is a folder): the extra keys of ``windows.json``.

    ``merged``: the run's units (`analysis.counts.merge_units`); ``settings``: its `engine.Settings`
    (restarts, seed and batch size of the localization's restarts)."""
    s = settings
    cache = Path(out) / "responses.json" if out is not None else None
    if cache is not None and cache.exists():  # localization is seeded: a rerun into the folder reuses it
        rows = json.loads(cache.read_text())
    else:
        rows = per_response(backend, merged, restarts=s.restarts, seed=s.seed, batch_size=min(s.batch_size, 512),
                            localize_budget=localize_budget)
        if cache is not None:
            cache.write_text(json.dumps(rows))
    if out is not None:
        write_tokens_html(out, rows)
    return {"responses": rows, "jumps": jump_rates(rows)}
