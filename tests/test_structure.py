"""The package's shape, read statically: its import graph has no cycle, no module is over 450 lines,
and the rooms depend one way (DESIGN.md, "Architecture").

Every module under `diffusion_windows/` is parsed with `ast`; an import anywhere in it counts (module
level, inside a function, under `if TYPE_CHECKING`): a lazy import that closes a cycle is still a
cycle. `from . import x` names the submodule `x` when there is one; importing `a.b.c` imports the
packages `a` and `a.b` first (their `__init__`), so it is an edge to each.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = "diffusion_windows"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 450



def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _with_parents(name: str, known: dict) -> set[str]:
    """`name` (or its longest known prefix) and every package above it."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def imports_of(name: str, path: Path, known: dict) -> tuple[set[str], set[str]]:
    """(modules of the package that `name` imports, top-level names of everything else it imports)."""
    is_package = path.name == "__init__.py"
    inside, outside = set(), set()

    def add(target: str):
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            inside.update(_with_parents(target, known))
        else:
            outside.add(target.partition(".")[0])

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            add(target)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:   # `from . import x` with x a submodule
                    add(f"{target}.{alias.name}")
    inside.discard(name)
    return inside, outside


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]):
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_reader_sees_lazy_relative_and_parent_imports(tmp_path):
    """The reader itself: a function-level `from ..a import b` is an edge to `a`, `a.b` and the parent packages."""
    pkg = tmp_path / PACKAGE
    (pkg / "a").mkdir(parents=True)
    (pkg / "c").mkdir()
    for f in ("__init__.py", "a/__init__.py", "a/b.py", "c/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "c" / "d.py").write_text("def f():\n    from ..a import b\n    import numpy.linalg\n")
    known = {f"{PACKAGE}", f"{PACKAGE}.a", f"{PACKAGE}.a.b", f"{PACKAGE}.c", f"{PACKAGE}.c.d"}
    inside, outside = imports_of(f"{PACKAGE}.c.d", pkg / "c" / "d.py", dict.fromkeys(known))
    assert inside == {PACKAGE, f"{PACKAGE}.a", f"{PACKAGE}.a.b"} and outside == {"numpy"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_the_import_graph_has_no_cycle(graph):
    edges = {name: set(inside) for name, (inside, _) in graph.items()}
    # A package's `__init__` that imports its own submodules is how a package is built, not a cycle of
    # dependencies: a submodule's edge to its own parent packages is left out (it would close every such loop).
    for name in edges:
        edges[name] -= {p for p in edges[name] if name.startswith(p + ".")}
    cycles = []
    while (cycle := find_cycle(edges)) is not None:
        cycles.append(cycle)
        for a, b in zip(cycle, cycle[1:]):   # break it and look for the next one
            edges[a].discard(b)
            break
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_450_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    long = {name: n for name, n in long.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"


def _in(name: str, room: str) -> bool:
    return name == f"{PACKAGE}.{room}" or name.startswith(f"{PACKAGE}.{room}.")


def test_text_imports_nothing_from_diffusion(graph):
    bad = {name: sorted(m for m in inside if _in(m, "diffusion"))
           for name, (inside, _) in graph.items() if _in(name, "text")}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("room", ["theory", "analysis"])
def test_theory_and_analysis_import_no_backend(graph, room):
    bad = {}
    for name, (inside, outside) in graph.items():
        if _in(name, room):
            found = sorted(m for m in inside if _in(m, "diffusion") or _in(m, "text") or m == f"{PACKAGE}.backends")
            found += sorted(outside & {"diffusers", "transformers", "open_clip"})
            if found:
                bad[name] = found
    assert not bad, f"{room}/ must not depend on a backend: {bad}"


def test_the_registry_and_the_table_import_no_backend_and_backends_no_cli(graph):
    """The registry, the table, the run folder and the CLI name backends by module path only (never an
    import); a backend never imports the CLI's modules; the errors module imports nothing."""
    for name in ("errors", "backends", "options", "runfolder", "cli"):
        inside, _ = graph[f"{PACKAGE}.{name}"]
        bad = sorted(m for m in inside if _in(m, "diffusion") or _in(m, "text"))
        assert not bad, (name, bad)
    inside, outside = graph[f"{PACKAGE}.errors"]
    assert inside <= {PACKAGE} and outside <= {"__future__"}
    cli_modules = {f"{PACKAGE}.cli", f"{PACKAGE}.sweep", f"{PACKAGE}.runfolder"}
    for name, (inside, _) in graph.items():
        if _in(name, "diffusion") or _in(name, "text"):
            assert not inside & cli_modules, (name, sorted(inside & cli_modules))


def test_old_import_paths_are_warned_aliases_of_the_real_modules(monkeypatch):
    import importlib
    import sys

    import diffusion_windows
    from diffusion_windows._aliases import _ALIASES

    assert len(_ALIASES) == 6
    for old, new in _ALIASES.items():
        short = old.rpartition(".")[2]
        assert not (ROOT / f"{short}.py").exists(), f"{old}: the alias list is the one place old paths live"
        real = importlib.import_module(new)
        for how in ("import", "from"):
            monkeypatch.delitem(sys.modules, old, raising=False)
            monkeypatch.delattr(diffusion_windows, short, raising=False)
            with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; import {new}"):
                got = importlib.import_module(old) if how == "import" else \
                    getattr(__import__(PACKAGE, fromlist=[short]), short)
            assert got is real and got.__name__ == new and got.__spec__.name == new


def test_the_package_imports_no_old_path():
    from diffusion_windows._aliases import _ALIASES

    known = modules()
    bad = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad += [(name, a.name) for a in node.names if a.name in _ALIASES]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                bad += [(name, t) for t in [target] + [f"{target}.{a.name}" for a in node.names] if t in _ALIASES]
    assert not bad, f"imports of deprecated paths inside the package: {bad}"


def test_names_that_left_options_are_warned_and_are_the_real_objects():
    import importlib

    import diffusion_windows.options as options
    from diffusion_windows._aliases import _MOVED_NAMES

    for name, home in _MOVED_NAMES["diffusion_windows.options"].items():
        with pytest.warns(DeprecationWarning, match=f"options.{name} is deprecated; import it from {home}"):
            got = getattr(options, name)
        assert got is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        options.no_such_name
