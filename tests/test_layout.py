"""The package's structure, read from its source: every ``import`` statement of every module,
function-local and ``TYPE_CHECKING`` ones included (a cycle hidden inside a function is still a
cycle), parsed with :mod:`ast` without importing anything.

* no import cycles;
* no module imports another module's underscore names (``from .x import _y`` or ``x._y``);
* every module stands on its floor: it imports only from rooms on lower floors, or from its own
  room (README, "Layout").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import logit_processors

PACKAGE_DIR = Path(logit_processors.__file__).parent
ROOT = "logit_processors"

#: The floors, bottom up; a room is a top-level module or subpackage of ``logit_processors``.
#: A module imports only from its own room or from rooms on lower floors (rooms on one floor
#: never import each other).
FLOORS: list[set[str]] = [
    {"numerics", "validate", "version", "optional"},  # ground: numbers, argument checks
    {"core", "models"},  # the processor contract; loading models, model identity, the test GPT-2
    {"processors", "runtime"},  # stateless processors; running models beside generate()
    {"ensemble"},  # processors that run other models
    {"gaps", "calibration"},  # analysis: gap statistics and monitors; temperature scaling
    {"detection", "spec"},  # attack detection (uses gaps); processors as JSON (uses calibration)
    {"report"},  # presentation: tables, HTML, plots
    {"cli", "vllm"},  # the command line; the vLLM adapters (import vllm only when used)
    {"__main__"},
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def is_package(name: str) -> bool:
    return name in MODULES and MODULES[name].name == "__init__.py"


def room(name: str) -> str | None:
    """The top-level room of a module (``None`` for the package's own ``__init__``)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, source: str | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """``(edges, private uses)``: the package modules ``name`` imports (with line numbers), and a
    description of every underscore name it takes from another module. ``source``: the module's
    text (default: read from its file)."""
    if source is None:
        source = MODULES[name].read_text(encoding="utf-8")
    tree = ast.parse(source)
    edges: list[tuple[str, int]] = []
    problems: list[str] = []
    module_aliases: dict[str, str] = {}  # local name -> package module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    edges.append((alias.name, node.lineno))
                    if alias.asname:
                        module_aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            if source != ROOT and not source.startswith(ROOT + "."):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:  # `from . import numerics`: the module itself
                    edges.append((submodule, node.lineno))
                    module_aliases[alias.asname or alias.name] = submodule
                    continue
                edges.append((source, node.lineno))
                if private(alias.name):
                    problems.append(f"{name}:{node.lineno} imports {alias.name} from {source}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            target = module_aliases.get(node.value.id)
            if target is not None and private(node.attr):
                problems.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr} of {target}")
    return edges, problems


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_reader_sees_hidden_imports_and_private_names():
    # The checks below are only as good as this reader: a function-local import, a
    # TYPE_CHECKING import and a private attribute of an imported module must all be seen.
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .. import numerics\n"
        "if TYPE_CHECKING:\n"
        "    from ..report.html import trace_html\n"
        "def f():\n"
        "    from ..core import _hidden\n"
        "    return numerics._private(1)\n"
    )
    edges, problems = imports_of("logit_processors.gaps.stats", source)
    assert {t for t, _ in edges} == {"logit_processors.numerics", "logit_processors.report.html", "logit_processors.core"}
    assert len(problems) == 2 and "_hidden" in problems[0] and "numerics._private" in problems[1]


def test_no_import_cycles():
    # Tarjan's strongly connected components over the module graph.
    graph = {name: sorted({t for t, _ in GRAPH[name][0] if t in MODULES and t != name}) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_across_modules():
    problems = [p for name in MODULES for p in GRAPH[name][1]]
    assert not problems, "\n".join(problems)


def test_every_room_has_a_floor():
    rooms = {room(name) for name in MODULES} - {None}
    assert rooms <= set(FLOOR), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR))}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if room(n) is not None))
def test_imports_stay_on_or_below_their_floor(name):
    here = room(name)
    wrong = []
    for target, line in GRAPH[name][0]:
        there = room(target)
        if there == here:
            continue
        if there is None:
            wrong.append(f"line {line}: {target} (the package's public face: import from the module that defines it)")
        elif FLOOR[there] >= FLOOR[here]:
            wrong.append(f"line {line}: {target} (room {there!r}, floor {FLOOR[there]}; {here!r} is on {FLOOR[here]})")
    assert not wrong, f"{name} imports upward or sideways:\n" + "\n".join(wrong)


def test_modules_stay_small():
    # ~500 lines at most; a module over that says why in its docstring (none over 650).
    too_long = []
    for name, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > 650 or (lines > 520 and "lines" not in doc):
            too_long.append(f"{name}: {lines} lines")
    assert not too_long, too_long


def test_few_skipped_docstring_examples():
    # Examples that need a real model are the only ones allowed to skip (each is also run by a test).
    skipped = sum(p.read_text(encoding="utf-8").count("doctest: +SKIP") for p in MODULES.values())
    assert skipped <= 15, f"{skipped} docstring example lines are skipped"


def test_the_public_face():
    # Every public name resolves from the top level, including those users reached by module path.
    missing = [name for name in logit_processors.__all__ if not hasattr(logit_processors, name)]
    assert not missing, missing
    for name in ("RefusalGap", "Trace", "token_stats", "gap_stats", "combine_log_probs", "__version__"):
        assert name in logit_processors.__all__, name
