"""One conformance check, run on every backend: the `Backend` protocol is what the engine, the sweep and the
reports call, and each optional capability is either present and working or absent and refused by its
caller with one line.

Backends: the diffusion backend on the bundled default pipeline, the text backend on the bundled default
language model (``default-text``), the synthetic backend, and the replay of a recorded run
(``benchmarks/replay_auto.py``); each tiny (two base samples, two or three restarts).
"""
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from diffusion_windows.engine.backend import (CAPABILITIES, Backend, HasTheory, MissingCapability, ProbesMemory,
                                              Reports, UnitResult, capable, require)

ROOT = Path(__file__).resolve().parent.parent
TYPES = {"str": str, "tuple": tuple, "bool": bool}


def _synthetic():
    from diffusion_windows.engine.synthetic import SyntheticBackend
    from diffusion_windows.features import labels_feature

    return SyntheticBackend(lambda label, t: 1 / (1 + np.exp((t - 400) / 80)), ("a", "b"),
                            (labels_feature(("a", "b")),), range(0, 1000, 100))


def _video():
    """The diffusion backend on a tiny Wan pipeline (clips [N, 16, 2, 2, 2] latents), read by the motion classifier."""
    from tiny_video import video_embeds, wan_pipe

    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.diffusion.models import clip_classifier

    clf, features = clip_classifier({"motion": "directions", "labels": None}, "cpu")
    pe, ne = video_embeds(1)
    return DiffusionBackend(wan_pipe(), clf, features, 4, conditioning=dict(prompt_embeds=pe, negative_prompt_embeds=ne,
                                                                           guidance_scale=2.0),
                            height=16, width=16, num_frames=5, name="tiny-wan")


@pytest.fixture(scope="module")
def backends():
    """name -> a fresh tiny backend of each kind (the text one loads the bundled model once)."""
    from diffusion_windows import load_default_classifier, load_default_pipeline
    from diffusion_windows.analysis.counts import merge_units
    from diffusion_windows.backends import load_backend
    from diffusion_windows.diffusion.backend import DiffusionBackend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.features import DEFAULT_FEATURES
    from diffusion_windows.options import resolve

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from replay_auto import ReplayBackend

    live = _synthetic()
    recording = Engine(live, Settings(samples=2, restarts=3, timesteps=list(live.grid)), MemoryStore(), quiet=True)
    recording.run()
    text = load_backend(resolve(dict(model="default-text", samples=2, seed=0, out="unused")))
    return {
        "diffusion": DiffusionBackend(load_default_pipeline(), load_default_classifier(), DEFAULT_FEATURES, 10,
                                      mixture="default"),
        "text": text,
        "masked": load_backend(resolve(dict(model="default-masked", samples=2, seed=0, out="unused"))),
        "synthetic": _synthetic(),
        "video": _video(),
        "replay": ReplayBackend(live, merge_units(recording.store.read_all())),
    }


def _members(protocol) -> tuple:
    """(data members with their annotation, method names) a Protocol declares."""
    data = dict(vars(protocol).get("__annotations__", {}))
    methods = [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]
    return data, methods


def _check_signature(protocol, backend, name):
    """The backend's method takes every parameter the protocol's does, by the same name and kind (a default
    where the protocol has one); anything more it takes has a default."""
    want = [p for p in inspect.signature(getattr(protocol, name)).parameters.values() if p.name != "self"]
    have = inspect.signature(getattr(backend, name)).parameters
    for p in want:
        assert p.name in have, f"{type(backend).__name__}.{name} lacks {p.name}"
        assert have[p.name].kind == p.kind, f"{type(backend).__name__}.{name}: {p.name} is {have[p.name].kind}"
        if p.default is not inspect.Parameter.empty:
            assert have[p.name].default is not inspect.Parameter.empty, f"{name}: {p.name} needs a default"
    extra = [q for n, q in have.items() if n not in {p.name for p in want}
             and q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL)]
    assert all(q.default is not inspect.Parameter.empty for q in extra), (name, extra)


def _conforms(protocol, backend):
    data, methods = _members(protocol)
    for name, annotation in data.items():
        assert isinstance(getattr(backend, name), TYPES[annotation]), (type(backend).__name__, name)
    for name in methods:
        assert callable(getattr(backend, name)), name
        _check_signature(protocol, backend, name)


