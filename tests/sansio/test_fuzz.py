"""Run the atheris harness briefly, so that it keeps working (and keeps finding nothing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

# A plain import, not importorskip: atheris is in the test extra, and a missing
# one must fail this module, never skip it quietly.
import atheris  # noqa: F401
import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESS = FUZZ / "fuzz_connection.py"
CRASH = 77  # libFuzzer's exit code for a crash (an uncaught exception)


def run(args: list[str], cwd: Path, script: Path = HARNESS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,  # crash-* files, if any, land here and not in the repository
        capture_output=True,
        text=True,
        timeout=120,
    )


#: Each harness, its seeds, and its dictionary (if any).
HARNESSES = {
    "http1": (HARNESS, "seeds", ["-dict=" + str(FUZZ / "http.dict")]),
    "http2": (FUZZ / "fuzz_h2.py", "seeds_h2", []),
}


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_fuzzing_for_a_few_seconds_finds_nothing(tmp_path: Path, name: str) -> None:
    script, seeds, extra = HARNESSES[name]
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / seeds, corpus)
    proc = run(["-max_total_time=5", *extra, str(corpus)], tmp_path, script=script)
    crashes = sorted(tmp_path.glob("crash-*"))
    detail = "".join(f"\n{c.name}: {c.read_bytes()!r}" for c in crashes)
    assert proc.returncode == 0, proc.stderr[-6000:] + detail
    assert not crashes, detail
    assert "Done" in proc.stderr


def test_every_seed_runs_clean(tmp_path: Path) -> None:
    seeds = sorted(str(p) for p in (FUZZ / "seeds").iterdir())
    assert len(seeds) >= 10
    proc = run(seeds, tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]


@pytest.mark.parametrize(
    ("module", "core"),
    [("fuzz_connection", "ServerConnection"), ("fuzz_h2", "H2Connection")],
    ids=["http1", "http2"],
)
def test_the_harness_reports_an_exception_as_a_crash(
    tmp_path: Path, module: str, core: str
) -> None:
    """A core that raised on peer bytes must make the harness fail."""
    wrapper = tmp_path / "broken_core.py"
    wrapper.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(FUZZ)!r})
            import {module} as harness

            real = harness.{core}.receive_data

            def receive_data(self, data):
                if b"BOOM" in data:
                    raise RuntimeError("BOOM")
                return real(self, data)

            harness.{core}.receive_data = receive_data
            harness.main()
            """
        )
    )
    sample = tmp_path / "input"
    sample.write_bytes(b"\x00BOOM")
    proc = run([str(sample)], tmp_path, script=wrapper)
    assert proc.returncode == CRASH, proc.stderr[-3000:]
    assert "RuntimeError: BOOM" in proc.stdout + proc.stderr
