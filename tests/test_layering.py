"""The package's import layering: no cycles, no import from a lower layer into a higher one.

Every module under src/smto is parsed with `ast`; every import counts, wherever it is written
(module level, inside a function, under `if TYPE_CHECKING`), since a function-local import only
hides a dependency, it does not remove it.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "smto"

# Lowest first. A module may import its own layer and those below it, never one above.
# A package's __init__ belongs to that package's layer; a prefix names a module and, when it is
# a package, everything inside it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "library",
        (
            "smto",  # the top-level __init__ only (see layer_of): it re-exports library names
            "smto._optional",
            "smto.capabilities",
            "smto.errors",
            "smto.method",
            "smto.methods",
            "smto.solvers",
            "smto.jacobian",
            "smto.optim",
            "smto.registry",
        ),
    ),
    ("models/data", ("smto.models", "smto.data")),
    ("problems", ("smto.problems",)),
    ("train", ("smto.train",)),
    ("report", ("smto.report",)),
    ("evaluation", ("smto.evaluation",)),
    ("toys", ("smto.toys",)),
    ("sweep", ("smto.sweep",)),
    ("bench", ("smto.bench",)),
    ("cli", ("smto.cli", "smto.__main__", "smto.compare", "smto.demo")),
]


def discover() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its __init__.py)."""
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = discover()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def layer_of(name: str) -> int:
    """The index in LAYERS of a module; the longest matching prefix decides."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == ROOT:
                matches = name == ROOT
            else:
                matches = name == prefix or name.startswith(prefix + ".")
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {name} is in no layer: add it to LAYERS in {__file__}")
    return best


def resolve_relative(module: str, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imported(module: str) -> Iterator[tuple[str, int]]:
    """The smto modules `module` imports, with the line of each import."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from targets(module, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = resolve_relative(module, node.level, node.module)
            for alias in node.names:
                yield from targets(module, base, alias.name, node.lineno)


def targets(importer: str, name: str, member: str | None, line: int) -> Iterator[tuple[str, int]]:
    if name != ROOT and not name.startswith(ROOT + "."):
        return
    # `from a.b import c`: c is the submodule a.b.c when there is one, else a name of a.b.
    full = f"{name}.{member}" if member and f"{name}.{member}" in MODULES else name
    if full not in MODULES:
        raise AssertionError(f"{importer} (line {line}) imports {full}, which does not exist")
    if full != importer:
        yield full, line
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: those count as imported too,
    # except the packages the importer itself is inside (they are being imported already).
    parts = full.split(".")
    for end in range(1, len(parts)):
        package = ".".join(parts[:end])
        if not (importer == package or importer.startswith(package + ".")):
            yield package, line


def graph() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for module in MODULES:
        for target, line in imported(module):
            edges[module].setdefault(target, line)
    return edges


def tangles(edges: dict[str, dict[str, int]]) -> list[set[str]]:
    """The groups of modules that import each other (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    return components


def cycle_in(component: set[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the alphabetically first module of a strongly connected set."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(edges[node]):
                if succ not in component:
                    continue
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if succ not in previous:
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # impossible for a strongly connected set


def describe(cycle: list[str], edges: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {edges[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_cycles():
    edges = graph()
    found = [
        f"{describe(cycle_in(tangle, edges), edges)}\n    (modules in this tangle: "
        f"{', '.join(sorted(tangle))})"
        for tangle in tangles(edges)
    ]
    assert not found, "import cycles:\n" + "\n".join(found)


def test_no_upward_imports():
    edges = graph()
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]}) at line {line}"
        for module, targets_ in sorted(edges.items())
        for target, line in sorted(targets_.items())
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import smto.report.tables\n", {"smto.report", "smto.report.tables"}),
        ("from smto.sweep import plan\n", {"smto.sweep", "smto.sweep.plan"}),
        ("from smto.problems import Metric\n", {"smto.problems"}),
        ("def f():\n    from smto import registry\n", {"smto.registry"}),
        (
            "import typing\nif typing.TYPE_CHECKING:\n    from smto.sweep import plan\n",
            {"smto.sweep", "smto.sweep.plan"},
        ),
    ],
)
def test_the_parser_sees_every_import(source, expected, tmp_path, monkeypatch):
    """The checks above rely on `imported`: make sure it finds what a module really imports."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "smto.cli", path)  # a module at the top: it may import anything
    assert {target for target, _ in imported("smto.cli")} == expected
