"""`pip install -e .` alone is enough to run the toolkit: its code imports only what `install_requires` brings.

The README's main command installs the package without the test extras. A module the toolkit imports that
only the test extras (or a developer's machine) provide works in the test suite and fails on a fresh
install: that is how `--quiet` once broke the main command (it imported `transformers`, then only a
test extra). Installing a second copy of torch in a fresh virtual environment to catch this costs
several GB of disk per run; this test catches it in place instead.

A child process puts a finder in front of `sys.meta_path` that refuses, as an uninstalled package would
(`ModuleNotFoundError`), any import *made by the toolkit's own code* of a top-level module whose
distribution is outside the closure of `install_requires` (their own requirements, recursively, without
extras). Imports made by other libraries are not judged: they import optional packages when present
(accelerate imports boto3, httpcore imports trio) and their declared requirements are in the closure.
The child then imports every module of the package and runs a small default sweep and a small
default-text sweep with ``--quiet``, theory (of the bundled training digits: no scikit-learn) and plots
included.
"""
import configparser
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_closure() -> set[str]:
    """Normalized names of the distributions `pip install -e .` brings: install_requires and theirs."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    todo = [Requirement(line).name for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    seen = set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def foreign_modules(closure: set[str]) -> list[str]:
    """Top-level modules installed here whose every distribution lies outside ``closure`` (and the toolkit's)."""
    closure = closure | {"diffusion-windows"}
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if not any(_norm(d) in closure for d in dists) and module.isidentifier())


CHILD = r"""
import json, sys
package_dir, foreign, out = sys.argv[1], set(json.loads(sys.argv[2])), sys.argv[3]
refused = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in foreign:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(("<frozen importlib", "<frozen zipimport")):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(package_dir):
            refused.append((name, frame.f_code.co_filename, frame.f_lineno))
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by `pip install -e .`)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import importlib, pkgutil
import diffusion_windows
modules = [m.name for m in pkgutil.walk_packages(diffusion_windows.__path__, "diffusion_windows.")]
for name in modules:
    importlib.import_module(name)
from diffusion_windows.sweep import main
rc = [main(["--samples", "6", "--restarts", "1", "--timesteps", "0:1000:250", "--num-inference-steps", "8",
            "--out", out + "/image", "--quiet"]),
      main(["--model", "default-text", "--samples", "2", "--restarts", "1", "--timesteps", "0:1:0.5",
            "--out", out + "/text", "--quiet"])]
print(json.dumps({"rc": rc, "modules": len(modules), "refused": refused, "file": diffusion_windows.__file__}))
"""


def test_install_closure_holds_the_run_time_requirements_and_not_the_test_extras():
    closure = install_closure()
    assert {"torch", "diffusers", "open-clip-torch", "transformers", "safetensors", "matplotlib"} <= closure
    assert "pytest" not in closure and "scikit-learn" not in closure
    foreign = foreign_modules(closure)
    assert "pytest" in foreign and "sklearn" in foreign and "torch" not in foreign


@pytest.mark.slow
def test_the_toolkit_imports_and_runs_with_only_what_install_requires_brings(tmp_path):
    foreign = foreign_modules(install_closure())
    import diffusion_windows

    package_dir = str(Path(diffusion_windows.__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, package_dir, json.dumps(foreign), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rc"] == [0, 0]
    assert report["modules"] > 30 and report["file"].startswith(package_dir)
    assert report["refused"] == [], f"the toolkit imported modules that `pip install -e .` does not install: " \
                                    f"{report['refused']}"
    theory = json.loads((tmp_path / "image" / "windows.json").read_text())["theory"]
    assert theory["available"] and theory["components"] == 1347, theory  # the bundled training digits
    for kind, files in (("image", ("window.png", "windows.json")), ("text", ("window.png", "tokens.html"))):
        for name in files:
            assert (tmp_path / kind / name).stat().st_size > 0
