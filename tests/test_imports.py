"""No import circle in attendance_kit/: each module can be read, and loaded, after the ones it imports.

Imports inside functions count too: a circle closed by a function-level import is still a circle a reader must
untangle, and it only moves the failure from import time to the first call. (The kit's function-level imports of
heavy third-party packages, pandas, sqlalchemy, IPython, websockets, are outside the graph anyway.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import attendance_kit

PACKAGE_DIR = Path(attendance_kit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_imports(source: str, module: str, modules: set[str], is_package: bool = False) -> set[str]:
    """The modules of `modules` that `module` imports, anywhere in its source (module level or in functions).

    `from a import x` imports the module `a.x` when there is one, else the name x from `a`. The parent packages
    Python loads before a module are no edge of their own (else every package importing its submodules would be
    a circle); a module that names one, `from .. import x`, imports it.
    """
    # A package's relative imports start from the package itself, a module's from the package that holds it.
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names)
    return {target for target in targets if target in modules} - {module}


def import_graph() -> dict[str, set[str]]:
    """Each module of the kit, with the kit's modules it imports."""
    paths = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}
    return {name: kit_imports(path.read_text(encoding="utf-8"), name, set(paths), path.name == "__init__.py")
            for name, path in paths.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A circle of imports as the modules along it, first repeated at the end (a -> b -> a), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> Iterator[list[str]]:
        if node in path:
            yield path[path.index(node):] + [node]
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            yield from visit(target, path + [node])
        done.add(node)

    for start in sorted(graph):
        for cycle in visit(start, []):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_only_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_imports_are_read_relative_and_absolute_at_any_depth() -> None:
    modules = {"kit", "kit.a", "kit.pkg", "kit.pkg.b", "kit.pkg.m", "kit.c", "kit.c.d"}
    source = ("import json\nimport kit.a\nfrom .. import c\nfrom . import b\n\n"
              "def later():\n    from ..c.d import name_in_d\n    from .. import name_in_kit\n")
    assert kit_imports(source, "kit.pkg.m", modules) == {"kit.a", "kit.c", "kit.pkg.b", "kit.c.d", "kit"}
    assert kit_imports("from . import b\nfrom ..c import d\n", "kit.pkg", modules, is_package=True) == {
        "kit.pkg.b", "kit.c.d"}
    graph = import_graph()
    assert "attendance_kit.errors" in graph["attendance_kit.connection"]  # from .errors import KitError
    assert "attendance_kit.bench.startup" in graph["attendance_kit.cli"]  # from .bench import startup
    assert "attendance_kit.server" in graph["attendance_kit.bench.startup"]  # from ..server import Cluster
    assert "attendance_kit.server" in graph["attendance_kit.connection"]  # inside database_url()


def test_the_kit_has_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
