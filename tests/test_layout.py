"""The package's shape: imports run one way between modules (no cycle, lazy imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mparticle_feed

PACKAGE = Path(mparticle_feed.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["mparticle_feed", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that can run, at module level or inside a function, but not for types only."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    edges: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import name` imports the submodule pkg.name when there is one.
            targets = [
                f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix
                for alias in node.names
            ]
        edges.update(target for target in targets if target in MODULES and target != module)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import() -> None:
    tree = ast.parse("def f():\n    from .b import x\n")
    assert [type(node) for node in _runtime_imports(tree)] == [ast.ImportFrom]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_are_not_runtime_edges() -> None:
    tree = ast.parse("if TYPE_CHECKING:\n    from .b import x\nelse:\n    from .c import y\n")
    assert [node.module for node in _runtime_imports(tree)] == ["c"]  # type: ignore[union-attr]


def test_only_the_top_level_and_the_cli_import_the_package_root() -> None:
    importers = {module for module in MODULES if "mparticle_feed" in imports_of(module)}
    assert importers <= {"mparticle_feed.__main__"}, importers


def test_the_engines_are_imported_only_when_asked_for() -> None:
    # mparticle_feed.spark and mparticle_feed.dask pull in their extras; nothing else may.
    engines = {"mparticle_feed.spark", "mparticle_feed.dask"}
    assert not [module for module in MODULES if imports_of(module) & engines]
    code = (
        "import sys, mparticle_feed, mparticle_feed.testing; "
        "print(sorted(m for m in ('pyspark', 'dask', 'distributed', *sys.argv[1:]) "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *sorted(engines)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"