KINDS = ["diffusion", "text", "masked", "synthetic", "replay", "video"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_backend_conforms_to_the_protocol(backends, kind):
    from diffusion_windows.features import Feature

    b = backends[kind]
    assert isinstance(b, Backend)
    _conforms(Backend, b)
    assert b.name and b.time_unit in ("timestep", "1000 sigma", "fraction removed", "fraction masked")
    assert all(isinstance(v, str) for v in b.labels) and len(set(b.labels)) == len(b.labels) >= 2
    assert b.features and all(isinstance(f, Feature) for f in b.features)
    grid = [float(t) for t in b.grid]
    assert grid == sorted(set(grid)) and len(grid) >= 2  # ascending, distinct
    # snap: grid times restart from themselves; any request gives sorted, distinct times, stable under snap
    assert b.snap(grid) == grid
    asked = b.snap([grid[-1], grid[0], grid[len(grid) // 2], grid[0]])
    assert asked == sorted(set(asked)) and set(asked) <= set(grid) and len(asked) == 3
    off = b.snap([(grid[1] + grid[2]) / 2, grid[1]])
    assert off == sorted(set(off)) and b.snap(off) == off
    costs = [b.cost(t) for t in grid]
    assert all(isinstance(c, (int, np.integer)) and c > 0 for c in costs), costs
    assert costs == sorted(costs)  # more of the sample forgotten costs no less
    sampler = b.describe()
    assert isinstance(sampler["name"], str) and isinstance(sampler["stochastic"], bool)
    assert isinstance(b.schedule_arrays(), dict)


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_and_run_give_unit_results_whose_slots_are_the_whole_plans_restarts(backends, kind):
    b = backends[kind]
    lo, hi = b.grid[0], b.grid[len(b.grid) // 2]
    b.prepare([0, 1], total=2, seed=0, batch_size=2)
    res = b.run({0: [lo, hi], 1: [(hi, 1, 3)]}, restarts=2, seed=0, batch_size=4)
    assert [type(r) for r in res] == [UnitResult, UnitResult] and [r.base for r in res] == [0, 1]
    assert res[0].times == (lo, hi) and res[1].times == (hi,)
    assert [len(row) for row in res[0].labels] == [2, 2] and [len(row) for row in res[1].labels] == [2]
    assert not any(res[0].first) and res[1].first == (1,)
    for r in res:
        assert 0 <= r.base_label < len(b.labels)
        assert all(0 <= int(x) < len(b.labels) for row in r.labels for x in row)
        assert isinstance(r.nfe, int) and r.nfe > 0
    whole = b.run({1: [hi]}, restarts=3, seed=0, batch_size=4)[0]  # restarts 1..2 are the whole plan's
    assert whole.labels[0][1:3] == res[1].labels[0] and whole.base_label == res[1].base_label
    only = b.run({0: []}, restarts=2, seed=0, batch_size=4)[0]  # an empty plan only labels the base sample
    assert only.times == () and only.labels == () and only.base_label == res[0].base_label


@pytest.mark.parametrize("kind", KINDS)
def test_each_capability_is_present_and_works_or_absent_and_refused_in_one_line(backends, kind, tmp_path, monkeypatch):
    from diffusion_windows.analysis.counts import merge_units
    from diffusion_windows.engine import MemoryStore, Settings
    from diffusion_windows.engine.memory import DEFAULT_BATCH
    from diffusion_windows.engine.processes import Dist
    from diffusion_windows.engine.results import theory_of
    from diffusion_windows.options import OptionError
    from diffusion_windows.sweep import _auto_batch_size

    b = backends[kind]
    expected = {"diffusion": {ProbesMemory, HasTheory}, "video": {ProbesMemory, HasTheory},
                "text": {ProbesMemory, HasTheory, Reports}, "masked": {ProbesMemory, HasTheory, Reports},
                "synthetic": set(), "replay": set()}[kind]
    assert {c for c in CAPABILITIES if capable(b, c)} == expected
    for c in expected:
        _conforms(c, b)

    (tmp_path / "options.json").write_text(json.dumps({"batch_size": "auto"}))
    o = {"batch_size": "auto", "device": "cpu"}
    if ProbesMemory in expected:
        b.probe(2)
        assert _auto_batch_size(tmp_path, o, b, Dist()) == DEFAULT_BATCH  # on the CPU: the default, kept
        assert json.loads((tmp_path / "options.json").read_text())["batch_size_auto"] is True
    else:
        with pytest.raises(OptionError) as e:
            _auto_batch_size(tmp_path, o, b, Dist())
        assert str(e.value) == (f"--batch-size: 'auto' needs a model that can probe memory; {b.name} cannot: "
                                "pass an integer")

    lo, hi = b.grid[0], b.grid[len(b.grid) // 2]
    store = MemoryStore()
    for r in b.run({0: [lo, hi], 1: [lo, hi]}, restarts=2, seed=0, batch_size=4):
        store.append(0, r)
    merged = merge_units(store.read_all())
    predictions, reason = theory_of(b, store, merged, delta=0.1, times=[lo, hi])
    if HasTheory in expected:
        assert isinstance(b.theory_ahead, bool) and hasattr(b.axis(), "to_theory")
        assert predictions is not None and reason is None and tuple(predictions.times) == (lo, hi)
    else:
        assert predictions is None and reason == f"no theory for {b.name} (its backend cannot compute one)"

    if Reports in expected:
        from diffusion_windows.text import report as text_report  # the only backend that reports, for now

        monkeypatch.setitem(text_report.report.__kwdefaults__, "localize_budget", 2)  # bisection steps: cheap
        extra = b.report({1: merged[1]}, Settings(samples=2, restarts=2, timesteps=[lo, hi], batch_size=8), None)
        assert [row["base"] for row in extra["responses"]] == [1] and extra["jumps"]["all"]["responses"] == 1
        assert extra["responses"][0]["response"] == b.text(1)
        assert kind != "text" or extra["responses"][0]["critical_token"]["calls"] <= 2
        assert require(b, Reports, "the report") is b
    else:
        with pytest.raises(MissingCapability) as e:
            require(b, Reports, "the report")
        assert str(e.value) == f"the report needs a model that can report per sample; {b.name} cannot"


def test_a_capability_is_checked_by_name_only():
    with pytest.raises(ValueError, match="is not a capability"):
        capable(_synthetic(), Backend)


@pytest.mark.slow
def test_text_base_responses_follow_the_run_seed_and_batch_size_auto_runs(backends, tmp_path, monkeypatch):
    """``--model default-text --batch-size auto`` runs (it ended in an AttributeError: no probe); its seed-0
    responses are those of a seed-0 backend built apart, seed 1 draws others, and a backend refuses a run
    whose seed is not the one its base responses were made with."""
    from diffusion_windows.backends import load_backend
    from diffusion_windows.engine import Engine, MemoryStore, Settings
    from diffusion_windows.options import resolve
    from diffusion_windows.sweep import main
    from diffusion_windows.text import report as text_report

    seed0 = backends["text"]
    monkeypatch.setitem(text_report.report.__kwdefaults__, "localize_budget", 2)  # bisection steps: cheap
    out = tmp_path / "auto"
    assert main(["--model", "default-text", "--batch-size", "auto", "--samples", "2", "--restarts", "2",
                 "--timesteps", "0,0.5", "--no-theory", "--quiet", "--out", str(out)]) == 0
    o = json.loads((out / "options.json").read_text())
    assert o["batch_size"] == 512 and o["batch_size_auto"] is True  # on the CPU: the default, kept for a resume
    responses = [r["response"] for r in json.loads((out / "windows.json").read_text())["responses"]]
    assert responses == [seed0.text(0), seed0.text(1)]  # same seed, same base responses
    seed1 = load_backend(resolve(dict(model="default-text", samples=2, seed=1, out="unused")))
    assert [seed1.text(b) for b in range(2)] != responses  # another seed, other base responses
    with pytest.raises(ValueError, match=r"^seed: the run's seed is 1, but this text backend made its base "
                                         r"responses with seed 0: build it with seed=1$"):
        Engine(seed0, Settings(samples=2, restarts=2, timesteps=[0.0], seed=1), MemoryStore(), quiet=True).run()
