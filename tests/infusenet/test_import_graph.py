"""The pack's modules import one another one way only: no module reaches itself through its imports.

The graph is read from the source (``ast``), imports inside functions included, since a lazy import still ties
two modules together; imports under ``if TYPE_CHECKING:`` are left out (they never run). It covers the node
layer (``nodes/``) and the model code (``infusenet/``, its trainer aside: a subsystem of its own)."""
from __future__ import annotations

import ast
from pathlib import Path

from devtools.comfy_env import PACK_ROOT
from tests.host_features import newest_host_only

pytestmark = newest_host_only("reads the pack's source files; nothing is imported")

PACKAGES = ("infusenet", "nodes")
LEFT_OUT = ("infusenet.trainer",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACK_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pack_modules() -> dict[str, Path]:
    found = {module_name(p): p for package in PACKAGES for p in (PACK_ROOT / package).rglob("*.py")}
    return {name: path for name, path in found.items() if not name.startswith(LEFT_OUT)}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of every node under an ``if TYPE_CHECKING:`` block."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules) -> set[str]:
    """The pack modules an import statement in ``module`` loads: ``from .a import b`` -> ``pkg.a.b`` when b is a
    submodule, else ``pkg.a``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & set(modules)
    if node.level == 0:
        base = node.module
    else:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names} & set(modules)


def import_graph() -> dict[str, set[str]]:
    """module -> the pack modules it imports."""
    modules = pack_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = type_checking_nodes(tree)
        graph[name] = set().union(*(
            imported_modules(node, name, path.name == "__init__.py", modules) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports_and_relative_names():
    graph = import_graph()
    assert "infusenet.face.similarity" in graph["infusenet.face.identity"]  # from .similarity import LIKELY_SAME
    assert "infusenet.face.identity" in graph["infusenet.report"]
    assert "infusenet.doctor" in graph["nodes.routes"]  # from ..infusenet import doctor
    assert "infusenet.paths" in graph["infusenet.doctor.report"]  # inside a function
    assert "infusenet.face.identity" not in graph["infusenet.face.similarity"]  # type-checking only


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
