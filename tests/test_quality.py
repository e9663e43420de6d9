"""Code quality gates: the core stays I/O-free and typed; neither package has an
import circle; trio_push uses no private name of the core; no code is repeated
between the two packages' modules; everything is linted and formatted."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "sansio_push"
DRIVER = ROOT / "trio_push"

#: What the protocol core must not import: it does no I/O and picks no event loop.
FORBIDDEN = {"socket", "threading", "asyncio", "trio"}
#: Also kept out of the core's own source (``_thread`` is preloaded by CPython,
#: so it is only checked here, not in sys.modules).
FORBIDDEN_IN_SOURCE = FORBIDDEN | {
    "_thread",
    "select",
    "selectors",
    "ssl",
    "multiprocessing",
    "concurrent",
    "anyio",
    "curio",
    "subprocess",
    "importlib",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_importing_the_core_loads_no_socket_thread_or_event_loop_module() -> None:
    # h2 and hpack log through the standard logging module, which imports
    # threading for its locks: what logging loads is not the core's doing.
    code = (
        "import sys, logging; before = set(sys.modules); import sansio_push; "
        "print(sorted(m for m in set(sys.modules) - before"
        f" if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"sansio_push pulled in: {proc.stdout}"


def core_imports() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "__import__"
            ):
                names = ["__import__"]
            else:
                continue
            found += [(path.name, node.lineno, name) for name in names]
    return found


def test_core_source_imports_no_io_or_concurrency_module() -> None:
    imports = core_imports()
    assert any(name == "h11" for _, _, name in imports)  # the scan sees imports at all
    bad = [
        f"{file}:{line}: {name}"
        for file, line, name in imports
        if name.split(".")[0] in FORBIDDEN_IN_SOURCE or name == "__import__"
    ]
    assert not bad, "\n".join(bad)


def test_mypy_strict_is_clean_on_the_core() -> None:
    proc = run("-m", "mypy", "--strict", "sansio_push")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check_is_clean() -> None:
    proc = run("-m", "ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "target", ["trio_push", "sansio_push", "tests", "bench", "fuzz", "examples"]
)
def test_ruff_format_is_clean(target: str) -> None:
    proc = run("-m", "ruff", "format", "--check", "--diff", target)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- import circles ------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return any(
        (isinstance(n, ast.Name) and n.id == "TYPE_CHECKING")
        or (isinstance(n, ast.Attribute) and n.attr == "TYPE_CHECKING")
        for n in ast.walk(test)
    )


def _imports(
    body: Iterable[ast.AST], where: str
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import in the statements ``body``, and where it sits: at module
    level, under ``if TYPE_CHECKING:``, or in a function. The last two hide a
    circle from the interpreter, not from the design: they count the same."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, where
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, "in a function")
        elif (
            isinstance(node, ast.If) and where == "at module level" and _is_type_checking(node.test)
        ):
            yield from _imports(node.body, "under TYPE_CHECKING")
            yield from _imports(node.orelse, where)
        else:  # the statements inside a class, if, try, with, for or while
            for field in ("body", "orelse", "handlers", "finalbody"):
                yield from _imports(getattr(node, field, []), where)


#: Where a module imports another: its file, the line, and at module level,
#: under TYPE_CHECKING or in a function.
Site = tuple[str, int, str]


def _site(site: Site) -> str:
    return "{}:{}, {}".format(*site)


def import_graph(package: Path) -> dict[str, dict[str, Site]]:
    """``{module: {imported module: where}}`` for the modules of the
    package in folder ``package``, counting only the imports of its own modules."""
    name = package.name
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = [name, *path.relative_to(package).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)

    def own(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, dict[str, Site]] = {}
    for module, (path, is_package) in modules.items():
        edges = graph[module] = {}
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, where in _imports(tree.body, "at module level"):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [own(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[: None if is_package else -1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else own(base))
            for target in targets:
                if target and target != module and target not in edges:
                    edges[target] = (str(path.relative_to(package.parent)), node.lineno, where)
    return graph


def import_circles(package: Path) -> list[str]:
    """For each set of the package's modules that import each other, directly or
    around: one circle (``a -> b (file:line, where) -> a``), then every import
    inside the set, each one a place where the set could be cut."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            group.append(module)
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    circles = []
    for group in groups:
        way = _way_around(graph, group[0], set(group))
        steps = [f"{b} ({_site(graph[a][b])})" for a, b in zip(way, way[1:], strict=False)]
        inside = sorted((graph[a][b], a, b) for a in group for b in graph[a] if b in group)
        circles.append(
            " -> ".join([way[0], *steps])
            + f"\n  one of the circles among {', '.join(group)}; their imports of each other:"
            + "".join(f"\n    {_site(at)}: {a} imports {b}" for at, a, b in inside)
        )
    return circles


def _way_around(graph: dict[str, dict[str, Site]], start: str, members: set[str]) -> list[str]:
    """The shortest list of modules from ``start`` back to it, through ``members``."""
    paths = {start: [start]}
    queue = [start]
    for here in queue:  # breadth first: the queue grows while it is read
        for target in sorted(graph[here]):
            if target == start:
                return [*paths[here], start]
            if target in members and target not in paths:
                paths[target] = [*paths[here], target]
                queue.append(target)
    raise AssertionError(f"no way around from {start}: not a circle")


@pytest.mark.parametrize("package", [CORE, DRIVER], ids=lambda path: path.name)
def test_no_import_circle_inside_the_package(package: Path) -> None:
    assert import_graph(package), f"no modules found in {package}"
    circles = import_circles(package)
    assert not circles, "import circles:\n" + "\n".join(circles)


def write_package(root: Path, files: dict[str, str], name: str = "pkg") -> Path:
    package = root / name
    for name, source in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return package


