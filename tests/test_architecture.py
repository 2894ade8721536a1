"""Architecture rules, checked on the source with ``ast`` (no module is imported):

* the package's import graph has no cycle, lazy imports inside functions included (only ``if
  TYPE_CHECKING:`` blocks are left out: they never run);
* the package's top level holds only its public face (``__init__``, ``__main__``, ``_version``);
* every function in the package, ``tools/`` and ``tests/`` is at most 60 lines, decorators and
  docstring included;
* no two modules share a file name, and no module shares its name with a package.

Each checker also runs on a small package written to ``tmp_path``, so that a rule that stopped
finding anything would show here.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "detect_ft"
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "_version.py"}
MAX_FUNCTION_LINES = 60


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root/package`` (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


class _ImportEdges(ast.NodeVisitor):
    """The modules of the package that one module imports, anywhere in it but ``if TYPE_CHECKING:``.

    Importing ``a.b.c`` runs ``a`` and ``a.b`` too, so those are edges as well, except the importer's own
    ancestors: Python is already running them when the importer runs. An ancestor is an edge only when
    a name is taken from it that is not a submodule (``from detect_ft import Detector``), which needs
    the ancestor's ``__init__`` to have run that far.
    """

    def __init__(self, name: str, modules: dict[str, Path], package: str):
        self.name, self.modules, self.package = name, modules, package
        self.edges: set[str] = set()

    def _is_ancestor(self, module: str) -> bool:
        return self.name.startswith(module + ".")

    def _add(self, target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in self.modules and module != self.name and not self._is_ancestor(module):
                self.edges.add(module)

    def _in_package(self, module: str) -> bool:
        return module == self.package or module.startswith(self.package + ".")

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._in_package(alias.name):
                self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            base = self.name.split(".")
            if self.modules[self.name].name != "__init__.py":
                base.pop()
            base = base[: len(base) - node.level + 1]
            module = ".".join(base + ([module] if module else []))
        if not self._in_package(module):
            return
        self._add(module)
        names = [f"{module}.{alias.name}" for alias in node.names]
        if self._is_ancestor(module) and any(name not in self.modules for name in names):
            self.edges.add(module)
        for name in names:
            if name in self.modules:
                self._add(name)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see :class:`_ImportEdges`), for every module of
    ``root/package``."""
    modules = module_files(root, package)
    graph = {}
    for name, path in modules.items():
        visitor = _ImportEdges(name, modules, package)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[name] = visitor.edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, component) for component in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest path from the component's first module (sorted) back to itself, within the component."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"{sorted(component)} is no strongly connected component")


def long_functions(paths: Iterable[Path], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name (N lines)`` of every function or method longer than ``limit`` lines, counted
    from its first decorator (else its ``def``) to its last line, docstring and blank lines included."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                lines = node.end_lineno - start + 1
                if lines > limit:
                    found.append(
                        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{start} "
                        f"{node.name} ({lines} lines)"
                    )
    return found


def name_clashes(root: Path, package: str) -> list[str]:
    """File names (but ``__init__.py``) used by two modules, and module names that are also package names."""
    files = [p for p in (root / package).rglob("*.py") if p.name != "__init__.py"]
    packages = {p.parent.name for p in (root / package).rglob("__init__.py")}
    counts = Counter(p.name for p in files)
    clashes = [
        f"{name}: {sorted(p.relative_to(root).as_posix() for p in files if p.name == name)}"
        for name in sorted(counts)
        if counts[name] > 1
    ]
    clashes += [
        f"{p.relative_to(root).as_posix()} has the name of a package" for p in sorted(files) if p.stem in packages
    ]
    return clashes


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_package_import_graph_has_no_cycle():
    cycles = import_cycles(import_graph(ROOT, PACKAGE))
    assert not cycles, "import cycles (lazy imports count): " + "; ".join(" -> ".join(c) for c in cycles)


def package_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The module graph folded to the package's direct sub-packages (``detect_ft.data.formats.coco`` ->
    ``detect_ft.data``); the top-level public face (``detect_ft`` itself) is left out, since it only
    re-exports."""

    def folded(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == package or module == f"{package}.__main__":
            continue
        source = folded(module)
        packages.setdefault(source, set()).update(folded(t) for t in targets if t != package and folded(t) != source)
    return packages


def test_packages_depend_on_each_other_in_one_direction():
    """docs/architecture.md's layering: no two packages import each other, however indirectly."""
    cycles = import_cycles(package_graph(import_graph(ROOT, PACKAGE), PACKAGE))
    assert not cycles, "package cycles (move the shared piece down a layer): " + "; ".join(
        " -> ".join(c) for c in cycles
    )


