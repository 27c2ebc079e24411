"""Outcome classifiers for text: a response's text -> a label (the feature whose window we measure).

An `Outcome` is built by name from a spec (`make_outcome`):

- ``regex:PATTERN``: the first match's first capture group, or the whole match;
- ``answer``: the last ``\\boxed{...}``, else the last "the answer is X", else the last
  number in the text;
- ``choices:a,b,c``: which listed choice the answer names (in the ``answer`` span when
  there is one, else the last choice mentioned anywhere);
- ``correct`` or ``correct:SPEC``: ``correct``/``incorrect``, the answer (by ``SPEC``,
  default ``answer``) against the prompt's reference answer;
- any Python callable ``text -> label`` (``None``: no label).

Values are normalised (`normalize_answer`: strip, case, trailing period, ``1,000`` =
``1000``, ``3.0`` = ``3``). Open label sets (``regex``, ``answer``, callables) are the
values seen among the base responses (`Outcome.fit`, most frequent first); anything else,
or no value at all, is ``"other"``, as in the forking-paths paper (Bigelow et al., 2024).
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

__all__ = ["Outcome", "make_outcome", "normalize_answer", "extract_answer", "OTHER", "SPECS"]

OTHER = "other"
SPECS = "regex:PATTERN, answer, choices:a,b,..., correct[:SPEC], or a callable"

_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?$|^[+-]?\.\d+$")
_LAST_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)\s*(?:\.\s|\.?$|\n)", re.IGNORECASE | re.MULTILINE)


def normalize_answer(text) -> str | None:
    """A canonical form of an answer: trimmed, lower case, no trailing period or markup; numbers
    without thousands separators or trailing zeros (``"1,000.50"`` -> ``"1000.5"``)."""
    if text is None:
        return None
    s = " ".join(str(text).split()).strip()
    s = s.strip("$*`'\" ").rstrip(".,;:!").strip()
    if _NUMBER.match(s):
        try:
            d = Decimal(s.replace(",", ""))
        except InvalidOperation:
            return s.lower()
        d = d.normalize()
        if d == 0:
            return "0"
        return format(d, "f")
    return s.lower() or None


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _answer_span(text: str) -> str | None:
    """The stated answer: the last ``\\boxed{}``, else the last "the answer is X"."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    found = _ANSWER_IS.findall(text)
    return found[-1] if found else None


def extract_answer(text: str) -> str | None:
    """The ``answer`` rule: boxed, else "the answer is X", else the last number; normalised."""
    span = _answer_span(text)
    if span is None:
        numbers = _LAST_NUMBER.findall(text)
        span = numbers[-1] if numbers else None
    elif (lead := _LAST_NUMBER.match(span.strip().lstrip("$"))) and not span.strip()[lead.end():lead.end() + 1].isalnum():
        span = lead.group(0)        # "the answer is 42 apples" -> 42
    return normalize_answer(span)


@dataclass(frozen=True)
class Outcome:
    """A text classifier with a label set; call it as ``outcome(text, reference=None) -> label``."""

    spec: str                                  # the spec it was built from (for records)
    extract: Callable                          # (text, reference) -> value or None
    labels: tuple = (OTHER,)                   # known labels; the last is "other" (except for `correct`)
    open: bool = True                          # labels come from `fit` on the base responses
    needs_reference: bool = False              # the `correct` outcome: a reference answer per prompt

    def __call__(self, text: str, reference=None) -> str:
        if self.needs_reference and reference is None:
            raise ValueError(f"outcome {self.spec!r} needs the prompt's reference answer")
        value = self.extract(text, reference)
        return value if value is not None and value in self.labels else OTHER

    def fit(self, base_texts, references=None) -> "Outcome":
        """Open label sets: the values of the base responses, most frequent first, then "other"."""
        if not self.open:
            return self
        refs = references if references is not None else [None] * len(base_texts)
        values = [v for t, r in zip(base_texts, refs) if (v := self.extract(t, r)) not in (None, OTHER)]
        seen = Counter(values)   # insertion order is first appearance; sorted() is stable
        labels = sorted(seen, key=lambda v: -seen[v])
        return dataclasses.replace(self, labels=tuple(labels) + (OTHER,))


def _regex(pattern: str, spec: str) -> Callable:
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"outcome spec {spec!r}: bad regular expression ({err})") from None

    def extract(text, reference=None):
        m = rx.search(text)
        if m is None:
            return None
        return normalize_answer(m.group(1) if rx.groups else m.group(0))
    return extract


def _choices(names: list[str], spec: str) -> Callable:
    canon = [normalize_answer(c) for c in names]
    if len(canon) < 2 or None in canon or len(set(canon)) < len(canon):
        raise ValueError(f"outcome spec {spec!r}: give two or more distinct choices, comma-separated")
    rx = re.compile(r"(?<!\w)(" + "|".join(re.escape(c) for c in sorted(canon, key=len, reverse=True))
                    + r")(?!\w)", re.IGNORECASE)

    def extract(text, reference=None):
        span = _answer_span(text)
        if span is not None and (m := rx.search(span)):
            return normalize_answer(m.group(1))
        found = rx.findall(text)
        return normalize_answer(found[-1]) if found else None
    return extract, tuple(canon)


def make_outcome(spec) -> Outcome:
    """An `Outcome` from a spec string (see the module docstring), a callable, or an `Outcome`."""
    if isinstance(spec, Outcome):
        return spec
    if callable(spec):
        name = getattr(spec, "__name__", type(spec).__name__)
        return Outcome(spec=f"callable:{name}", extract=lambda text, reference=None: _label(spec(text)))
    if not isinstance(spec, str):
        raise ValueError(f"outcome spec must be a string or a callable, got {type(spec).__name__}")
    kind, _, arg = spec.partition(":")
    if kind == "regex" and arg:
        return Outcome(spec=spec, extract=_regex(arg, spec))
    if kind == "answer" and not arg:
        return Outcome(spec=spec, extract=lambda text, reference=None: extract_answer(text))
    if kind == "choices" and arg:
        extract, labels = _choices(arg.split(","), spec)
        return Outcome(spec=spec, extract=extract, labels=labels + (OTHER,), open=False)
    if kind == "correct":
        inner = make_outcome(arg or "answer")
        if inner.needs_reference:
            raise ValueError(f"outcome spec {spec!r}: the inner spec cannot be another 'correct'")

        def extract(text, reference=None):
            value = inner.extract(text, None)
            return "correct" if value is not None and value == normalize_answer(reference) else "incorrect"
        return Outcome(spec=spec, extract=extract, labels=("correct", "incorrect"), open=False,
                       needs_reference=True)
    raise ValueError(f"unknown outcome spec {spec!r}: use {SPECS}")


def _label(value):
    return None if value is None else str(value)
