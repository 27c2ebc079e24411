"""Windows from user code: `measure_window(pipe, classifier, **options) -> list[WindowRecord]`.

The sweep's measurement in memory (no files unless ``out`` is given), with the same engine,
units, seeds and batches as `run_sweep`, so the same options give the same records. Its
defaults are the options table's library defaults (`options.LIBRARY_DEFAULTS`: small, to be
called often, e.g. every N steps of a training loop); its values are checked by the same
checks as the sweep's. The theory depends on the data only: compute it once
(`theory_predictions`) and pass it as ``theory=`` to repeated calls, or pass ``theory=False``::

    from diffusion_windows import load_default_classifier, load_default_pipeline, measure_window

    pipe, clf = load_default_pipeline(), load_default_classifier()
    records = measure_window(pipe, clf, samples=8, restarts=8)
    digit3 = next(r for r in records if r.feature == "digit" and r.value == "3")
    print(digit3.start_timestep, digit3.end_timestep, digit3.t_after_timestep)
"""
from __future__ import annotations

from pathlib import Path

from .analysis.records import WindowRecord
from .options import LIBRARY_DEFAULTS as _L
from .options import OptionError, check_values, parse_timesteps

LIBRARY_DEFAULTS = _L

__all__ = ["measure_window", "measure_text_window", "theory_predictions", "WindowRecord"]


def _backend(pipe, classifier, features, mixture, *, num_inference_steps, eta, protocol, prompt, guidance_scale,
             class_label=None, height=None, width=None, negative_prompt=None, true_cfg_scale=None, image=None,
             num_frames=None):
    from .diffusion.backend import DiffusionBackend
    from .diffusion.models import conditioning
    from .diffusion.resolve import is_bundled_pipeline
    from .features import DEFAULT_FEATURES, labels_feature

    labels = tuple(classifier.labels)
    if features is None:
        is_digits = labels == tuple(str(d) for d in range(10))
        features = DEFAULT_FEATURES if is_digits else [labels_feature(labels)]
        # the digits' training split is the theory's data of the bundled pipeline only: another
        # pipeline classified into digits has other data (mixture=... gives it)
        if is_digits and mixture is None and is_bundled_pipeline(pipe):
            mixture = "default"
    return DiffusionBackend(pipe, classifier, features, num_inference_steps, eta=eta,
                            conditioning=conditioning(prompt, guidance_scale, class_label, negative_prompt,
                                                      true_cfg_scale, image), mixture=mixture,
                            protocol=protocol, height=height, width=width, num_frames=num_frames)


