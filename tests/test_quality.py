"""Code quality gates: the core stays I/O-free, typed, linted and formatted."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "sansio_push"

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
    code = (
        "import sys; import sansio_push; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
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


@pytest.mark.parametrize("target", ["sansio_push", "tests", "fuzz"])
def test_ruff_format_is_clean(target: str) -> None:
    proc = run("-m", "ruff", "format", "--check", "--diff", target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
