"""Windows from user code: `measure_window(pipe, classifier, **options) -> list[WindowRecord]`.

The sweep's measurement in memory (no files unless ``out`` is given), with the same
units, seeds and batches as `run_sweep`, so the same options give the same records.
Small defaults suit calling it often, e.g. every N steps of a training loop::

    from diffusion_windows import load_default_classifier, load_default_pipeline, measure_window

    pipe, clf = load_default_pipeline(), load_default_classifier()
    records = measure_window(pipe, clf, samples=8, restarts=8)
    digit3 = next(r for r in records if r.feature == "digit" and r.value == "3")
    print(digit3.start_timestep, digit3.end_timestep, digit3.t_after_timestep)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .options import OptionError, parse_timesteps


@dataclasses.dataclass(frozen=True)
class WindowRecord:
    """One ``windows.json`` record as attributes (training timesteps unless ``_ou``)."""

    feature: str
    value: str
    parent: str | None = None                  # the coarser value a nested record lies in
    parent_feature: str | None = None
    n_base: int = 0                            # base samples with this value
    base_rate: float = 0.0                     # its frequency among the base samples
    floor: float = 0.0                         # retention's floor (base rate, or w(S_after)/w(S_before))
    tolerance: float = 0.1                     # delta
    timesteps: tuple = ()                      # measured grid (training timesteps, ascending)
    retention: tuple | None = None             # P(t) per grid timestep
    ci_low: tuple | None = None                # bootstrap band over base samples
    ci_high: tuple | None = None
    start_timestep: float | None = None        # late edge: largest t with P >= 1 - delta
    start_ci: tuple | None = None
    end_timestep: float | None = None          # early edge: smallest t with P <= floor + delta
    end_ci: tuple | None = None
    jump: tuple | None = None                  # the paper's jump criterion (upper, lower)
    ideal_retention: tuple | None = None       # theory: an ideal denoiser's retention on the grid
    t_after_timestep: float | None = None      # theory: T_after (late side)
    t_before_timestep: float | None = None     # theory: T_before (early side)
    t_after_ou: float | None = None
    t_before_ou: float | None = None
    speciation_timestep: float | None = None
    speciation_ou: float | None = None
    bracket_holds: bool | None = None          # measured start >= T_after and end <= T_before
    extra: dict = dataclasses.field(default_factory=dict)  # every other key of the record

    @classmethod
    def from_dict(cls, d: dict) -> "WindowRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return json.loads(json.dumps({**d, **self.extra}))


def measure_window(
    pipe,                           # a diffusers pipeline (DDPM/DDIM, Stable Diffusion family, ...)
    classifier,                     # images [N,C,H,W] in [0,1] -> probabilities [N,K], with .labels
    *,
    features=None,                  # list of features.Feature (None: the default's digit+group, or one per label)
    samples: int = 8,               # base samples, each with its own seed
    restarts: int = 8,              # re-samples per base sample and timestep
    timesteps="0:1000:100",         # "auto", "t1,t2,..." or "START:STOP:STEP" (training timesteps)
    protocol: str = "noise",        # "noise" (re-noise x0) or "branch" (the trajectory's own x_t)
    num_inference_steps: int = 50,  # N of the sampling grid
    seed: int = 0,                  # run seed (units derive their own)
    batch_size: int = 512,          # largest batch per model call
    tolerance: float = 0.1,         # delta at both edges
    edge_precision: float = 40,     # timesteps, for timesteps="auto"
    eta: float | None = None,       # DDIM eta (None: 1.0 for DDIM)
    mixture=None,                   # theory mixture in model space ("default": the digits training split)
    prompt: str | None = None,      # text pipelines
    guidance_scale: float | None = None,
    theory: bool = True,            # False: skip the theory (its keys stay None); it depends on the data only
    out=None,                       # a folder: also write windows.json/csv and plots there
) -> list[WindowRecord]:
    """The sweep's measurement on ``pipe`` in memory -> one `WindowRecord` per feature value.

    With ``features=None`` and a classifier whose labels are the digits "0".."9", the
    default features (digit and coarse group) and the default theory mixture are used.

    Example::

        records = measure_window(load_default_pipeline(), load_default_classifier(), samples=8, restarts=8)
    """
    from . import schedule
    from .features import DEFAULT_FEATURES, labels_feature
    from .measure import Model
    from .store import MemoryStore
    from .sweep import Engine, compute_records

    labels = tuple(classifier.labels)
    if features is None:
        is_digits = labels == tuple(str(d) for d in range(10))
        features = DEFAULT_FEATURES if is_digits else [labels_feature(labels)]
        if is_digits and mixture is None:
            mixture = "default"
    for name, v in (("samples", samples), ("restarts", restarts), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise OptionError(f"{name}: {v!r} must be an integer >= 1")
    if protocol not in ("noise", "branch"):
        raise OptionError(f"protocol: {protocol!r} is not 'noise' or 'branch'")
    T = schedule.num_train_timesteps(pipe.scheduler)
    o = dict(samples=samples, restarts=restarts, timesteps=parse_timesteps(timesteps, T), protocol=protocol,
             seed=seed, batch_size=batch_size, tolerance=tolerance, edge_precision=edge_precision, images=None)
    if eta is None and type(pipe.scheduler).__name__.startswith("DDIM"):
        eta = 1.0
    conditioning = {"prompt": prompt} if prompt else {}
    if prompt and guidance_scale is not None:
        conditioning["guidance_scale"] = guidance_scale
    model = Model(pipe=pipe, classifier=classifier, features=tuple(features),
                  num_inference_steps=num_inference_steps, eta=eta, conditioning=conditioning, mixture=mixture)
    engine = Engine(model, o, MemoryStore(), quiet=True)
    engine.run()
    records, extra = compute_records(model, o, engine, theory=theory)
    if out is not None:
        from . import plotting
        from .report import write_windows

        Path(out).mkdir(parents=True, exist_ok=True)
        write_windows(Path(out), records, {**extra, "options": {k: v for k, v in o.items()}})
        plotting.save_plots(Path(out))
    return [WindowRecord.from_dict(r) for r in records]