def measure_window(
    pipe,                           # a diffusers pipeline (DDPM/DDIM, Stable Diffusion, SD3, Flux.1/.2, Kontext,
                                    # Chroma, Qwen-Image, Z-Image, HiDream, Lumina 2, CogView 4, PixArt, Sana, DiT,
                                    # Wan, CogVideoX, HunyuanVideo, LTX-Video)
    classifier,                     # images [N,C,H,W] (video: clips [N,F,C,H,W]) in [0,1] -> probs [N,K], .labels
    *,
    features=None,                  # list of features.Feature (None: the default's digit+group, or one per label)
    samples: int = _L["samples"],   # base samples, each with its own seed
    restarts: int = _L["restarts"],  # re-samples per base sample and timestep
    timesteps=_L["timesteps"],      # "auto", "auto:START:STOP:STEP", "t1,..." or START:STOP:STEP
    protocol: str = _L["protocol"],  # "noise" (re-noise x0) or "branch" (the trajectory's own x_t)
    num_inference_steps: int = _L["num_inference_steps"],  # N of the sampling grid
    seed: int = _L["seed"],         # run seed (units derive their own)
    batch_size: int = _L["batch_size"],  # largest batch per model call (decode and classify too)
    tolerance: float = _L["tolerance"],  # delta at both edges
    edge_precision: float = _L["edge_precision"],  # timesteps, for timesteps="auto": the edge interval it aims at
    initial_restarts: int | None = _L["initial_restarts"],  # timesteps="auto": re-samples a new unit starts with
    auto_aim: str = _L["auto_aim"],  # timesteps="auto": "edge", or "interval" (also narrow intervals)
    max_evaluations: int | None = _L["max_evaluations"],    # timesteps="auto": a budget of model evaluations
    eta: float | None = _L["eta"],  # DDIM eta (None: 1.0 for DDIM)
    mixture=None,                   # theory data in model space ("default": the digits training split)
    prompt: str | None = _L["prompt"],  # text pipelines
    guidance_scale: float | None = _L["guidance_scale"],
    negative_prompt: str | None = _L["negative_prompt"],  # text pipelines: guidance's other branch
    true_cfg_scale: float | None = _L["true_cfg_scale"],  # Flux, Flux Kontext, Qwen-Image (with negative_prompt)
    image=_L["image"],              # reference image (Flux Kontext): a file name or a PIL image
    class_label=_L["class_label"],  # class-conditional pipelines (DiT): an index or an id2label name
    height: int | None = _L["height"],  # image size in pixels (None: the pipeline's)
    width: int | None = _L["width"],
    num_frames: int | None = _L["num_frames"],  # video pipelines: frames of a clip (None: the pipeline's)
    theory=_L["theory"],            # False: skip; a Predictions (theory_predictions): reuse; True: compute
    out=_L["out"],                  # a folder: also write windows.json/csv and plots there
) -> list[WindowRecord]:
    """The sweep's measurement on ``pipe`` in memory -> one `WindowRecord` per feature value.

    With ``features=None`` and a classifier whose labels are the digits "0".."9", the default
    features (digit and coarse group) are used, and, on the bundled pipeline
    (`load_default_pipeline`) only, its theory data (the digits' training split); any other
    pipeline has theory data only when ``mixture`` is given.

    Example::

        records = measure_window(load_default_pipeline(), load_default_classifier(), samples=8, restarts=8)
    """
    from .diffusion import schedule
    from .engine import Engine, MemoryStore, Settings

    values = dict(samples=samples, restarts=restarts, protocol=protocol, num_inference_steps=num_inference_steps,
                  seed=seed, batch_size=batch_size, tolerance=tolerance, edge_precision=edge_precision,
                  initial_restarts=initial_restarts, auto_aim=auto_aim, max_evaluations=max_evaluations, eta=eta,
                  prompt=prompt, guidance_scale=guidance_scale)
    more = {k: v for k, v in dict(class_label=class_label, height=height, width=width,
                                  true_cfg_scale=true_cfg_scale, num_frames=num_frames).items() if v is not None}
    check_values(values)
    check_values(dict(more, class_label=str(class_label)) if class_label is not None else more)
    if initial_restarts is not None and initial_restarts > restarts:
        raise OptionError(f"--initial-restarts: {initial_restarts} must not exceed --restarts {restarts}")
    if not isinstance(theory, bool) and not hasattr(theory, "windows"):
        raise OptionError(f"theory: {theory!r} is neither True, False nor a Predictions")
    steps = parse_timesteps(timesteps, schedule.num_train_timesteps(pipe.scheduler),
                            flow=schedule.is_flow(pipe.scheduler))
    backend = _backend(pipe, classifier, features, mixture, num_inference_steps=num_inference_steps, eta=eta,
                       protocol=protocol, prompt=prompt, guidance_scale=guidance_scale, class_label=class_label,
                       negative_prompt=negative_prompt, true_cfg_scale=true_cfg_scale, image=image,
                       height=height, width=width, num_frames=num_frames)
    settings = Settings(samples=samples, restarts=restarts, timesteps=steps, seed=seed, batch_size=batch_size,
                        tolerance=tolerance, edge_precision=edge_precision, initial_restarts=initial_restarts,
                        auto_aim=auto_aim, max_evaluations=max_evaluations)
    engine = Engine(backend, settings, MemoryStore(), quiet=True).run()
    from .engine.results import summarize_run

    records, extra = summarize_run(backend, engine, tolerance=tolerance, seed=seed, theory=theory)
    if out is not None:
        from . import plotting
        from .analysis.report import write_windows

        Path(out).mkdir(parents=True, exist_ok=True)
        write_windows(Path(out), records, {**extra, "options": {**values, "timesteps": steps}})
        plotting.save_plots(Path(out))
    return records


