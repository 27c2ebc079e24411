"""Tests for diffusion_windows.plotting and the plot CLI on a synthetic sweep folder."""

import json
import subprocess
import sys

import numpy as np
import pytest

from diffusion_windows.plotting import load_results, load_strip, plot_strip, plot_windows, save_plots
from diffusion_windows.analysis.windows import estimate_window

GROUPS = {"0-3-5-9": (0, 3, 5, 9), "1-2-7-8": (1, 2, 7, 8), "4-6": (4, 6)}
T = 1000


def _logistic(t, centre, scale, floor):
    return floor + (1 - floor) / (1 + np.exp((t - centre) / scale))


def _record(rng, feature, value, grid, centre, base_rate, *, floor=None, parent=None,
            theory=True, n_base=24, k=8):
    """One windows.json record: counts drawn from a logistic curve with per-base offsets."""
    floor = base_rate if floor is None else floor
    p = _logistic(grid, centre, 70.0, floor)
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    p_base = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.6, size=(n_base, 1)))))
    total = np.full(p_base.shape, k)
    kept = rng.binomial(total, p_base)
    est = estimate_window(grid, kept, total, base_rate, floor=floor, n_boot=200, seed=0)
    r = dict(feature=feature, value=value, parent=parent,
             parent_feature="group" if parent is not None else None, **est.to_dict())
    if theory:
        r["ideal_retention"] = _logistic(grid, centre - 15, 60.0, floor).tolist()
        r["t_after_timestep"] = float(centre - 150)
        r["t_before_timestep"] = float(centre + 170)
        r["speciation_timestep"] = 420.0
        r["bracket_holds"] = True
    return r


