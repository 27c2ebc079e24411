"""The architecture's promises: an engine that knows no diffusers, options defined once, results unchanged.

- the engine and the analysis import neither diffusers nor transformers;
- every backend satisfies the `Backend` protocol;
- the CLI's flags, `run_sweep`'s keywords and `measure_window`'s defaults come from one table;
- three small runs reproduce, bit for bit, the measured fields of the code before the redesign
  (``tests/data/reference_runs.json``, written by ``tests/data/pin_reference.py``).
"""
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_windows import options

REFERENCE = Path(__file__).with_name("data") / "reference_runs.json"


def test_engine_analysis_and_theory_import_no_diffusers_or_transformers():
    code = ("import sys, diffusion_windows.engine, diffusion_windows.engine.synthetic, diffusion_windows.analysis, "
            "diffusion_windows.theory, diffusion_windows.options\n"
            "bad = [m for m in ('diffusers', 'transformers', 'open_clip') if m in sys.modules]\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_backends_satisfy_the_protocol(tiny_ddpm_pipe):
    import numpy as np

    from diffusion_windows.classifiers import from_callable
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Backend
    from diffusion_windows.engine.synthetic import SyntheticBackend
    from diffusion_windows.features import labels_feature

    clf = from_callable(lambda im: np.full((len(im), 2), 0.5), ["a", "b"])
    for backend in (DiffusionBackend(tiny_ddpm_pipe, clf, (labels_feature(clf.labels),), 5),
                    SyntheticBackend(lambda label, t: 1.0, ["a", "b"], [labels_feature(["a", "b"])], range(0, 1000, 100))):
        assert isinstance(backend, Backend)
        assert list(backend.grid) == sorted(backend.grid)
        assert backend.cost(backend.grid[0]) <= backend.cost(backend.grid[-1])


def test_cli_flags_run_sweep_keywords_and_library_defaults_come_from_one_table():
    from diffusion_windows import measure_window

    from diffusion_windows.cli import build_parser

    parser = build_parser()
    dests = {a.dest for a in parser._actions} - {"help", "dry_run", "quiet"}
    assert dests == set(options.DEFAULTS) == {o.name for o in options.OPTIONS}
    assert "--no-theory" in parser._option_string_actions
    resolved = options.resolve({"out": "x"})
    assert set(options.DEFAULTS) <= set(resolved)
    params = inspect.signature(measure_window).parameters
    for name, default in options.LIBRARY_DEFAULTS.items():
        if name in params:
            assert params[name].default == default, name
    library_only = {"features", "mixture", "out", "pipe", "classifier"}
    assert set(params) - library_only <= set(options.DEFAULTS)


def test_library_checks_are_the_sweeps():
    from diffusion_windows import load_default_classifier, load_default_pipeline, measure_window
    from diffusion_windows.options import OptionError

    for bad, needle in ((dict(samples=0), "--samples: 0"), (dict(tolerance=float("nan")), "--tolerance: nan"),
                        (dict(protocol="sideways"), "'sideways'"), (dict(theory="yes"), "theory")):
        with pytest.raises(OptionError, match=needle):
            measure_window(load_default_pipeline(), load_default_classifier(), **bad)


def _measured(out):
    sys.path.insert(0, str(REFERENCE.parent))
    from pin_reference import measured

    return measured(json.loads((out / "windows.json").read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uniform", "auto", "gm"])
def test_measured_fields_equal_the_pre_redesign_code_bit_for_bit(name, tmp_path):
    from diffusion_windows import run_sweep

    ref = json.loads(REFERENCE.read_text())[name]
    out = run_sweep(out=str(tmp_path / name), quiet=True, theory=False, **ref["options"])
    got = _measured(out)
    assert got["rounds"] == ref["rounds"] and got["nfe"] == ref["nfe"]
    assert got["records"].keys() == ref["records"].keys()
    for key, fields in ref["records"].items():
        assert got["records"][key] == fields, key
