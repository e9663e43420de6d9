"""Autobahn|Testsuite's fuzzing client against a trio-push echo server.

By default cases 1-11 (framing, pings, fragmentation, UTF-8, close, limits:
about 15 s once wstest's virtualenv exists). With ``AUTOBAHN_ALL=1`` also
12-13 (permessage-deflate) against a server with compression on (several
minutes). wstest lives in a Python 2.7 virtualenv, built on first use (see
tests/helpers/wstest_venv.py); if it cannot be built the test fails and says
why. See docs/autobahn.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.apps import autobahn_echo as echo
from tests.helpers import wstest_venv
from tests.helpers.procs import free_port, running

AGENT = "trio-push"
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# UNIMPLEMENTED is what wstest reports for a case whose feature the server
# did not negotiate: fine for groups 1-11 (nothing there needs an extension),
# a failure for the compression run, whose whole point is permessage-deflate
# (a server that stopped negotiating it would otherwise pass all 216 cases).
PASSING_WITHOUT_COMPRESSION = PASSING | {"UNIMPLEMENTED"}

# name: (compression on the server, cases, excluded cases, case count, timeout in s)
SUITES = {
    "1-11": (False, ["*"], ["12.*", "13.*"], 301, 600),
    "12-13-compression": (True, ["12.*", "13.*"], [], 216, 3600),
}
RUN = ["1-11"] + (["12-13-compression"] if os.environ.get("AUTOBAHN_ALL") == "1" else [])


def _wstest() -> Path:
    """wstest's path; fails the test (never skips it) if it cannot be built."""
    try:
        return wstest_venv.ensure()
    except wstest_venv.BuildError as exc:
        problem = str(exc)
    pytest.fail(f"Autobahn|Testsuite is not available: {problem}", pytrace=False)


def failing_cases(results: dict[str, dict[str, str]], compression: bool) -> dict[str, Any]:
    """The cases of a wstest report index whose behaviour (or close
    behaviour) is not a pass for this run: ``{case: (behavior, close)}``."""
    passing = PASSING if compression else PASSING_WITHOUT_COMPRESSION
    return {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in results.items()
        if r["behavior"] not in passing or r["behaviorClose"] not in passing
    }


def test_unimplemented_fails_only_the_compression_run() -> None:
    """The pass rule itself (no wstest needed): UNIMPLEMENTED passes groups
    1-11 but fails 12-13, where deflate must be negotiated."""
    results = {
        "1.1.1": {"behavior": "OK", "behaviorClose": "OK"},
        # What wstest reports when the server does not negotiate deflate:
        "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK"},
        "13.1.1": {"behavior": "OK", "behaviorClose": "UNIMPLEMENTED"},
    }
    assert failing_cases(results, compression=False) == {}
    assert failing_cases(results, compression=True) == {
        "12.1.1": ("UNIMPLEMENTED", "OK"),
        "13.1.1": ("OK", "UNIMPLEMENTED"),
    }
    assert failing_cases({"2.1": {"behavior": "FAILED", "behaviorClose": "OK"}}, False) == {
        "2.1": ("FAILED", "OK")
    }


@pytest.mark.parametrize("suite", RUN)
def test_autobahn(suite: str, tmp_path: Path) -> None:
    compression, cases, excluded, count, timeout = SUITES[suite]
    wstest = _wstest()
    port = free_port()
    # As a user runs it: the CLI, the default queue bounds.
    command = ["trio-push", "autobahn_echo:app", "--port", str(port), "--log-level", "warning"]
    command += ["--max-message-size", str(echo.MAX_MESSAGE_SIZE)]
    command += ["--compression"] if compression else []
    with running(command, cwd=Path(echo.__file__).parent, port=port):
        spec = {
            "options": {"failByDrop": False},
            "outdir": str(tmp_path / "reports"),
            "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{port}"}],
            "cases": cases,
            "exclude-cases": excluded,
            "exclude-agent-cases": {},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        log = tmp_path / "wstest.log"
        with open(log, "wb") as out:
            try:
                subprocess.run(
                    [str(wstest), "-m", "fuzzingclient", "-s", "spec.json"],
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=True,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                pytest.fail(f"wstest did not finish: {exc}\n{tail}", pytrace=False)

    # wstest exits 0 whatever the results: they are in the report index.
    results = json.loads((tmp_path / "reports" / "index.json").read_text())[AGENT]
    counts = Counter(r["behavior"] for r in results.values())
    print(f"Autobahn {suite}: {len(results)} cases, {dict(counts)}; reports in {tmp_path}")
    failing = failing_cases(results, compression)
    if failing:
        lines = [f"  {case}: behavior {b}, close {c}" for case, (b, c) in sorted(failing.items())]
        pytest.fail(
            f"{len(failing)} of {len(results)} Autobahn cases fail"
            f" (reports in {tmp_path / 'reports'}):\n" + "\n".join(lines),
            pytrace=False,
        )
    assert len(results) == count, f"expected {count} cases, wstest ran {len(results)}"
