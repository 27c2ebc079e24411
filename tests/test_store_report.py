"""Result store (append, torn lines, merge across processes) and records from unit results."""
import json

import numpy as np
import pytest

from diffusion_windows.features import Feature
from diffusion_windows.analysis.counts import feature_counts, merge_units, nested_pairs
from diffusion_windows.analysis.records import WindowRecord, window_records
from diffusion_windows.engine import MemoryStore, ResultStore, UnitResult
from diffusion_windows.engine.store import UnitRecord


def _rec(base, label, ts, labels):
    return UnitResult(base, label, tuple(ts), tuple(tuple(row) for row in labels), 1)


def _units(results):
    return [UnitRecord.from_json(r.to_json(f"r0-b{r.base}", 0)) for r in results]


def test_append_and_torn_last_line_is_cut(tmp_path):
    s = ResultStore(tmp_path)
    s.append(0, _rec(0, 1, [0, 10], [[1, 1], [1, 0]]))
    s.append(0, _rec(1, 2, [0, 10], [[2, 2], [0, 0]]))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"unit": "r0-b2", "round": 0, "base": 2, "base_lab')  # killed mid-write
    s2 = ResultStore(tmp_path)  # reopening repairs the file
    assert s2.done_units() == {"r0-b0", "r0-b1"}
    assert (tmp_path / "results.jsonl").read_text().endswith("\n")
    s2.append(0, _rec(2, 0, [0, 10], [[0, 0], [0, 0]]))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["unit"] for x in lines] == ["r0-b0", "r0-b1", "r0-b2"]


def test_invalid_json_last_line_with_newline_is_cut(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"unit": "r0-b0", "round": 0, "base": 0, "base_label": 1, '
                                            '"timesteps": [0], "labels": [[1]], "nfe": 1}\n{"unit": garbage\n')
    s = ResultStore(tmp_path)
    assert s.done_units() == {"r0-b0"}


LINE = ('{"unit": "r0-b%d", "round": 0, "base": %d, "base_label": 1, "timesteps": [0], "labels": [[1]], '
        '"nfe": 1}\n')


def test_only_the_last_line_is_torn_a_damaged_line_before_it_stops_the_run(tmp_path):
    """A malformed line that is not the last is never a write in flight: reading stops with the file
    and the line, instead of dropping that unit (which a resume would then run again, silently)."""
    from diffusion_windows.engine import RunError

    path = tmp_path / "results.jsonl"
    path.write_text(LINE % (0, 0) + '{"unit": garbage\n' + LINE % (2, 2) + '{"unit": "r0-b3", "ro')
    s = ResultStore(tmp_path)  # cuts the torn tail only
    assert path.read_text().endswith(LINE % (2, 2))
    with pytest.raises(RunError, match=r"results\.jsonl, line 2: not JSON"):
        s.read_all()
    # valid JSON that is no unit record: damaged too, wherever it is
    path.write_text(LINE % (0, 0) + '{"unit": "r0-b1", "round": 0}\n')
    with pytest.raises(RunError, match=r"line 2: not a unit record \(KeyError"):
        ResultStore(tmp_path).read_all()


def test_another_process_s_line_in_flight_is_not_read(tmp_path):
    ResultStore(tmp_path, rank=0, world=2).append(0, _rec(0, 1, [0], [[1]]))
    (tmp_path / "results.1.jsonl").write_text(LINE % (1, 1) + (LINE % (2, 2))[:40])  # rank 1 still writing
    assert ResultStore(tmp_path, rank=0, world=2).done_units() == {"r0-b0", "r0-b1"}


def test_a_damaged_results_file_is_one_error_line_in_the_cli(tmp_path, capsys):
    from diffusion_windows.sweep import main

    args = ["--samples", "2", "--restarts", "1", "--timesteps", "0:1000:500", "--num-inference-steps", "4",
            "--no-theory", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + ["{not json\n"] + lines[1:]))
    (tmp_path / "windows.json").unlink()
    capsys.readouterr()
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "results.jsonl, line 2: not JSON" in err and "\n" not in err


def test_merge_of_process_shards(tmp_path):
    a = ResultStore(tmp_path, rank=0, world=2)
    b = ResultStore(tmp_path, rank=1, world=2)
    b.append(0, _rec(3, 1, [0], [[1]]))
    a.append(0, _rec(0, 1, [0], [[1]]))
    recs = ResultStore(tmp_path).merge()
    assert [r.unit for r in recs] == ["r0-b0", "r0-b3"]
    assert sorted(p.name for p in tmp_path.glob("results*.jsonl")) == ["results.jsonl"]


def test_memory_store_matches_interface():
    m = MemoryStore()
    m.append(1, _rec(0, 1, [5], [[1]]))
    m.append(0, _rec(0, 1, [0], [[1]]))
    assert [r.unit for r in m.merge()] == ["r0-b0", "r1-b0"]


DIGIT = Feature("digit", {str(d): (d,) for d in range(4)})
GROUP = Feature("group", {"low": (0, 1), "high": (2, 3)})


def test_feature_counts_and_nested_floor():
    # base 0 is digit 0 (group low), base 1 digit 1 (low), base 2 digit 2 (high)
    units = [
        _rec(0, 0, [0, 100], [[0, 0, 0, 0], [0, 1, 2, 3]]),
        _rec(1, 1, [0, 100], [[1, 1, 1, 0], [0, 0, 0, 0]]),
        _rec(2, 2, [0, 100], [[2, 2, 2, 2], [3, 3, 2, 2]]),
    ]
    merged = merge_units(_units(units))
    c = feature_counts(merged, DIGIT, 4)
    ts, kept, total, bases = c["0"]
    assert ts.tolist() == [0.0, 100.0] and bases == [0]
    assert kept.tolist() == [[4, 1]] and total.tolist() == [[4, 4]]
    g = feature_counts(merged, GROUP, 4)
    assert g["low"][1].tolist() == [[4, 2], [4, 4]]   # base 0 keeps 'low' at 100 for labels 0,1
    assert g["high"][1].tolist() == [[4, 4]]
    pairs = [(f.name, v, c.name, p) for f, v, c, p in nested_pairs([DIGIT, GROUP])]
    assert ("digit", "0", "group", "low") in pairs and ("digit", "3", "group", "high") in pairs
    recs = window_records(merged, [DIGIT, GROUP], 4, tolerance=0.1, n_boot=50)
    nested = [r for r in recs if r.key == ("digit", "0", "low")][0]
    top = [r for r in recs if r.key == ("digit", "0", None)][0]
    assert nested.floor == pytest.approx(0.5)        # 1 of the 2 'low' bases is a 0
    assert top.floor == pytest.approx(1 / 3)         # 1 of 3 bases
    assert nested.retention == top.retention == (1.0, 0.25)
    empty = [r for r in recs if r.key == ("digit", "3", None)][0]
    assert empty.n_base == 0 and empty.retention is None


def test_records_json_serialisable():
    rng = np.random.default_rng(0)
    units = [_rec(b, b % 4, [0, 50, 100], rng.integers(0, 4, size=(3, 5)).tolist()) for b in range(12)]
    recs = window_records(merge_units(_units(units)), [DIGIT, GROUP], 4, tolerance=0.1, n_boot=50)
    dicts = [r.to_dict() for r in recs]
    back = json.loads(json.dumps(dicts, allow_nan=False))  # raises on NaN or numpy scalars
    assert back == dicts and [WindowRecord.from_dict(d) for d in back] == recs
    assert len(recs) == 4 + 2 + 4  # digit values, group values, digit-in-group pairs
