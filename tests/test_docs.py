"""The documentation builds with warnings as errors and covers the public API.

``mkdocs build --strict`` fails on a broken link, a page missing from the
nav, an unknown anchor or an API reference that does not resolve, so the
docs cannot drift from the code unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import sansio_push
import trio_push

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: A fenced Python block right after this marker is run as a script.
RUN_MARKER = re.compile(r"<!-- test: run -->\n```python\n(.*?)```", re.DOTALL)


def run(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def build(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    site = tmp_path_factory.mktemp("site")
    return run("-m", "mkdocs", "build", "--strict", "--site-dir", str(site)), site


def built(build: tuple[subprocess.CompletedProcess[str], Path]) -> Path:
    proc, site = build
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}{proc.stderr}"
    return site


def test_the_docs_build_with_warnings_as_errors(
    build: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    assert (built(build) / "index.html").is_file()


@pytest.mark.parametrize("package", [trio_push, sansio_push], ids=lambda p: p.__name__)
def test_every_public_name_has_an_entry_in_the_api_reference(
    build: tuple[subprocess.CompletedProcess[str], Path], package: object
) -> None:
    html = (built(build) / "api" / "index.html").read_text()
    names = package.__all__  # type: ignore[attr-defined]
    prefix = package.__name__  # type: ignore[attr-defined]
    missing = [name for name in names if f'id="{prefix}.{name}"' not in html]
    assert not missing, f"add '::: {prefix}.NAME' to docs/api.md for: {', '.join(missing)}"


def test_every_command_line_option_is_described() -> None:
    proc = run("-m", "trio_push", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", proc.stdout))
    assert "--port" in options  # the scan sees options at all
    page = (DOCS / "cli.md").read_text()
    missing = sorted(o for o in options if f"`{o}" not in page)
    assert not missing, f"docs/cli.md does not describe: {', '.join(missing)}"


def runnable_examples() -> list[tuple[str, str]]:
    return [
        (f"{path.name}:{n}", code)
        for path in sorted(DOCS.glob("*.md"))
        for n, code in enumerate(RUN_MARKER.findall(path.read_text()), 1)
    ]


@pytest.mark.parametrize(("where", "code"), runnable_examples(), ids=lambda v: v[:30])
def test_runnable_examples_in_the_docs_run(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = run(str(script), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, f"the example in docs/{where} failed:\n{proc.stderr}"
