"""One run per folder: a second sweep into a folder in use exits 2 with one line; a killed run's lock
does not block its resume; a fingerprint unknown when a run began is learnt, not a clash."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_tiny_ddpm_pipe
from diffusion_windows import runfolder
from diffusion_windows.engine import fingerprint as fp
from diffusion_windows.options import OptionError, resolve
from diffusion_windows.sweep import main

TINY = ["--samples", "2", "--restarts", "1", "--timesteps", "0,500", "--num-inference-steps", "5", "--quiet"]
HOLDER = ("import sys, time\n"
          "from diffusion_windows.runfolder import hold\n"
          "lock = hold(sys.argv[1])\n"
          "print('held', flush=True)\n"
          "time.sleep(600)\n")


ROOT = Path(__file__).resolve().parents[1]   # this checkout's package, in every child process


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _holder(out):
    """Another process that holds ``out`` as a running sweep does (the sweep's own `runfolder.hold`)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_sweep_into_a_folder_in_use_exits_2_and_a_killed_runs_lock_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        assert main([*TINY, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out") and "in use by another sweep" in err[0], err
        assert list(out.iterdir()) == []  # nothing read or written into the folder in use
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a run killed mid-way: its lock dies with it
        holder.wait()
    with runfolder.hold(out):  # what the resumed sweep takes first: free again
        pass


FORKING_HOLDER = ("import os, sys, time\n"
                  "from diffusion_windows.runfolder import hold\n"
                  "from diffusion_windows.sweep import TheoryAhead\n"
                  "lock = hold(sys.argv[1])\n"
                  "plain = os.fork()\n"
                  "if plain == 0:\n"
                  "    time.sleep(600); os._exit(0)\n"
                  "theory = TheoryAhead(lambda: time.sleep(600), [0], None)\n"
                  "print(plain, theory.pid, flush=True)\n"
                  "time.sleep(600)\n")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"   # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and PR_SET_PDEATHSIG are Linux's")
def test_processes_forked_by_a_killed_run_do_not_keep_its_lock_and_its_theory_child_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    plain, theory = (int(x) for x in holder.stdout.readline().split())
    try:
        with pytest.raises(OptionError, match="in use by another sweep"):
            runfolder.hold(out)                  # the run holds it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert _alive(plain)                      # a child outlives the run ...
        with runfolder.hold(out):                 # ... without holding its lock: the resume goes ahead
            pass
        deadline = time.time() + 10
        while _alive(theory) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(theory)                 # the theory computed beside the run ends with it
    finally:
        for pid in (plain, theory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_lock_is_the_folders_not_the_processs(tmp_path):
    lock = runfolder.hold(tmp_path / "a")
    with pytest.raises(OptionError, match="in use by another sweep"):
        runfolder.hold(tmp_path / "a")   # a second open file description: refused even in one process
    runfolder.hold(tmp_path / "b").release()  # other folders are free
    lock.release()
    runfolder.hold(tmp_path / "a").release()


def test_a_fingerprint_unknown_when_the_run_began_is_learnt_not_a_clash(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    make_tiny_ddpm_pipe().save_pretrained(snap)
    monkeypatch.setattr(fp, "hub_snapshot", lambda repo: ("0123abcd", snap) if repo == "org/name" else None)
    out = tmp_path / "run"
    out.mkdir()
    opts = dict(model="org/name", labels="a,b", clip_model="ViT-B-32", out=str(out))
    now = resolve(opts)
    # recorded by an earlier version before the model's first download: fingerprints unknown
    (out / "options.json").write_text(json.dumps({**now, "fingerprints": {**now["fingerprints"], "model": None,
                                                                          "model_revision": None}}))
    runfolder.check_resume(out, now)   # not a clash
    runfolder.write_options(out, now)
    assert json.loads((out / "options.json").read_text())["fingerprints"] == now["fingerprints"]
    # once known, a change is a clash again
    (out / "options.json").write_text(json.dumps({**now, "fingerprints": {**now["fingerprints"], "model": "0" * 64}}))
    with pytest.raises(OptionError, match="--model: the content"):
        runfolder.check_resume(out, now)


def test_write_options_keeps_the_recorded_file_on_a_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    first = resolve({"out": str(out), "batch_size": 64})
    runfolder.write_options(out, first)
    runfolder.write_options(out, resolve({"out": str(out), "batch_size": 7}))
    assert json.loads((out / "options.json").read_text())["batch_size"] == 64


@pytest.mark.slow
def test_every_process_of_a_refused_multi_process_run_exits_and_a_free_folder_is_held_once(tmp_path):
    """Under torchrun the main process asks for the lock and tells the others: a folder in use
    ends all of them (none waits for a main process gone); a free one is held by the main only."""
    script = tmp_path / "two.py"
    script.write_text(
        "import sys\n"
        "from diffusion_windows import runfolder\n"
        "from diffusion_windows.engine import processes\n"
        "from diffusion_windows.options import OptionError\n"
        "dist = processes.state()\n"
        "try:\n"
        "    lock = runfolder.hold(sys.argv[1], dist)\n"
        "except OptionError as e:\n"
        "    print(f'rank {dist.rank} refused: {e}', flush=True)\n"
        "    sys.exit(2)\n"
        "print(f'rank {dist.rank} lock {lock is not None}', flush=True)\n"
        "dist.wait()\n")
    env = _env()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run([*torchrun, str(tmp_path / "free")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rank 0 lock True" in r.stdout and "rank 1 lock False" in r.stdout
    holder = _holder(tmp_path / "busy")
    try:
        r = subprocess.run([*torchrun, str(tmp_path / "busy")], capture_output=True, text=True, timeout=300, env=env)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert r.returncode != 0
    assert "rank 0 refused" in r.stdout and "rank 1 refused" in r.stdout, r.stdout + r.stderr[-2000:]


def test_a_folder_recorded_before_the_steps_were_resolved_resumes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    now = resolve({"out": str(out)})
    assert now["num_inference_steps"] == 20  # the built-in models' steps, resolved into options.json
    (out / "options.json").write_text(json.dumps({**now, "num_inference_steps": None}))
    runfolder.check_resume(out, now)  # the same run: earlier versions chose 20 when loading
    with pytest.raises(OptionError, match="--num-inference-steps null"):
        runfolder.check_resume(out, resolve({"out": str(out), "num_inference_steps": 50}))
