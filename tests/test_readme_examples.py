"""Every ```python block of README.md runs (so the examples cannot rot).

Each block is executed in a fresh namespace with a temporary working directory. A block
preceded by a ``<!-- no-test -->`` line (blank lines between are allowed) is skipped.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md",)
NO_TEST = "<!-- no-test -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(text: str) -> list[tuple[int, str, str, bool]]:
    """(first line number, language, code, marked no-test) of each fenced block of Markdown text."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        before = [line.strip() for line in lines[:i] if line.strip()]
        skip = bool(before) and before[-1] == NO_TEST
        blocks.append((i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n", skip))
        i = j + 1
    return blocks


def python_examples():
    out = []
    for name in DOCS:
        path = ROOT / name
        if not path.is_file():
            continue
        for line, lang, code, skip in code_blocks(path.read_text()):
            if lang == "python":
                marks = [pytest.mark.skip(reason=NO_TEST)] if skip else []
                out.append(pytest.param(name, line, code, id=f"{name}:{line}", marks=marks))
    return out


def test_code_blocks_parser():
    text = "x\n```python\na = 1\n```\n<!-- no-test -->\n\n```python\nb = 2\n```\n```bash\nls\n```\n"
    assert code_blocks(text) == [(2, "python", "a = 1\n", False), (7, "python", "b = 2\n", True),
                                 (10, "bash", "ls\n", False)]


def test_docs_have_python_examples():
    # README.md holds the training-loop callback example.
    code = "".join(p.values[2] for p in python_examples())
    assert "measure_window(" in code and "def window_tracker" in code


@pytest.mark.parametrize("name, line, code", python_examples())
def test_example_runs(name, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"{name}:{line}", "exec"), namespace)  # the blocks assert their own results
    defined = set(namespace) - {"__name__", "__builtins__"}
    assert defined, f"{name}:{line} defined nothing"
