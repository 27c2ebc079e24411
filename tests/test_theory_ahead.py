"""`sweep.TheoryAhead`: the theory of data known before the run, computed in a forked process while the
restarts run, gives the same windows.json as the theory computed at the end; a time it did not cover
falls back to the end; a failure in it is raised in the run, not lost."""
import json
import sys

import pytest
import torch

from diffusion_windows import sweep

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the theory runs ahead on Linux only")


@pytest.fixture
def one_thread():
    """TheoryAhead runs where the restarts leave a core idle: one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ARGS = ["--samples", "6", "--restarts", "2", "--timesteps", "0:1000:250", "--num-inference-steps", "8", "--quiet"]


def windows(out):
    d = json.loads((out / "windows.json").read_text())
    d["theory"].pop("seconds")
    return d["features"], d["theory"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["default", "gaussian-mixture"])
def test_theory_ahead_gives_the_theory_computed_at_the_end(tmp_path, monkeypatch, one_thread, model):
    used = []
    result = sweep.TheoryAhead.result
    monkeypatch.setattr(sweep.TheoryAhead, "result", lambda self, times: used.append(r := result(self, times)) or r)
    assert sweep.main(ARGS + ["--model", model, "--out", str(tmp_path / "ahead")]) == 0
    assert len(used) == 1 and used[0] is not None and used[0][0] is not None  # the forked process's answer
    monkeypatch.setattr(sweep.TheoryAhead, "start", classmethod(lambda cls, *a: None))
    assert sweep.main(ARGS + ["--model", model, "--out", str(tmp_path / "end")]) == 0
    ahead, end = windows(tmp_path / "ahead"), windows(tmp_path / "end")
    assert ahead == end and any(r.get("t_after_timestep") is not None for r in ahead[0])


def test_a_time_the_theory_ahead_did_not_cover_is_computed_at_the_end(one_thread):
    ahead = sweep.TheoryAhead(lambda: (None, "no data"), [0.0, 500.0], axis=None)
    assert ahead.result([0.0, 250.0]) is None
    ahead = sweep.TheoryAhead(lambda: (None, "no data"), [0.0, 500.0], axis=None)
    assert ahead.result([500.0]) == (None, "no data")


def test_a_failure_of_the_theory_ahead_is_raised_in_the_run(one_thread):
    def fails():
        raise ValueError("bad mixture 7")

    ahead = sweep.TheoryAhead(fails, [0.0], axis=None)
    with pytest.raises(RuntimeError, match="theory: ValueError: bad mixture 7"):
        ahead.result([0.0])


def test_the_theory_process_exits_when_the_run_is_gone(one_thread, tmp_path):
    """A run that fails before reading the theory closes its end of the pipe: the child's write fails, and
    it must exit there, never return into the run's own code (which would then run twice)."""
    import os
    import time

    marker = tmp_path / "after"

    def slow():
        time.sleep(0.5)
        return None, "no data"

    ahead = sweep.TheoryAhead(slow, [0.0], axis=None)
    os.close(ahead._read)  # the run is gone
    _, status = os.waitpid(ahead.pid, 0)
    marker.write_text(str(os.getpid()))  # only this process gets here
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert marker.read_text() == str(os.getpid())
