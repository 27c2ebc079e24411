"""Figures from a sweep's output folder: retention curves (window.png), image strips (strip.png).

Plot functions take results read from the folder (``windows.json``, ``strip.safetensors``
and ``strip.json``), never a model. Time on the x axis is the run's own unit
(``time_unit`` in ``windows.json``: the training ``timestep``, or ``1000 sigma`` for
flow-matching models), drawn decreasing from left to right so that generation (large time ->
0) reads left to right; the top axis shows the same points in ``ou_time`` (THEORY.md, "Setting").
Figures are plain ``matplotlib.figure.Figure`` objects (Agg), no pyplot state.
"""

from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..analysis.windows import window_edges

__all__ = ["load_results", "load_strip", "plot_windows", "plot_strip", "save_plots"]

_RECORD_KEYS = ("feature", "value", "base_rate", "timesteps", "retention", "ci_low", "ci_high")
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "xtick.labelsize": 8, "ytick.labelsize": 8}
_X_LABEL = "training timestep  (generation runs left \u2192 right)"
_UNIT_LABELS = {"timestep": "training timestep", "1000 sigma": "1000 \u03c3  (flow-matching noise level)",
                "fraction removed": "fraction of the response removed",
                "fraction masked": "fraction of the response masked",
                "fraction corrupted": "fraction of the response replaced by random tokens"}


def x_label(time_unit) -> str:
    """The bottom axis' label for a run's ``time_unit`` (``windows.json``; absent: training timesteps)."""
    unit = _UNIT_LABELS.get(time_unit or "timestep", str(time_unit))
    return f"{unit}  (generation runs left \u2192 right)"


def load_results(out_dir) -> dict:
    """Parsed ``windows.json`` of a sweep folder; ValueError naming what is missing or bad."""
    path = os.path.join(os.fspath(out_dir), "windows.json")
    if not os.path.isdir(os.fspath(out_dir)):
        raise ValueError(f"no such directory: {os.fspath(out_dir)}")
    if not os.path.isfile(path):
        raise ValueError(f"no windows.json in {os.fspath(out_dir)}")
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    records = results.get("features") if isinstance(results, dict) else None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} has no 'features' records")
    for i, r in enumerate(records):
        missing = [k for k in _RECORD_KEYS if k not in r]
        if missing:
            raise ValueError(f"{path}: features[{i}] lacks {', '.join(missing)}")
        curves = [r[k] for k in ("retention", "ci_low", "ci_high") if r[k] is not None]
        if any(len(c) != len(r["timesteps"]) for c in curves):
            raise ValueError(f"{path}: features[{i}] curves differ in length")
    return results


def load_strip(out_dir):
    """``(images [rows, cols, C, H, W], meta)`` from strip.safetensors/strip.json, or None."""
    from safetensors.numpy import load_file  # no torch needed

    d = os.fspath(out_dir)
    tensors, meta = os.path.join(d, "strip.safetensors"), os.path.join(d, "strip.json")
    if not (os.path.isfile(tensors) and os.path.isfile(meta)):
        return None
    images = load_file(tensors).get("images")
    if images is None or images.ndim != 5:
        raise ValueError(f"{tensors} needs a tensor 'images' [rows, cols, C, H, W]")
    with open(meta) as f:
        meta = json.load(f)
    if len(meta.get("timesteps", ())) != images.shape[1]:
        raise ValueError(f"strip.json timesteps ({len(meta.get('timesteps', ()))}) "
                         f"do not match images' {images.shape[1]} columns")
    return images, meta


def _arr(r, key):
    """A record's curve as floats; NaN for missing points or a missing curve (no base samples)."""
    if r.get(key) is None:
        return np.full(len(r["timesteps"]), np.nan)
    return np.array([np.nan if v is None else v for v in r[key]], dtype=np.float64)


def _panels(records, feature):
    """Ordered groups of records: per feature, nested (``parent``) records separately."""
    panels: dict[tuple, list] = {}
    for r in records:
        if feature is not None and r["feature"] != feature:
            continue
        nested = r.get("parent") is not None
        panels.setdefault((r["feature"], nested), []).append(r)
    if not panels:
        names = sorted({r["feature"] for r in records})
        raise ValueError(f"feature {feature!r} not in results; have {', '.join(names)}")
    return panels


