"""The package's shape: imports run one way between layers, no import cycles, small modules,
every subpackage documented (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "batchd"

# Lowest first. A module may import its own layer and the layers below it, never above.
# "core" is the handful of modules at the top of batchd/ that everything may use.
LAYERS = [
    "core",
    "config",
    "storage",
    "state",
    "cache",
    "backends",
    "planning",
    "intake",
    "output",
    "quality",
    "run",
    "triggers",
    "distributed",
    "cli",
]
MAX_TOP_LEVEL_MODULES = 6
MAX_MODULE_LINES = 450


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """Every batchd module a module imports, anywhere in it (functions included)."""
    known = set(known)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            names = [n for n in names[:-1] if n in known] or [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        deps = imported(ast.parse(path.read_text(encoding="utf-8")), mods)
        graph[name] = {d for d in deps if d != name}
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) <= 2 and parts[-1] not in LAYERS:
        return "core"  # batchd itself and the modules at its top
    return parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        mine = LAYERS.index(layer_of(mod))
        for dep in deps:
            theirs = LAYERS.index(layer_of(dep))
            if theirs > mine:
                bad.append(f"{mod} ({LAYERS[mine]}) imports {dep} ({LAYERS[theirs]})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# -- the checker itself can fail -----------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "batchd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "batchd"


def test_checker_finds_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "state/__init__.py": "",
            "state/base.py": "def f():\n    from batchd.run import pipeline\n",
            "run/__init__.py": "",
            "run/pipeline.py": "import batchd.run.dispatch\n",
            "run/dispatch.py": "from batchd.run.pipeline import x\nfrom batchd import errors\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["batchd.run.dispatch"] == {"batchd.run.pipeline", "batchd.errors"}
    assert upward_imports(graph) == ["batchd.state.base (state) imports batchd.run.pipeline (run)"]
    assert cycles(graph) == [["batchd.run.dispatch", "batchd.run.pipeline"]]


# -- the real package ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_every_subpackage_is_a_known_layer(graph: dict[str, set[str]]) -> None:
    layers = {layer_of(m) for m in graph}
    assert layers <= set(LAYERS), layers - set(LAYERS)
    assert set(LAYERS) - {"core"} <= layers, "a documented layer has no package"


def test_imports_run_one_way(graph: dict[str, set[str]]) -> None:
    assert upward_imports(graph) == []


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_workers_use_only_the_distributed_entry_points() -> None:
    known = modules(PACKAGE)
    for path in sorted((ROOT / "workers").glob("*.py")):
        deps = imported(ast.parse(path.read_text(encoding="utf-8")), known)
        assert {layer_of(d) for d in deps} <= {"core", "config", "backends", "distributed"}, path


def test_few_modules_at_the_top_and_none_too_long() -> None:
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_two_module_names_differ_only_by_a_suffix() -> None:
    stems = {p.stem for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    clashes = sorted((a, b) for a in stems for b in stems if a != b and b.startswith(a))
    assert clashes == []  # e.g. plan / planner, or store / store_redis


def test_every_subpackage_says_what_it_owns_and_is_on_the_map() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            continue
        text = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert text and "May import" in text, f"{init}: docstring must say what it may import"
        name = ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        assert f"`{name.removeprefix('batchd.').replace('.', '/')}/`" in doc, name
