"""What a masked-diffusion run adds to the usual files: per-response curves and jumps, token influence,
``tokens.html``.

- per response: its retention curve over fractions masked (`text.report.response_curves`) and the
  paper's jump criterion on it (`analysis.windows.jump_window`); jump rates among correct and
  incorrect answers (`text.report.jump_rates`);
- token influence: re-masking has no "prefix that ends with a token", so a token's colour says how
  much *keeping it unmasked* raises retention. Every restart's mask is known from its seed
  (`MaskedBackend.mask_of`); at each fraction masked ``t`` the restarts split into those that kept
  position ``i`` and those that masked it, and the influence of ``i`` is the difference of their
  retentions, averaged over ``t`` with weights ``n_kept n_masked / (n_kept + n_masked)`` (a
  stratified difference: comparing within one ``t`` keeps the overall amount of masking out of it).
  An estimate from the grid's restarts, no extra model call.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ..analysis.windows import jump_window
from ..text.report import _colour, jump_rates, response_curves, response_head, tokens_page

__all__ = ["token_influence", "per_response", "write_tokens_html", "report"]


def token_influence(backend, b: int, entry, seed: int) -> list:
    """Per response position of base ``b``: the stratified difference in retention between restarts that kept it
    and restarts that masked it (module docstring); None where no time had both."""
    n = backend.gen_length(b)
    num, den = np.zeros(n), np.zeros(n)
    for t, labels in entry.labels.items():
        if not 0 < t < 1 or len(labels) < 2:
            continue
        hit = np.asarray(labels) == entry.label
        masks = np.stack([backend.mask_of(b, t, k, seed) for k in range(len(labels))])   # [K, n]
        kept = ~masks
        n_k, n_m = kept.sum(0), masks.sum(0)
        ok = (n_k > 0) & (n_m > 0)
        m_k = np.divide(hit @ kept, n_k, out=np.zeros(n), where=n_k > 0)
        m_m = np.divide(hit @ masks, n_m, out=np.zeros(n), where=n_m > 0)
        w = np.where(ok, n_k * n_m / np.maximum(n_k + n_m, 1), 0.0)
        num += w * (m_k - m_m)
        den += w
    return [round(float(x / d), 4) if d > 0 else None for x, d in zip(num, den)]


def per_response(backend, merged, *, seed: int) -> list:
    curves = response_curves(backend, merged)
    rows = []
    for b in sorted(merged):
        times, curve = curves[b]
        prompt = backend.prompt_of(b)
        jump = jump_window(times, curve)
        rows.append({"base": int(b), "task": prompt.task, "prompt": prompt.text, "reference": prompt.reference,
                     "response": backend.text(b), "tokens": backend.tokens(b),
                     "label": backend.labels[merged[b].label], "times": times.tolist(),
                     "retention": [round(float(r), 6) for r in curve], "jump": None if jump is None else list(jump),
                     "influence": token_influence(backend, b, merged[b], seed)})
    return rows


def write_tokens_html(out, rows, title: str = "Which kept tokens decide each response's outcome") -> Path:
    """``tokens.html``: each response's tokens coloured by their influence (module docstring)."""
    blocks = []
    for row in rows:
        toks = []
        for j, (tok, r) in enumerate(zip(row["tokens"], row["influence"])):
            bg, fg = ("#ddd", "#111") if r is None else _colour(max(0.0, r))
            tip = "never both kept and masked" if r is None else f"influence {r:+.2f}"
            toks.append(f"<span class='t' style='background:{bg};color:{fg}' title='position {j}: {tip}'>"
                        f"{html.escape(tok)}</span>")
        blocks.append((response_head(row, "fractions masked"), row["prompt"], toks))
    return tokens_page(
        out, title, "Restarts re-mask each token independently. A token's colour is how much keeping it unmasked "
        "raises the retention of the response's own outcome: the retention of the restarts that kept it minus that "
        "of the restarts that masked it, compared at each fraction masked and averaged over the grid (0: no "
        "influence, 1: the outcome is kept exactly when this token is). Grey: never both kept and masked at one "
        "time.", "influence", blocks)


def report(backend, merged, settings, out) -> dict:
    """Per-response rows, jump rates and ``tokens.html`` (when ``out`` is a folder): extra keys of ``windows.json``."""
    rows = per_response(backend, merged, seed=settings.seed)
    if out is not None:
        write_tokens_html(out, rows)
    return {"responses": rows, "jumps": jump_rates(rows)}