def _mean_curve(records):
    """Base-rate-weighted mean retention (the probability the feature is kept) and band.

    Values have disjoint base samples, so their estimates are independent: the band
    combines each value's half-width as a normal standard error.
    """
    records = [r for r in records if r.get("retention") is not None]
    if not records:
        return None
    t = _arr(records[0], "timesteps")
    if any(len(r["timesteps"]) != t.size or not np.allclose(_arr(r, "timesteps"), t)
           for r in records):
        return None
    w = np.array([r["base_rate"] for r in records], dtype=np.float64)
    if w.sum() <= 0:
        return None
    w = w / w.sum()
    p = np.array([_arr(r, "retention") for r in records])
    se = np.array([(_arr(r, "ci_high") - _arr(r, "ci_low")) / (2 * 1.96) for r in records])
    mean = w @ p
    half = 1.96 * np.sqrt((w[:, None] ** 2 * se ** 2).sum(axis=0))
    floor = float(w @ np.array([r.get("floor", r["base_rate"]) for r in records]))
    return t, mean, mean - half, mean + half, floor


def _ou_axis(ax, schedule):
    """Top axis in ou_time (or alpha_bar), mapped through the schedule arrays."""
    if not schedule or "timestep" not in schedule:
        return
    ts = np.asarray(schedule["timestep"], dtype=np.float64)
    for key, label in (("ou_time", "OU time $t$"), ("alpha_bar", r"$\bar\alpha$")):
        vals = np.asarray(schedule.get(key, ()), dtype=np.float64)
        if vals.size == ts.size and vals.size > 1:
            break
    else:
        return
    order = np.argsort(vals)
    sec = ax.secondary_xaxis(
        "top",
        functions=(lambda x: np.interp(x, ts, vals),
                   lambda y: np.interp(y, vals[order], ts[order])),
    )
    sec.set_xlabel(label, labelpad=3)
    # ticks at round values, thinned where the map crowds them (ou_time grows fast near T)
    cands = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10])
    if key == "alpha_bar":
        cands = np.array([0.999, 0.99, 0.95, 0.9, 0.75, 0.5, 0.25, 0.1, 0.05, 0.01, 0.001])
    cands = cands[(cands >= vals.min()) & (cands <= vals.max())]
    at = np.interp(cands, vals[order], ts[order])
    keep, last = [], -np.inf
    for c, x in sorted(zip(cands, at), key=lambda z: z[1]):
        if x - last >= 0.08 * (ts.max() - ts.min()):
            keep.append(c)
            last = x
    sec.set_xticks(keep)
    sec.set_xticklabels([f"{c:g}" for c in keep])


def _draw_panel(ax, rows_ax, records, title, tolerance_default=0.1, xlabel=_X_LABEL):
    many = len(records) > 4
    colors = [f"C{i % 10}" for i in range(len(records))]
    lw = 1.0 if many else 1.8
    for r, c in zip(records, colors):
        if r.get("retention") is None:  # a value without base samples: nothing to draw
            continue
        t = _arr(r, "timesteps")
        ax.fill_between(t, _arr(r, "ci_low"), _arr(r, "ci_high"), color=c,
                        alpha=0.10 if many else 0.22, lw=0)
        ax.plot(t, _arr(r, "retention"), color=c, lw=lw, marker=None if many else "o", ms=3)
        if r.get("ideal_retention") is not None:
            ax.plot(t, _arr(r, "ideal_retention"), color=c, lw=1.0, ls="--", alpha=0.6 if many else 0.9)
        if not many:
            ax.axhline(r.get("floor", r["base_rate"]), color=c, lw=0.8, ls=":")
    handles = []
    mean = _mean_curve(records) if many else None
    if mean is not None:
        t, m, lo, hi, floor = mean
        ax.fill_between(t, lo, hi, color="k", alpha=0.18, lw=0)
        ax.plot(t, m, color="k", lw=2.6)
        ax.axhline(floor, color="0.35", lw=0.9, ls=":")
        tol = records[0].get("tolerance", tolerance_default)
        start, end = window_edges(t, m, floor, tol)
        if start is not None and end is not None:
            ax.axvspan(start, end, color="0.55", alpha=0.15, lw=0, zorder=0)
            handles.append(Patch(color="0.55", alpha=0.3, label="window of the mean"))
        handles.insert(0, Line2D([], [], color="k", lw=2.6, label="mean (weighted by base rate)"))
        handles.append(Line2D([], [], color="0.35", lw=0.9, ls=":", label="mean base rate"))
    elif not many:
        nested = any(r.get("parent") is not None for r in records)
        handles.append(Line2D([], [], color="0.35", lw=0.9, ls=":",
                              label="floor $w(S_{after})/w(S_{before})$" if nested else "base rate"))
    if any(r.get("ideal_retention") is not None for r in records):
        handles.append(Line2D([], [], color="0.3", lw=1.0, ls="--", label="ideal model (theory)"))
    spec = sorted({float(r["speciation_timestep"]) for r in records
                   if r.get("speciation_timestep") is not None})
    for s in spec:
        ax.axvline(s, color="0.25", lw=1.0, ls="-.")
        rows_ax.axvline(s, color="0.25", lw=1.0, ls="-.")
    if spec:
        handles.append(Line2D([], [], color="0.25", lw=1.0, ls="-.", label="speciation time"))

    # window rows: one per value; measured window as a bar, edge intervals as whiskers
    has_theory = False
    for i, (r, c) in enumerate(zip(records, colors)):
        y = len(records) - 1 - i
        s, e = r.get("start_timestep"), r.get("end_timestep")
        for ci in (r.get("start_ci"), r.get("end_ci")):
            if ci is not None:
                rows_ax.plot(ci, [y, y], color=c, lw=1.2, solid_capstyle="butt")
                rows_ax.plot(ci, [y, y], ls="none", marker="|", color=c, ms=7)
        if s is not None and e is not None:
            rows_ax.plot([s, e], [y, y], color=c, lw=6, alpha=0.8, solid_capstyle="butt")
        elif s is not None or e is not None:  # open-ended: only one edge measured
            rows_ax.plot([s if s is not None else e], [y], "o", color=c, ms=5)
        for key, mk in (("t_after_timestep", 5), ("t_before_timestep", 4)):
            if r.get(key) is not None:
                has_theory = True
                rows_ax.plot([r[key]], [y + 0.32], marker=mk, color="k", ms=5, ls="none")
    rows_ax.set_yticks(range(len(records)))
    rows_ax.set_yticklabels([str(r["value"]) for r in records][::-1])
    for lab, c in zip(rows_ax.get_yticklabels()[::-1], colors):
        lab.set_color(c)
        lab.set_fontweight("bold")
    rows_ax.set_ylim(-0.7, len(records) - 0.3)
    rows_ax.tick_params(axis="y", length=0)
    rows_ax.grid(axis="x", color="0.9", lw=0.6)
    rows_ax.set_axisbelow(True)
    rows_ax.set_xlabel(xlabel)
    rows_ax.set_ylabel("window", fontsize=8)
    rh = [Line2D([], [], color="0.4", lw=6, label="measured window")]
    rh.append(Line2D([], [], color="0.4", lw=1.2, marker="|", ms=7, label="edge 95% CI"))
    if has_theory:
        rh.append(Line2D([], [], color="k", marker=5, ls="none", ms=5, label=r"$T_{after}$"))
        rh.append(Line2D([], [], color="k", marker=4, ls="none", ms=5, label=r"$T_{before}$"))

    ax.set_ylim(-0.02, 1.04)
    ax.set_ylabel("retention $P(t)$")
    ax.set_title(title, loc="left", fontweight="bold")
    ax.grid(color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelbottom=False)
    return handles, rh