def measure_text_window(
    model,                          # a causal LM, or a masked-diffusion LM (token ids with masks -> logits)
    tokenizer,                      # its tokenizer (a masked-diffusion LM's has a mask token)
    prompts,                        # prompt texts, or text.backend.Prompt(text, reference)
    *,
    outcome="answer",               # regex:PATTERN, answer, choices:a,b,c, correct, or a callable text -> value
    kind: str | None = None,        # "text" (truncation) or "masked" (re-masking); None: masked iff it reads both ways
    samples: int = _L["samples"],   # base responses, each with its own seed
    restarts: int = _L["restarts"],  # re-samples per base response and time
    timesteps="0:1:0.1",            # fractions removed (text) or masked (masked): "a,b,c", START:STOP:STEP or "auto"
    seed: int = _L["seed"],
    batch_size: int = 64,           # rows per model call
    tolerance: float = _L["tolerance"],
    max_new_tokens: int = 64,       # text: most response tokens; masked: the response's positions
    temperature: float = 1.0,
    top_p: float = 1.0,
    system: str | None = None,      # a system prompt (chat template)
    num_inference_steps: int | None = None,  # masked: steps of the ancestral sampler (None: one token per step)
    theory=True,                    # language models have a theory only for the bundled story language: reason given
) -> list[WindowRecord]:
    """The sweep's measurement on a language model in memory -> one `WindowRecord` per outcome value.

    Time is the fraction of each response removed (a causal LM, THEORY.md "Autoregressive models") or
    masked (a masked-diffusion LM, "Masked diffusion"); the records' ``timesteps`` are those fractions.

    Example::

        records = measure_text_window(model, tokenizer, ["What is 2 + 2?"], outcome="answer", samples=8)
    """
    from .engine import Engine, MemoryStore, Settings
    from .engine.results import summarize_run
    from .text.resolve import parse_fractions

    check_values(dict(samples=samples, restarts=restarts, seed=seed, batch_size=batch_size, tolerance=tolerance,
                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p))
    grid = parse_fractions(timesteps)
    grid = [round(i / 20, 6) for i in range(21)] if grid == "auto" else grid
    if kind is None:
        from .masked.models import check_bidirectional

        kind = "text"
        if getattr(tokenizer, "mask_token_id", None) is not None:
            try:
                check_bidirectional(model, tokenizer)
                kind = "masked"
            except ValueError:
                pass
    common = dict(outcome=outcome, samples=samples, seed=seed, grid=grid, temperature=temperature, top_p=top_p,
                  system=system, batch_size=batch_size)
    if kind == "masked":
        from .masked.backend import MaskedBackend

        backend = MaskedBackend(model, tokenizer, prompts, gen_length=max_new_tokens, steps=num_inference_steps,
                                **common)
    elif kind == "text":
        from .text.backend import TextBackend

        backend = TextBackend(model, tokenizer, prompts, max_new_tokens=max_new_tokens, **common)
    else:
        raise OptionError(f"kind: {kind!r} is not a kind of language model; valid: text, masked")
    settings = Settings(samples=samples, restarts=restarts, timesteps=grid, seed=seed, batch_size=batch_size,
                        tolerance=tolerance)
    engine = Engine(backend, settings, MemoryStore(), quiet=True).run()
    return summarize_run(backend, engine, tolerance=tolerance, seed=seed, theory=theory)[0]


def theory_predictions(pipe, classifier, *, timesteps, features=None, mixture=None,
                       num_inference_steps: int = _L["num_inference_steps"],
                       tolerance: float = _L["tolerance"], device=None):
    """The theory for `measure_window`'s records on the grid ``timesteps``, computed once.

    The data is ``mixture`` (or, for the digits classifier, the bundled training split);
    pass the result as ``measure_window(..., theory=predictions)`` with the same grid,
    tolerance and steps: repeated measurements (a training loop) reuse it.

    Example::

        preds = theory_predictions(pipe, clf, timesteps="0:1000:100")
        records = measure_window(pipe, clf, timesteps="0:1000:100", theory=preds)
    """
    from .diffusion import schedule
    from .diffusion.theory import data_mixture
    from .engine.adaptive import auto_times, is_auto

    backend = _backend(pipe, classifier, features, mixture, num_inference_steps=num_inference_steps, eta=None,
                       protocol="noise", prompt=None, guidance_scale=None)
    data = data_mixture(backend.mixture)
    if data is None:
        raise OptionError("mixture: theory_predictions needs the data (mixture=...) for a pipeline other than the "
                          "bundled one")
    steps = parse_timesteps(timesteps, schedule.num_train_timesteps(pipe.scheduler),
                            flow=schedule.is_flow(pipe.scheduler))
    if is_auto(steps):  # the grid auto refines: the one asked for ("auto:START:STOP:STEP"), else the sampling grid
        grid = backend.snap(auto_times(steps)) if auto_times(steps) is not None else list(backend.grid)
    else:
        grid = backend.snap(steps)
    return backend.predictions(data, delta=float(tolerance), times=grid, device=device)


def library_defaults() -> dict:
    """`measure_window`'s keyword defaults that come from the options table (a test pins them)."""
    return dict(LIBRARY_DEFAULTS)
