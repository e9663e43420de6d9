"""Build (once) the Python 2.7 virtualenv that holds Autobahn|Testsuite's wstest.

The suite (autobahntestsuite 0.8.2) is Python 2 code. pyenv's 2.7.18 gives
the interpreter; a recent ``virtualenv`` can no longer make 2.7 environments,
so a small Python 3 venv holds ``virtualenv<20.22`` to make it:

    <dir>/bootstrap   Python 3 venv with virtualenv<20.22
    <dir>/ab          Python 2.7 virtualenv with autobahntestsuite==0.8.2
    <dir>/complete    written last: the build finished

``<dir>`` is ``$AUTOBAHN_VENV``, else ``~/.cache/trio-push/autobahn``; the
interpreter is ``$AUTOBAHN_PYTHON2``, else ``$(pyenv prefix 2.7.18)/bin/python2.7``.
Run this file to pre-build it (CI does; a test run builds it if missing):

    python tests/helpers/wstest_venv.py
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

AUTOBAHN = "autobahntestsuite==0.8.2"
VIRTUALENV = "virtualenv<20.22"


class BuildError(Exception):
    """The virtualenv could not be built; the message says why."""


def venv_dir() -> Path:
    return Path(os.environ.get("AUTOBAHN_VENV") or "~/.cache/trio-push/autobahn").expanduser()


def python2() -> str:
    explicit = os.environ.get("AUTOBAHN_PYTHON2")
    if explicit:
        return explicit
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        raise BuildError("no Python 2.7: pyenv is not on PATH and AUTOBAHN_PYTHON2 is not set")
    prefix = _run([pyenv, "prefix", "2.7.18"], "find pyenv's Python 2.7.18").strip()
    return str(Path(prefix) / "bin" / "python2.7")


def _run(cmd: list[str], what: str) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"cannot {what}: {exc}") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = "\n".join(output[-30:])
        raise BuildError(f"cannot {what}: {' '.join(cmd)} exited {result.returncode}\n{tail}")
    return result.stdout


def ensure(directory: Path | None = None) -> Path:
    """The path of ``wstest``, building its virtualenv first if needed.

    Raises :class:`BuildError` with the reason if it cannot be built.
    """
    directory = directory or venv_dir()
    wstest = directory / "ab" / "bin" / "wstest"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if (directory / "complete").exists() and wstest.exists():
            return wstest
        shutil.rmtree(directory, ignore_errors=True)  # a half-made one
        directory.mkdir()
        interpreter = python2()
        if not os.access(interpreter, os.X_OK):
            raise BuildError(f"no Python 2.7 at {interpreter}")
        bootstrap = directory / "bootstrap"
        ab = directory / "ab"
        _run([sys.executable, "-m", "venv", str(bootstrap)], "make the bootstrap venv")
        _run([str(bootstrap / "bin" / "pip"), "install", "-q", VIRTUALENV], "install virtualenv")
        _run(
            [str(bootstrap / "bin" / "virtualenv"), "-q", "-p", interpreter, str(ab)],
            "make the Python 2.7 virtualenv",
        )
        _run([str(ab / "bin" / "pip"), "install", "-q", AUTOBAHN], f"install {AUTOBAHN}")
        _run([str(wstest), "--autobahnversion"], "run wstest")
        (directory / "complete").write_text(AUTOBAHN + "\n")
        return wstest


if __name__ == "__main__":
    try:
        print(ensure())
    except BuildError as exc:
        sys.exit(f"wstest_venv: {exc}")
