"""The options table is the one place of defaults: --help shows each once and it is the one that runs;
run_sweep's and measure_window's signatures carry the table's defaults; the registry of kinds is
the only place that knows a model family."""
import json
import importlib
import inspect
import os
import re
from pathlib import Path

import pytest

from diffusion_windows import backends, cli, options
from diffusion_windows.options import OptionError, resolve

PACKAGE = Path(options.__file__).parent


def _help_entries() -> dict:
    """``--help`` split into one whitespace-joined text per flag (printed wide: argparse breaks lines at hyphens)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "1000"
    try:
        text = cli.build_parser().format_help()
    finally:
        os.environ.pop("COLUMNS") if old is None else os.environ.__setitem__("COLUMNS", old)
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current is not None and line.startswith(" " * 10):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def _flag(opt):
    return ("--no-" + opt.name.replace("_", "-")) if opt.kind is bool and opt.default else opt.flag


def test_help_shows_each_default_exactly_once():
    entries = _help_entries()
    for opt in options.OPTIONS:
        entry = entries[_flag(opt)]
        assert entry.count("(default:") == 1, entry
        assert entry.count("default:") == 1, entry  # no second default hidden in the help text


def _parsed(opt, text):
    """``text`` as the CLI reads it for ``opt``."""
    return getattr(cli.build_parser().parse_args([f"{opt.flag}={text}"]), opt.name)


def _resolved(model, name, value, tmp_path, **extra):
    o = resolve({"model": model, name: value, "out": str(tmp_path / "o"), **extra})
    return o[name]


def _models_of(who: str, name: str, tmp_path):
    """The models a help entry's "for WHO" names, with the options each needs to resolve."""
    lm = tmp_path / "lm"
    lm.mkdir(exist_ok=True)
    (lm / "config.json").write_text("{}")
    for kind in backends.KINDS:
        if who == kind.spec.MODELS:
            plain = [m for m in kind.spec.BUILTINS if name not in kind.spec.BUILTIN_DEFAULTS.get(m, {})]
            if kind.name == "text":
                return [(str(lm), {"prompt": "2+2="})] + [(m, {}) for m in plain]
            return [(m, {}) for m in plain]
    return [(m.strip(), {}) for m in who.split(",")]


def test_the_default_in_help_is_the_default_that_runs(tmp_path):
    """Passing the default shown in --help resolves to what not passing it resolves to, for every
    model each "for ..." part names (and the table's own defaults on the default model)."""
    entries, checked = _help_entries(), 0
    for opt in options.OPTIONS:
        if opt.name in ("out", "model") or opt.kind is bool:
            continue
        shown = re.search(r"\(default: (.*)\)$", entries[_flag(opt)]).group(1)
        if opt.default is not None:
            assert shown == str(opt.default)
            assert _resolved("default", opt.name, _parsed(opt, shown), tmp_path) == \
                resolve({"out": str(tmp_path / "o")})[opt.name]
            checked += 1
            continue
        if not any(opt.name in k.spec.DEFAULTS for k in backends.KINDS):
            assert shown == opt.shown  # a default in words: its option is None and means what it says
            continue
        for part in shown.split("; "):
            value, who = part.split(" for ", 1)
            for model, extra in _models_of(who, opt.name, tmp_path):
                try:
                    explicit = _resolved(model, opt.name, _parsed(opt, value), tmp_path, **extra)
                except OptionError as e:
                    assert "has its own" in str(e)  # the built-in language model fixes its outcome
                    continue
                assert explicit == _resolved(model, opt.name, None, tmp_path, **extra), (opt.name, model)
                checked += 1
    assert checked >= 30


def test_default_text_runs_its_own_grid_and_help_says_so(tmp_path):
    entry = _help_entries()["--timesteps"]
    assert "0:1:0.04 for default-text" in entry and "0:1:0.1 for language models" in entry
    assert resolve({"model": "default-text", "out": str(tmp_path / "o")})["timesteps"][:3] == [0.0, 0.04, 0.08]


def test_run_sweep_signature_is_the_table():
    from diffusion_windows.sweep import run_sweep

    params = inspect.signature(run_sweep).parameters
    assert set(params) == set(options.DEFAULTS) | {"dry_run", "quiet"}
    for name, default in options.DEFAULTS.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default == default, name


def test_measure_window_signature_holds_every_library_option_with_its_default():
    from diffusion_windows.library import measure_window, theory_predictions

    params = inspect.signature(measure_window).parameters
    for name, default in options.LIBRARY_DEFAULTS.items():
        assert name in params, name
        assert params[name].default == default, name
    assert set(params) - set(options.LIBRARY_DEFAULTS) == {"pipe", "classifier", "features", "mixture"}
    tp = inspect.signature(theory_predictions).parameters
    assert tp["num_inference_steps"].default == options.LIBRARY_DEFAULTS["num_inference_steps"]
    assert tp["tolerance"].default == options.LIBRARY_DEFAULTS["tolerance"]


