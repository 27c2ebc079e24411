"""experiments/track_windows_during_training.py: a tiny run end to end, and its pieces."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "track_windows_during_training.py"


@pytest.fixture(scope="module")
def track():
    spec = importlib.util.spec_from_file_location("track_windows_during_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(track, tmp_path_factory):
    out = tmp_path_factory.mktemp("track")
    rc = track.main(["--tiny", "--steps", "4", "--every", "2", "--samples", "2", "--restarts", "2",
                     "--timesteps", "0:1000:500", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "tracked.jsonl").read_text().splitlines()]
    return out, rows


def test_checkpoints_include_start_and_last_step(track):
    assert track.checkpoints(4, 2) == [0, 2, 4]
    assert track.checkpoints(5, 2) == [0, 2, 4, 5]
    assert track.checkpoints(3, 10) == [0, 3]


def test_bad_flag_exits_with_message(track, capsys):
    with pytest.raises(SystemExit):
        track.parse_args(["--every", "0"])
    assert "--every: 0 must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_run_writes_tracked_windows_per_checkpoint(tiny_run):
    out, rows = tiny_run
    assert rows and all(set(r) == set(SCRIPT_KEYS) for r in rows)
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and sorted(set(steps)) == [0, 2, 4]
    for s in (0, 2, 4):
        at = [r for r in rows if r["step"] == s]
        assert sorted((r["feature"], r["value"]) for r in at) == sorted(
            [("digit", str(d)) for d in range(10)] + [("group", g) for g in ("0-3-5-9", "1-2-7-8", "4-6")])
        assert sum(r["n_base"] for r in at if r["feature"] == "digit") == 2  # --samples 2
    for r in rows:  # theory: data-based, the same at every checkpoint, bracket ordered
        assert 0 <= r["t_after_timestep"] < r["t_before_timestep"] <= 999
        assert 0 < r["speciation_timestep"] < 999
        if r["start_timestep"] is not None and r["end_timestep"] is not None:
            assert r["start_timestep"] <= r["end_timestep"]
    first = {(r["feature"], r["value"]): r["t_after_timestep"] for r in rows if r["step"] == 0}
    assert all(first[(r["feature"], r["value"])] == r["t_after_timestep"] for r in rows)
    assert all(r["loss"] is None for r in rows if r["step"] == 0)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows if r["step"] > 0)
    theory = json.loads((out / "theory.json").read_text())
    assert len(theory["values"]) == 13 and theory["summary"]["available"]


@pytest.mark.slow
def test_tiny_run_writes_the_figure(tiny_run):
    out, _ = tiny_run
    png = out / "windows_during_training.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 300_000


def test_plot_tracked_handles_missing_edges(track, tmp_path):
    rows = [{"step": s, "feature": f, "value": v, "n_base": 1, "base_rate": 0.5,
             "start_timestep": None if s == 0 else 100.0, "end_timestep": None if s == 0 else 600.0,
             "t_after_timestep": 150.0, "t_before_timestep": 700.0, "speciation_timestep": 340.0,
             "loss": None if s == 0 else 0.1}
            for s in (0, 10) for f, v in (("digit", "3"), ("group", "4-6"))]
    path = track.plot_tracked(rows, tmp_path / "f.png")
    assert path.stat().st_size > 10_000


SCRIPT_KEYS = ("step", "feature", "value", "n_base", "base_rate", "start_timestep", "end_timestep",
               "t_after_timestep", "t_before_timestep", "speciation_timestep", "loss")
