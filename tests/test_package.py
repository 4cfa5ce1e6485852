"""The package's shape: no import cycles, and export lists that name what is there.

A cycle hidden in a function-level import still ties two modules together (neither can be
read, moved or tested without the other) and breaks as soon as one of them imports the
other at the top, so the graph counts every import statement wherever it stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import prototok

ROOT = Path(prototok.__file__).parent


def module_name(path: Path) -> str:
    parts = ["prototok", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The prototok modules one file imports: at the top, in functions, under TYPE_CHECKING alike.
    `from . import x` counts as importing the submodule x where there is one, else the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
    return (found & modules) - {name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "prototok.client" in graph["prototok.cli"]  # imported inside a function
    assert "prototok.experiments.paper" in graph["prototok.experiments.capacity"]  # from . import paper
    assert "prototok" in graph["prototok.client"]  # from . import __version__: the package itself
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_package_exports_are_what_it_lazily_imports():
    assert sorted(prototok.__all__) == sorted(prototok._WHERE)
    for name in prototok.__all__:
        assert getattr(prototok, name) is not None


def test_module_export_lists_name_real_things():
    from prototok import models

    assert all(hasattr(models, name) for name in models.__all__)


def test_the_core_imports_no_higher_layer():
    """prototok/ is the lowest layer: no file imports service/, app/ or worker/, not even inside a
    function (the service's `prototok keys` reaches the CLI through an entry point instead)."""
    higher = ("service", "app", "worker")
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            found += [f"{path.relative_to(ROOT.parent)}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] in higher]
    assert found == []


def test_the_service_registers_its_cli_commands_through_an_entry_point():
    from importlib.metadata import entry_points

    from typer.testing import CliRunner

    from prototok.cli import COMMANDS_GROUP, app

    assert {ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)} == {"keys": "service.cli:keys_app"}
    result = CliRunner().invoke(app, ["keys", "--help"])
    assert result.exit_code == 0 and "create" in result.output and "revoke" in result.output
