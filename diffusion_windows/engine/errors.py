"""The engine's one error: a run that cannot go on (a failed unit, an unreadable results file).

Below the engine and its store, so both raise it; the CLI prints it as one ``error: ...`` line.
"""

__all__ = ["RunError"]


class RunError(RuntimeError):
    """A run cannot go on (e.g. the model returned NaN, a results line is corrupt); results finished
    so far are kept."""
