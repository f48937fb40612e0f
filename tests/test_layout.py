"""The package's layout as a checked rule: the library core never imports the
standalone server, and no two modules import each other (lazy imports
inside functions included; imports only for type checking excluded)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "torchannels"


def module_name(path: Path) -> str:
    parts = ["torchannels", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports when it runs, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("torchannels"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("torchannels"):
                for alias in node.names:  # ``from . import frames`` names a module
                    sub = f"{base}.{alias.name}"
                    found.add(sub if module_path(sub) is not None else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def module_path(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): runtime_imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "torchannels.server.cli" in graph and "torchannels.hub" in graph
    assert "torchannels.hub" in graph["torchannels.session"]
    assert "torchannels.frames" in graph["torchannels.session"]  # from . import frames as F
    assert "torchannels.server.app" in graph["torchannels.server.run"]  # lazy, in a function


def test_the_core_never_imports_the_server() -> None:
    for module, imports in import_graph().items():
        # ``python -m torchannels`` is the command line, so the application.
        if not module.startswith(("torchannels.server", "torchannels.__main__")):
            server = {i for i in imports if i.startswith("torchannels.server")}
            assert not server, f"{module} imports {server}"
    check = "import sys, torchannels; print(sorted(m for m in sys.modules if '.server' in m))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_cycles() -> None:
    graph = import_graph()
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            walk(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


def test_the_testing_kit_stands_apart() -> None:
    """``torchannels.testing`` checks the server from the protocol document
    alone: it imports nothing else of the package, and nothing imports it."""
    for module, imports in import_graph().items():
        kit = {i for i in imports if i.startswith("torchannels.testing")}
        if module.startswith("torchannels.testing"):
            assert not imports - kit, f"{module} imports {imports - kit}"
        else:
            assert not kit, f"{module} imports {kit}"