def test_value_flags_come_from_the_table():
    assert cli.join_values(["--timesteps", "-10,100", "--no-theory", "--seed", "-1"]) == \
        ["--timesteps=-10,100", "--no-theory", "--seed=-1"]
    assert cli._takes_value() == {o.flag for o in options.OPTIONS if o.kind is not bool}


def test_options_knows_no_model_family():
    source = (PACKAGE / "options.py").read_text()
    for kind in backends.KINDS:
        for model in kind.spec.BUILTINS:
            if model != "default":  # the table's default model is a value, "default" a word of its help
                assert model not in source, model
    for word in ("GAUSSIAN", "TEXT_MODELS", "DIFFUSION_ONLY", "TEXT_ONLY", "model_index", "scheduler_config"):
        assert word not in source, word


def test_every_kind_registers_what_the_registry_reads_and_claims_its_models(tmp_path):
    from diffusion_windows.diffusion import models as dmodels
    from diffusion_windows.diffusion import resolve as dresolve
    from diffusion_windows.diffusion.schedule import FLOW_SCHEDULERS

    table_none = {o.name for o in options.OPTIONS if o.default is None}
    for kind in backends.KINDS:
        spec = kind.spec
        for fn in ("claims", "resolve", "fingerprints"):
            assert callable(getattr(spec, fn)), (kind.name, fn)
        module, _, fn = kind.load.partition(":")
        assert callable(getattr(importlib.import_module(module), fn)), kind.load
        for model in spec.BUILTINS:
            assert backends.kind_of(model) is kind
        assert set(spec.OPTIONS) <= set(options.DEFAULTS) and set(spec.DEFAULTS) <= table_none
        assert set(spec.BUILTIN_DEFAULTS) <= set(spec.BUILTINS)
        assert isinstance(spec.MODELS, str) and isinstance(spec.NOUN, str) and spec.ABOUT
    assert sum(k.catch_all for k in backends.KINDS) == 1
    assert set(dmodels.BUILTIN_MODELS) == set(dresolve.BUILTINS)   # the loader and the resolution agree
    assert dresolve.FLOW_SCHEDULERS == FLOW_SCHEDULERS
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text("{}")
    assert backends.model_kind(str(lm)) == "text"
    assert backends.model_kind("org/name") == "diffusion"


def test_an_option_of_another_kind_is_refused(tmp_path):
    with pytest.raises(OptionError, match=r"--max-new-tokens: 5 does not apply to a diffusion model"):
        resolve({"max_new_tokens": 5, "out": str(tmp_path / "o")})
    with pytest.raises(OptionError, match=r"--eta: 0.5 does not apply to a language model"):
        resolve({"model": "default-text", "eta": 0.5, "out": str(tmp_path / "o")})


def _snapshot(root, scheduler: dict):
    snap = root / "snapshots" / "0123abcd"
    (snap / "scheduler").mkdir(parents=True)
    (snap / "model_index.json").write_text(json.dumps({"_class_name": "SomePipeline",
                                                       "transformer": ["diffusers", "SomeTransformer"]}))
    (snap / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return snap


def test_a_hub_id_is_read_from_the_local_cache_not_assumed(tmp_path, monkeypatch):
    from diffusion_windows.engine import fingerprint as fp

    flow = _snapshot(tmp_path / "flow", {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000})
    short = _snapshot(tmp_path / "short", {"_class_name": "DDPMScheduler", "num_train_timesteps": 500})
    snaps = {"org/flow": flow, "org/short": short}
    monkeypatch.setattr(fp, "hub_snapshot", lambda repo: ("0123abcd", snaps[repo]) if repo in snaps else None)
    common = dict(labels="a,b", clip_model="RN50", out=str(tmp_path / "o"))
    o = resolve(dict(model="org/flow", timesteps="12.5,1000", **common))
    assert o["timesteps"] == [12.5, 1000]   # flow matching: 1000 sigma, read off the cached scheduler config
    o = resolve(dict(model="org/short", timesteps="0:500:100", **common))
    assert o["num_train_timesteps"] == 500 and o["timesteps"] == [0, 100, 200, 300, 400]
    with pytest.raises(OptionError, match="not below num_train_timesteps=500"):
        resolve(dict(model="org/short", timesteps="600", **common))
    with pytest.raises(OptionError, match="not an integer"):
        resolve(dict(model="org/short", timesteps="12.5", **common))
    with pytest.raises(OptionError, match="'org/absent' is not a local folder and is not in the Hugging Face cache"):
        resolve(dict(model="org/absent", **common))
