"""examples/resume, run as its README says, in headless Chromium: every way
the page has to lose its connections, and no tick missing or repeated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.browser import RECORD_ERRORS, browser, wait_for_js
from tests.helpers.procs import ROOT, VENV_BIN, free_port, running

RESUME = ROOT / "examples" / "resume"


@pytest.fixture(scope="module")
def resume_url() -> Iterator[str]:
    port = free_port()
    args = [str(VENV_BIN / "trio-push"), "app:router", "--history", "1000", "--port", str(port)]
    # A hundred ticks a second, so that each drop misses some.
    with running(args, cwd=RESUME, port=port, env={"TICK": "0.01"}):
        yield f"http://127.0.0.1:{port}"


def _state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return {seen: window.seen, problems: window.problems, opens: window.opens,"
        " gaps: window.gaps, errors: window.__errors};"
    )


def _more_ticks(driver: Any, pane: str, than: int) -> None:
    wait_for_js(driver, f"return window.seen.{pane}.length > {than} + 20;", 15.0)


def _click(driver: Any, button: str, *panes: str) -> None:
    """Click ``button``; wait until each pane has reconnected and got more ticks."""
    before = _state(driver)
    driver.find_element("id", button).click()
    for pane in panes:
        wait_for_js(driver, f"return window.opens.{pane} > {before['opens'][pane]};", 15.0)
        _more_ticks(driver, pane, len(before["seen"][pane]))


def test_every_drop_on_the_page_resumes_without_a_missing_tick(resume_url: str) -> None:
    with browser() as driver:
        driver.get(resume_url + "/")
        driver.execute_script(RECORD_ERRORS)
        assert driver.title == "trio-push resume"
        _more_ticks(driver, "ws", 0)
        _more_ticks(driver, "sse", 0)
        _click(driver, "server-drop", "ws", "sse")
        _click(driver, "drop-ws", "ws")
        _click(driver, "reopen-sse", "sse")
        _click(driver, "offline", "ws", "sse")
        _click(driver, "server-drop", "ws", "sse")
        state = _state(driver)
    assert state["opens"] == {"ws": 5, "sse": 5}
    for pane in ("ws", "sse"):
        seen = state["seen"][pane]
        first = seen[0]
        # Every tick from the first one on, once, in order: 3 s offline included.
        assert seen == list(range(first, first + len(seen))), pane
        assert len(seen) > 400
    assert state["problems"] == {"ws": 0, "sse": 0}
    assert state["gaps"] == []
    assert state["errors"] == []
