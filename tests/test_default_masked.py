"""``--model default-masked`` end to end (small): the usual files and ``tokens.html``, the time unit, the exact
theory beside the measurement, the sampler flagged as the reverse process; a run cut short and resumed gives the
same files as one run through."""
import json

import pytest

from diffusion_windows.sweep import main

SMALL = ["--model", "default-masked", "--samples", "4", "--restarts", "3", "--timesteps", "0,0.5,0.9",
         "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dm") / "run"
    assert main(SMALL + ["--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_default_masked_writes_the_usual_files_with_theory(run):
    for name in ("options.json", "results.jsonl", "windows.json", "windows.csv", "window.png", "tokens.html"):
        assert (run / name).is_file(), name
    w = json.loads((run / "windows.json").read_text())
    assert w["time_unit"] == "fraction masked" and w["sampler"]["reverse_process"] is True
    genre = [r for r in w["features"] if r["feature"] == "genre" and r["parent"] is None]
    assert genre and all(r["ideal_retention"] and r["t_after_ou"] is not None for r in genre)
    for r in genre:   # the exact curve: the ending is kept with probability 1 - t
        assert all(i >= 1 - t - 1e-9 for i, t in zip(r["ideal_retention"], r["timesteps"]))
    assert {r["task"] for r in w["responses"]} == {"story", "addition"}
    assert all(len(r["influence"]) == len(r["tokens"]) for r in w["responses"])
    assert "keeping it unmasked" in (run / "tokens.html").read_text()


@pytest.mark.slow
def test_a_resumed_run_gives_the_same_windows(run, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:2]))       # killed after two units
    (cut / "windows.json").unlink()
    assert main(SMALL + ["--out", str(cut)]) == 0
    a, b = (json.loads((p / "windows.json").read_text()) for p in (run, cut))
    assert [r["retention"] for r in a["features"]] == [r["retention"] for r in b["features"]]
    assert a["nfe"] == b["nfe"]