def plot_windows(results: dict, *, feature: str | None = None) -> Figure:
    """Retention vs time per feature (window.png; training timesteps, or the model's ``time_unit``).

    One column per feature (nested records, a value within its parent group, get their
    own column): curves with bootstrap bands, the base-rate-weighted mean in bold when
    there are many values, ideal-denoiser curves dashed, speciation time dash-dotted,
    and below each panel one row per value with the measured window, its edges' 95%
    intervals and the theory's ``T_after``/``T_before`` (triangles) when present.
    """
    records = results.get("features") or []
    if not records:
        raise ValueError("results have no 'features' records")
    panels = _panels(records, feature)
    n_rows = max(len(v) for v in panels.values())
    rows_h = 0.45 + 0.2 * max(n_rows, 4)
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(4.6 * len(panels) + 1.9, 3.1 + rows_h), layout="constrained")
        gs = fig.add_gridspec(2, len(panels), height_ratios=[3.1, rows_h])
        handles, row_handles = {}, {}  # one legend per figure, entries deduplicated by label
        for j, ((name, nested), recs) in enumerate(panels.items()):
            ax = fig.add_subplot(gs[0, j])
            rows_ax = fig.add_subplot(gs[1, j], sharex=ax)
            parents = sorted({str(r["parent"]) for r in recs}) if nested else []
            title = name
            if nested:
                of = recs[0].get("parent_feature") or "parent"
                title = f"{name} within {of} {parents[0]}" if len(parents) == 1 else f"{name} within {of}"
            if nested:  # disambiguate values that repeat across parents
                recs = [dict(r, value=f"{r['value']} | {r['parent']}") for r in recs]
            h, rh = _draw_panel(ax, rows_ax, recs, title, xlabel=x_label(results.get("time_unit")))
            handles.update((x.get_label(), x) for x in h)
            row_handles.update((x.get_label(), x) for x in rh)
            t_all = np.concatenate([_arr(r, "timesteps") for r in recs])
            sched = results.get("schedule") or {}
            t_max = float(np.max(sched["timestep"])) if sched.get("timestep") else t_all.max()
            t_max = max(t_max, float(np.nanmax(t_all)))  # flow matching's grid reaches 1000 sigma
            ax.set_xlim(t_max, 0.0)  # inverted: generation reads left to right
            _ou_axis(ax, sched)
        ax.legend(handles=list(handles.values()), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, handlelength=2.0)
        rows_ax.legend(handles=list(row_handles.values()), loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=2.0)
        sampler = results.get("sampler") or {}
        if sampler.get("name"):
            kind = "stochastic" if sampler.get("stochastic") else "deterministic"
            detail = (f"{sampler['num_inference_steps']} steps" if "num_inference_steps" in sampler
                      else f"temperature {sampler.get('temperature', '?')}, top-p {sampler.get('top_p', '?')}")
            fig.suptitle(f"sampler: {sampler['name']} ({kind}, {detail})", fontsize=8, x=0.99, ha="right",
                         color="0.3")
    return fig