def test_package_graph_folds_modules_into_their_packages(tmp_path):
    _write(
        tmp_path,
        {
            "toy/__init__.py": "from toy.api import run\n",
            "toy/api/__init__.py": "",
            "toy/api/run.py": "from toy.data.formats import coco\n",
            "toy/data/__init__.py": "",
            "toy/data/formats/__init__.py": "",
            "toy/data/formats/coco.py": "def read():\n    from toy.api import run\n",
        },
    )
    packages = package_graph(import_graph(tmp_path, "toy"), "toy")
    assert packages["toy.api"] == {"toy.data"} and packages["toy.data"] == {"toy.api"}
    assert import_cycles(packages) == [["toy.api", "toy.data", "toy.api"]]


def test_import_graph_finds_lazy_and_package_level_cycles(tmp_path):
    _write(
        tmp_path,
        {
            "toy/__init__.py": "from toy.api import run\n",
            "toy/api.py": "def run():\n    from toy.core import engine\n",  # lazy: still an edge
            "toy/core/__init__.py": "",
            "toy/core/engine.py": "from .. import api\n",  # relative, a submodule: edge to toy.api
            "toy/util.py": "from toy import run\n",  # a name of toy's __init__: edge to toy
            "toy/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy import util\n",
            "toy/core/leaf.py": "from toy.core import engine\nfrom . import engine as e\n",
        },
    )
    graph = import_graph(tmp_path, "toy")
    assert graph["toy.api"] == {"toy.core", "toy.core.engine"}
    assert graph["toy.core.engine"] == {"toy.api"}
    assert graph["toy.util"] == {"toy"} and graph["toy.typed"] == set()
    assert graph["toy.core.leaf"] == {"toy.core.engine"}, "its own package's submodule: not an edge to toy.core"
    assert import_cycles(graph) == [["toy.api", "toy.core.engine", "toy.api"]]
    (tmp_path / "toy" / "core" / "engine.py").write_text("import os\n")
    assert import_cycles(import_graph(tmp_path, "toy")) == []


def test_top_level_holds_only_the_public_face():
    extra = sorted(p.name for p in (ROOT / PACKAGE).glob("*.py") if p.name not in TOP_LEVEL_MODULES)
    assert not extra, f"modules at the top of {PACKAGE}/ (move them into a sub-package): {extra}"


def test_functions_are_at_most_60_lines():
    paths = [p for folder in (PACKAGE, "tools", "tests") for p in sorted((ROOT / folder).rglob("*.py"))]
    offenders = long_functions(paths)
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (split them): {offenders}"


def test_long_functions_counts_decorators_and_docstrings(tmp_path):
    def lines(count: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(count))

    sixty = '@staticmethod\ndef sixty():\n    """doc"""\n' + lines(57, "    ")
    sixty_one = '@staticmethod\ndef sixty_one():\n    """doc"""\n' + lines(58, "    ")
    method = "class C:\n    async def method(self):\n" + lines(60, "        ")
    path = _write(tmp_path, {"m.py": sixty + sixty_one + method}) / "m.py"
    assert [line.split()[1] for line in long_functions([path])] == ["sixty_one", "method"]


def test_module_names_are_unique():
    clashes = name_clashes(ROOT, PACKAGE)
    assert not clashes, f"module names used twice (rename one): {clashes}"


def test_name_clashes_are_found(tmp_path):
    names = ["toy/__init__.py", "toy/a/__init__.py", "toy/a/io.py", "toy/b/__init__.py", "toy/b/io.py", "toy/a.py"]
    _write(tmp_path, dict.fromkeys(names, ""))
    assert name_clashes(tmp_path, "toy") == [
        "io.py: ['toy/a/io.py', 'toy/b/io.py']",
        "toy/a.py has the name of a package",
    ]
