"""A finished run's records and ``windows.json`` keys: what the reports read, gathered through the protocol.

The reports (`analysis.report`) read plain data only; this is where a live backend and engine
are asked for it, through the `Backend` protocol and its capabilities and nothing else:

- `declared(backend) -> analysis.report.Declared`: what the backend declares about itself
  (time unit, labels, features, sampler, schedule arrays);
- `run_facts(engine) -> analysis.report.RunFacts`: the grid, the rounds, the evaluations and,
  with ``--timesteps auto``, why each edge stopped;
- `theory_of(backend, store, merged, *, delta, times, device)`: the theory's answer
  ``(Predictions | None, reason)`` through `HasTheory`, or the reason a backend has none;
- `summarize_run(backend, engine, *, tolerance, seed, theory, device, ahead) -> (records, extra)`:
  window records with the theory beside them, and the extra keys of ``windows.json``.

Example::

    engine = Engine(backend, Settings(samples=8, restarts=4, timesteps=[0, 500]), MemoryStore()).run()
    records, extra = summarize_run(backend, engine, tolerance=0.1, theory=False)
"""
from __future__ import annotations

from .backend import HasTheory, capable

__all__ = ["declared", "run_facts", "theory_of", "summarize_run"]


def declared(backend):
    """What ``backend`` declares about itself, as `analysis.report.Declared`."""
    from ..analysis.report import Declared

    return Declared(backend.time_unit, tuple(backend.labels), tuple(backend.features), dict(backend.describe()),
                    dict(backend.schedule_arrays()))


def run_facts(engine):
    """What ``engine`` counted, as `analysis.report.RunFacts`."""
    from ..analysis.report import RunFacts

    return RunFacts(tuple(engine.grid), tuple(engine.round_summary()), int(engine.nfe()), engine.edge_report(),
                    engine.policy_report())


def theory_of(backend, store, merged, *, delta: float, times, device=None) -> tuple:
    """``(Predictions | None, reason)``: the theory on ``times`` (`HasTheory.theory`), or why there is none."""
    if not capable(backend, HasTheory):
        return None, f"no theory for {backend.name} (its backend cannot compute one)"
    return backend.theory(store, merged, delta=float(delta), times=times, device=device)


def summarize_run(backend, engine, *, tolerance: float, seed: int = 0, theory=True, device=None, ahead=None):
    """``(records, extra)`` of a finished run (`analysis.report.summarize`).

    ``theory``: True (computed here on the records' times, or taken from ``ahead(times)``: the answer
    computed before the records were known, None when it does not cover ``times``), False, or a
    precomputed `Predictions`."""
    from ..analysis.compare import Predictions
    from ..analysis.counts import merge_units
    from ..analysis.records import window_records
    from ..analysis.report import summarize, theory_times

    merged = merge_units(engine.store.merge())
    info = declared(backend)
    auto_grid = list(engine.grid) if engine.auto else None  # auto's intervals span its unmeasured times
    records = window_records(merged, info.features, len(info.labels), tolerance=tolerance, seed=seed,
                             grid=auto_grid)
    answer = None
    if isinstance(theory, Predictions):
        answer = theory
    elif theory:
        times = theory_times(records)
        answer = None if ahead is None else ahead(times)
        if answer is None:
            answer = theory_of(backend, engine.store, merged, delta=tolerance, times=times, device=device)
    return summarize(records, info, run_facts(engine), theory=answer)
