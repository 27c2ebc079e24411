"""The bundled default language model end to end (``--model default-text``): measured retention on the
story language's exact curve, coarse before fine, the bracket, per-response jumps and tokens.html."""
import json

import numpy as np
import pytest

from diffusion_windows.sweep import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "default-text"
    assert main(["--model", "default-text", "--quiet", "--out", str(out)]) == 0
    return out, json.loads((out / "windows.json").read_text())


@pytest.mark.slow
def test_story_retention_lies_on_the_exact_curve(run):
    _, d = run
    inside = total = 0
    for r in d["features"]:
        if r["feature"] not in ("genre", "world") or r["parent"] is not None or r["retention"] is None:
            continue
        lo, hi, ideal = (np.asarray(r[k], float) for k in ("ci_low", "ci_high", "ideal_retention"))
        keep = (np.abs(ideal - 1) > 0.02) & (np.abs(ideal - r["floor"]) > 0.02)  # where a band can miss
        inside += int(((ideal >= lo - 1e-9) & (ideal <= hi + 1e-9))[keep].sum())
        total += int(keep.sum())
    assert total >= 60 and inside / total >= 0.9, (inside, total)


@pytest.mark.slow
def test_world_is_decided_before_genre_and_the_bracket_holds(run):
    _, d = run
    top = {(r["feature"], r["value"]): r for r in d["features"] if r["parent"] is None and r["n_base"]}
    world_start = min(r["start_timestep"] for (f, _), r in top.items() if f == "world")
    genre_start = max(r["start_timestep"] for (f, _), r in top.items() if f == "genre")
    assert world_start > genre_start  # coarse first: the world is fixed with more of the story removed
    holds = [r["bracket_holds"] for (f, _), r in top.items() if f in ("genre", "world")]
    assert holds and all(holds), holds
    assert d["time_unit"] == "fraction removed" and d["theory"]["available"]


@pytest.mark.slow
def test_per_response_jumps_and_tokens_html(run):
    out, d = run
    assert {"correct", "incorrect", "all"} <= set(d["jumps"])
    n = d["jumps"]["correct"]["responses"] + d["jumps"]["incorrect"]["responses"]
    assert n == len([r for r in d["responses"] if r["task"] == "addition"]) == 30
    for r in d["responses"]:
        crit = r["critical_token"]
        assert crit is None or 1 <= crit["interval"][0] <= crit["position"] <= crit["interval"][1] <= len(r["tokens"])
    page = (out / "tokens.html").read_text()
    assert page.count("class='r'") == 60 and "outlined in red" in page