def test_the_circle_check_finds_one_through_type_checking(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "from ._a import A\n",
            "_a.py": "from ._b import B\nclass A: ...\n",
            "_b.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg._a import A
                class B: ...
            """,
        },
    )
    [circle] = import_circles(package)
    assert circle.startswith("pkg._a -> pkg._b (pkg/_a.py:1, at module level)")
    assert "-> pkg._a (pkg/_b.py:4, under TYPE_CHECKING)" in circle


def test_the_circle_check_finds_one_through_a_function_local_import(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "_a.py": "from . import _b\n",
            "_b.py": "import pkg._c\n",
            "_c.py": """
                def later():
                    from ._a import thing
                    return thing
            """,
        },
    )
    [circle] = import_circles(package)
    assert circle.startswith("pkg._a -> pkg._b (pkg/_a.py:1, at module level)")
    assert "-> pkg._c (pkg/_b.py:1, at module level)" in circle
    assert "-> pkg._a (pkg/_c.py:3, in a function)" in circle


def test_the_circle_check_passes_a_package_without_one(tmp_path: Path) -> None:
    # Every way of importing a module of the package, none of them around.
    package = write_package(
        tmp_path,
        {
            "__init__.py": "from ._a import A\nfrom .sub import C\n",
            "_a.py": """
                from typing import TYPE_CHECKING
                import pkg._b
                if TYPE_CHECKING:
                    from .sub._c import C
                class A:
                    def use(self):
                        from . import _b
                        return _b
            """,
            "_b.py": "import os\n",
            "sub/__init__.py": "from ._c import C\n",
            "sub/_c.py": "from .. import _b\nfrom pkg._b import os\nclass C: ...\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg._a"] == {
        "pkg._b": ("pkg/_a.py", 3, "at module level"),
        "pkg.sub._c": ("pkg/_a.py", 5, "under TYPE_CHECKING"),
    }
    assert set(graph["pkg.sub._c"]) == {"pkg._b"}
    assert import_circles(package) == []


# -- what trio_push may use of the core ------------------------------------------------


def private_core_uses(folder: Path, core: str = "sansio_push") -> list[str]:
    """Where the modules in ``folder`` reach a private name of ``core``:
    ``from core._x import``, ``from core import _x``, ``import core._x``, or
    ``core._x`` / ``alias._x`` once ``core`` is imported (dunders are fine)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    found: list[tuple[str, int, str]] = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = {core}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.asname for a in node.names if a.name == core and a.asname}
        for node in ast.walk(tree):
            bad = []
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.startswith(f"{core}._")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.startswith(f"{core}._"):
                    bad = [node.module]
                elif node.module == core:
                    bad = [f"{core}.{a.name}" for a in node.names if private(a.name)]
            elif (
                isinstance(node, ast.Attribute)
                and private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
            ):
                bad = [f"{node.value.id}.{node.attr}"]
            found += [(str(path.relative_to(folder.parent)), node.lineno, name) for name in bad]
    return [f"{path}:{line}: {name}" for path, line, name in sorted(found)]


def test_trio_push_uses_no_private_name_of_the_core() -> None:
    assert import_graph(DRIVER)["trio_push._client"], "the scan sees trio_push's imports"
    found = private_core_uses(DRIVER)
    assert not found, "sansio_push's private names, used by trio_push:\n" + "\n".join(found)


def test_the_private_name_check_finds_each_way_in(tmp_path: Path) -> None:
    folder = tmp_path / "driver"
    folder.mkdir()
    (folder / "uses.py").write_text(
        textwrap.dedent(
            """
            import sansio_push
            import sansio_push as sp
            import sansio_push._frames
            from sansio_push import Config, _codes
            from sansio_push._env import build
            from sansio_push import __version__
            sp.prepare, sp.__all__, sansio_push.Config
            sp._wsfast.x
            sansio_push._fast
            """
        )
    )
    assert private_core_uses(folder) == [
        "driver/uses.py:4: sansio_push._frames",
        "driver/uses.py:5: sansio_push._codes",
        "driver/uses.py:6: sansio_push._env",
        "driver/uses.py:9: sp._wsfast",
        "driver/uses.py:10: sansio_push._fast",
    ]


# -- repeated code -------------------------------------------------------------------


def repeated_code(*folders: Path) -> str:
    """pylint's similarity checker on ``folders``: every run of 6 lines or more
    that stands in two modules, imports, docstrings, comments and signatures
    aside; its report, empty if there is none."""
    proc = run(
        "-m",
        "pylint",
        "--disable=all",
        "--enable=duplicate-code",
        "--min-similarity-lines=6",
        "--ignore-imports=yes",
        "--ignore-docstrings=yes",
        "--ignore-signatures=yes",
        "--ignore-comments=yes",
        "--score=no",
        *map(str, folders),
    )
    # Exit status 8 is "refactoring messages issued" (duplicate-code is one); anything else
    # is pylint failing.
    assert proc.returncode in (0, 8), proc.stdout + proc.stderr
    return proc.stdout


def test_no_code_is_repeated_between_the_modules_of_the_two_packages() -> None:
    report = repeated_code(CORE, DRIVER)
    assert not report, report


def test_the_repeated_code_check_finds_a_repeated_block(tmp_path: Path) -> None:
    block = """
        def {name}(items, limit):
            total = 0
            for item in items:
                if item.size > limit:
                    total += item.size * 2
                else:
                    total -= item.size
            return total
        """
    one, two = (
        write_package(tmp_path, {"__init__.py": "", "_m.py": block.format(name=f)}, package)
        for package, f in (("one", "first"), ("two", "second"))
    )
    report = repeated_code(one, two)
    assert "R0801" in report and "==one._m:" in report and "==two._m:" in report, report