def plot_strip(images, meta: dict) -> Figure:
    """Rows of base samples, columns of restart timesteps, one re-sample per cell (strip.png).

    ``images`` [rows, cols, C, H, W] in [0, 1]; ``meta`` as in strip.json. Columns are
    ordered by decreasing timestep so generation reads left to right, like window.png;
    the base sample itself (timestep 0) comes last. When a row has ``cell_labels``
    (the classified value of each re-sample), cells whose value differs from the base
    sample's are framed in red.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 5:
        raise ValueError(f"images must be [rows, cols, C, H, W], got shape {images.shape}")
    n_rows, n_cols, C, H, W = images.shape
    ts = np.asarray(meta.get("timesteps", range(n_cols)), dtype=np.float64)
    if ts.size != n_cols:
        raise ValueError(f"meta timesteps has {ts.size} entries for {n_cols} image columns")
    order = np.argsort(-ts, kind="stable")
    feature = meta.get("feature")
    rows = meta.get("rows") or [{} for _ in range(n_rows)]
    pad = max(1, H // 8)
    mosaic = np.ones((n_rows * (H + pad) - pad, n_cols * (W + pad) - pad, 3), np.float32)
    for i in range(n_rows):
        for jj, j in enumerate(order):
            img = np.clip(images[i, j], 0.0, 1.0)
            img = np.repeat(img, 3, axis=0) if C == 1 else img[:3]
            mosaic[i * (H + pad):i * (H + pad) + H, jj * (W + pad):jj * (W + pad) + W] = \
                img.transpose(1, 2, 0)
    import matplotlib

    cell = 0.62 if H <= 16 else 0.9
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(1.4 + cell * n_cols, 0.9 + cell * n_rows), layout="constrained")
        ax = fig.add_subplot()
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([jj * (W + pad) + (W - 1) / 2 for jj in range(n_cols)])
        ax.set_xticklabels(["base" if ts[j] == 0 else f"{ts[j]:g}" for j in order],
                           rotation=45 if n_cols > 10 else 0)
        ax.set_yticks([i * (H + pad) + (H - 1) / 2 for i in range(n_rows)])
        labels = []
        for r in rows:
            lab = (r.get("labels") or {}).get(feature) if feature else None
            labels.append(f"{feature} {lab}" if lab is not None else f"base {r.get('base', '')}")
        ax.set_yticklabels(labels)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        unit = "1000 \u03c3" if meta.get("time_unit") == "1000 sigma" else "timestep"
        ax.set_xlabel(f"restart {unit}  (generation runs left \u2192 right; "
                      "last column: the base sample)")
        ax.set_title(f"re-samples of each base sample{f' — {feature}' if feature else ''}",
                     loc="left", fontweight="bold")
        for i, r in enumerate(rows):
            cells = r.get("cell_labels")
            base = (r.get("labels") or {}).get(feature)
            if cells is None or base is None:
                continue
            for jj, j in enumerate(order):
                if cells[j] is not None and str(cells[j]) != str(base):
                    ax.add_patch(Rectangle((jj * (W + pad) - 0.5, i * (H + pad) - 0.5), W, H,
                                           fill=False, ec="#d62728", lw=1.5))
    return fig


def save_plots(out_dir, *, out=None, dpi: int = 150) -> list[str]:
    """Write window.png (and strip.png when the strip files exist) into ``out`` (default:
    ``out_dir``); returns the written paths."""
    results = load_results(out_dir)
    out = os.fspath(out if out is not None else out_dir)
    os.makedirs(out, exist_ok=True)
    paths = []
    fig = plot_windows(results)
    paths.append(os.path.join(out, "window.png"))
    fig.savefig(paths[-1], dpi=dpi)
    strip = load_strip(out_dir)
    if strip is not None:
        images, meta = strip
        fig = plot_strip(images, {**meta, "time_unit": meta.get("time_unit", results.get("time_unit"))})
        paths.append(os.path.join(out, "strip.png"))
        fig.savefig(paths[-1], dpi=dpi)
    return paths
