"""`load_run(folder)` reads a finished run's ``windows.json`` back into the `WindowRecord`s the run computed;
`records_frame(records)` makes them a pandas DataFrame, or says in one line to install pandas."""
import json
import sys
import types

import numpy as np
import pytest

from diffusion_windows import load_run, records_frame
from diffusion_windows.analysis.records import WindowRecord


def _synthetic_run(out, timesteps):
    from diffusion_windows.analysis.report import write_windows
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.engine.results import summarize_run
    from diffusion_windows.engine.synthetic import SyntheticBackend
    from diffusion_windows.features import labels_feature

    backend = SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 300 - 200 * label) / 40)), ("a", "b"),
                               (labels_feature(("a", "b")),), range(0, 1000, 50),
                               base_shift=lambda b: 40.0 * (b % 3 - 1))
    engine = Engine(backend, Settings(samples=12, restarts=4, timesteps=timesteps, edge_precision=100),
                    MemoryStore(), quiet=True).run()
    records, extra = summarize_run(backend, engine, tolerance=0.1, seed=3)
    out.mkdir()
    write_windows(out, records, extra)
    return records, extra


@pytest.mark.parametrize("timesteps", [list(range(0, 1000, 100)), "auto"])
def test_load_run_gives_back_the_records_of_the_run(tmp_path, timesteps):
    records, extra = _synthetic_run(tmp_path / "run", timesteps)
    back = load_run(tmp_path / "run")
    assert back == records and all(isinstance(r, WindowRecord) for r in back)
    assert any(r.start_ci for r in back)  # a record with an edge and its interval came back
    assert extra["theory"] == {"available": False, "reason": "no theory for synthetic (its backend cannot compute one)"}
    if timesteps == "auto":  # why each edge stopped: keys beyond the fields, kept in `extra`
        assert all(r.extra["start_stopped_by"] and "end_nfe" in r.extra for r in back)


@pytest.mark.slow
def test_load_run_gives_back_measure_windows_records_with_theory(tmp_path):
    from diffusion_windows import measure_window
    from diffusion_windows.diffusion.exact import gaussian_mixture_model

    gm = gaussian_mixture_model()
    records = measure_window(gm.pipe, gm.classifier, features=gm.features, mixture=gm.mixture, samples=6, restarts=2,
                             num_inference_steps=10, timesteps="0:1000:250", out=tmp_path / "gm")
    back = load_run(tmp_path / "gm")
    assert back == records
    assert any(r.t_after_timestep is not None and r.ideal_retention for r in back)  # the theory's fields too


def test_load_run_of_a_folder_without_windows_json_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no windows.json: not a finished run") as e:
        load_run(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "windows.json").write_text(json.dumps({"rounds": []}))
    with pytest.raises(ValueError, match=r"windows.json: not a windows.json of this toolkit"):
        load_run(tmp_path)


def _records():
    return [WindowRecord("digit", "3", n_base=4, timesteps=(0.0, 500.0), retention=(1.0, 0.2), start_timestep=0.0,
                         extra={"start_stopped_by": "grid"}),
            WindowRecord("digit", "5", parent="odd", parent_feature="group", n_base=2)]


def test_records_frame_without_pandas_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError) as e:
        records_frame(_records())
    assert str(e.value) == ("records_frame needs pandas, which is not installed: pip install pandas "
                            "(the toolkit's 'frames' extra)")


def test_records_frame_has_a_row_per_record_and_a_column_per_field(monkeypatch):
    """Against a stand-in for pandas.DataFrame(rows, columns=...) (pandas is optional: not installed here)."""
    made = {}
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda rows, columns: made.update(rows=rows, columns=columns) or made
    monkeypatch.setitem(sys.modules, "pandas", fake)
    records_frame(_records())
    cols = made["columns"]
    assert cols[:3] == ["feature", "value", "parent"] and cols[-1] == "start_stopped_by" and "extra" not in cols
    rows = [dict(zip(cols, row)) for row in made["rows"]]
    assert rows[0]["retention"] == (1.0, 0.2) and rows[0]["start_stopped_by"] == "grid"
    assert rows[1]["parent"] == "odd" and rows[1]["start_stopped_by"] is None


def test_records_frame_with_pandas():
    pd = pytest.importorskip("pandas")
    df = records_frame(_records())
    assert isinstance(df, pd.DataFrame) and df.shape[0] == 2
    assert list(df["value"]) == ["3", "5"] and df.loc[0, "start_stopped_by"] == "grid"
