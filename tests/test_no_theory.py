"""``--no-theory``: windows without the theory's keys, and the run says so."""
import json

import pytest

from diffusion_windows.analysis.records import THEORY_FIELDS
from diffusion_windows.sweep import main


@pytest.mark.slow
def test_no_theory_writes_windows_without_theory_keys_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--samples", "4", "--restarts", "1", "--timesteps", "0,500", "--num-inference-steps", "4",
                 "--no-theory", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "theory: skipped (--no-theory)" in printed
    d = json.loads((out / "windows.json").read_text())
    assert d["theory"] == {"available": False, "reason": "theory=False"}
    for r in d["features"]:
        assert not set(THEORY_FIELDS) & set(r), set(THEORY_FIELDS) & set(r)
        assert "retention" in r and "start_timestep" in r
    assert (out / "window.png").stat().st_size > 0 and (out / "windows.csv").read_text().count("\n") > 1


@pytest.mark.slow
def test_quiet_means_quiet(tmp_path):
    """--quiet: no loading bars, progress bars, fp16 cast warnings or summary, on stdout or stderr."""
    import subprocess
    import sys

    for model in ("default", "gaussian-mixture"):
        r = subprocess.run([sys.executable, "-m", "diffusion_windows.sweep", "--model", model, "--samples", "3",
                            "--restarts", "1", "--timesteps", "0,500", "--num-inference-steps", "4", "--dtype",
                            "float16", "--quiet", "--out", str(tmp_path / model)], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout == "" and r.stderr == "", (model, r.stdout[-500:], r.stderr[-500:])
        assert (tmp_path / model / "windows.json").exists()