def make_results_folder(path, *, theory=True, nested=True, strip=True, seed=0):
    """A realistic synthetic sweep output: 10 digits, 3 groups decided earlier, a strip."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    grid = np.arange(25.0, 1000.0, 50.0)
    betas = np.linspace(1e-4, 0.02, T)
    alpha_bar = np.cumprod(1 - betas)
    rates = rng.dirichlet(np.full(10, 30.0))
    records = []
    for d in range(10):
        records.append(_record(rng, "digit", str(d), grid, 330 + 22 * d, rates[d], theory=theory))
    for g, digits in GROUPS.items():
        w = float(rates[list(digits)].sum())
        records.append(_record(rng, "group", g, grid, 560 + 40 * len(digits), w, theory=theory))
    if nested:
        for g, digits in list(GROUPS.items())[2:]:
            w = rates[list(digits)].sum()
            for d in digits:
                records.append(_record(rng, "digit", str(d), grid, 330 + 22 * d, rates[d],
                                       floor=rates[d] / w, parent=g, theory=theory))
    results = {
        "features": records,
        "schedule": {"timestep": list(range(T)), "alpha_bar": alpha_bar.tolist(),
                     "ou_time": (-0.5 * np.log(alpha_bar)).tolist()},
        "sampler": {"name": "ddpm", "stochastic": True, "num_inference_steps": 1000},
        "options": {"seed": seed},
    }
    (path / "windows.json").write_text(json.dumps(results))
    if strip:
        _write_strip(path, rng)
    return results


def _digit_images():
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        return d.images / 16.0, d.target
    except ImportError:  # blobs stand in for digits
        rng = np.random.default_rng(0)
        return rng.random((100, 8, 8)), np.arange(100) % 10


def _write_strip(path, rng):
    from safetensors.numpy import save_file

    imgs, labels = _digit_images()
    cols = [0] + list(range(100, 1000, 100))
    bases = [int(np.flatnonzero(labels == d)[0]) for d in (3, 7, 0, 4, 6, 9)]
    out = np.zeros((len(bases), len(cols), 1, 8, 8), np.float32)
    rows = []
    for i, b in enumerate(bases):
        cell_labels = []
        for j, t in enumerate(cols):
            keep = rng.random() < _logistic(t, 420.0, 80.0, 0.1)
            pool = np.flatnonzero(labels == labels[b]) if keep else np.arange(len(labels))
            pick = b if t == 0 else int(rng.choice(pool))
            out[i, j, 0] = imgs[pick]
            cell_labels.append(str(labels[pick]))
        group = next(g for g, ds in GROUPS.items() if labels[b] in ds)
        rows.append({"base": b, "labels": {"digit": str(labels[b]), "group": group},
                     "cell_labels": cell_labels})
    save_file({"images": out}, str(path / "strip.safetensors"))
    (path / "strip.json").write_text(json.dumps({"timesteps": cols, "rows": rows,
                                                 "feature": "digit"}))


def _png_ok(p, min_w=600, min_h=300):
    from matplotlib.image import imread
    img = imread(str(p))
    assert img.shape[1] >= min_w and img.shape[0] >= min_h
    assert np.ptp(img[..., :3]) > 0.5  # not a single colour
    return img


def test_save_plots_writes_both_pngs(tmp_path):
    make_results_folder(tmp_path / "run")
    paths = save_plots(tmp_path / "run", out=tmp_path / "png")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["window.png", "strip.png"]
    _png_ok(paths[0], 1200, 600)
    _png_ok(paths[1], 600, 400)


def test_plots_without_theory_or_strip(tmp_path):
    make_results_folder(tmp_path, theory=False, nested=False, strip=False)
    paths = save_plots(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["window.png"]
    _png_ok(paths[0])
    assert load_strip(tmp_path) is None


def test_plot_windows_panels_and_feature_filter(tmp_path):
    results = make_results_folder(tmp_path, strip=False)
    fig = plot_windows(results)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["digit", "group", "digit within group 4-6"]
    fig = plot_windows(results, feature="group")
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == ["group"]
    main = fig.axes[0]
    assert main.get_xlim()[0] > main.get_xlim()[1]  # inverted: generation left to right
    with pytest.raises(ValueError, match="'colour'"):
        plot_windows(results, feature="colour")


def test_value_without_base_samples_is_listed_not_drawn(tmp_path):
    """The sweep writes curves as null for a value that no base sample has."""
    results = make_results_folder(tmp_path, theory=False, nested=False, strip=False)
    empty = {k: None for k in results["features"][0]}
    empty.update(feature="digit", value="x", parent=None, base_rate=0.0, floor=0.0, n_base=0,
                 timesteps=results["features"][0]["timesteps"])
    results["features"].append(empty)
    (tmp_path / "windows.json").write_text(json.dumps(results))
    fig = plot_windows(load_results(tmp_path))
    rows_ax = fig.axes[1]
    assert [t.get_text() for t in rows_ax.get_yticklabels()][0] == "x"
    _png_ok(save_plots(tmp_path)[0])


def test_plot_strip_orders_columns_by_decreasing_timestep(tmp_path):
    make_results_folder(tmp_path)
    images, meta = load_strip(tmp_path)
    fig = plot_strip(images, meta)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "900" and labels[-1] == "base"
    with pytest.raises(ValueError, match="columns"):
        plot_strip(images[:, :3], meta)


def test_load_results_rejects_bad_records(tmp_path):
    (tmp_path / "windows.json").write_text(json.dumps({"features": [{"feature": "digit"}]}))
    with pytest.raises(ValueError, match="lacks value"):
        load_results(tmp_path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "diffusion_windows.plot", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_pngs(tmp_path):
    make_results_folder(tmp_path / "run", theory=False, nested=False)
    r = _cli(tmp_path / "run", "--out", tmp_path / "figs")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "figs" / "window.png").stat().st_size > 10_000
    assert (tmp_path / "figs" / "strip.png").stat().st_size > 5_000


@pytest.mark.parametrize("case", ["missing_dir", "no_windows_json", "bad_json"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, case):
    target = tmp_path / "nope"
    if case != "missing_dir":
        target.mkdir()
    if case == "bad_json":
        (target / "windows.json").write_text("{not json")
    r = _cli(target)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert "Traceback" not in r.stderr
