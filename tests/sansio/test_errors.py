"""One error hierarchy: the app's misuse, and the peer's errors with their answer."""

from __future__ import annotations

import pytest
from sansio_wire import connect_sse, connect_ws, new

from sansio_push import (
    PROTOCOL_ERROR,
    CloseCode,
    LocalProtocolError,
    PushError,
    RemoteProtocolError,
)
from sansio_push._handshake import UpgradeRefused


def test_local_protocol_error_is_also_value_error_and_runtime_error() -> None:
    assert issubclass(LocalProtocolError, PushError)
    assert issubclass(LocalProtocolError, ValueError)
    assert issubclass(LocalProtocolError, RuntimeError)


def test_remote_protocol_error_carries_the_status_and_close_code_to_answer_with() -> None:
    exc = RemoteProtocolError("too big", status=413, code=1009)
    assert isinstance(exc, PushError) and str(exc) == "too big"
    assert exc.status == 413
    assert exc.code is CloseCode.MESSAGE_TOO_BIG


def test_remote_protocol_error_answers_400_and_1002_unless_told() -> None:
    exc = RemoteProtocolError("malformed")
    assert (exc.status, exc.code) == (400, PROTOCOL_ERROR)


def test_a_refused_upgrade_is_a_remote_protocol_error_with_its_headers() -> None:
    exc = UpgradeRefused(426, "only 13", [(b"sec-websocket-version", b"13")])
    assert isinstance(exc, RemoteProtocolError)
    assert (exc.status, str(exc), exc.headers) == (
        426,
        "only 13",
        [(b"sec-websocket-version", b"13")],
    )
    assert UpgradeRefused(400, "no key").headers == []


def test_each_misuse_of_a_connection_raises_local_protocol_error() -> None:
    ws, _ = connect_ws()
    sse, _ = connect_sse()
    misuses = [
        lambda: ws.close(1005),
        lambda: ws.send_keepalive(b"x" * 126),
        lambda: ws.start_response(200),
        lambda: ws.end_response(),
        lambda: sse.send_message("x", id="a\nb"),
        lambda: sse.send_message(b"\xff"),
        lambda: new().end_response(),
        lambda: new().sent(1),
    ]
    for misuse in misuses:
        with pytest.raises(LocalProtocolError):
            misuse()


def test_a_remote_error_may_carry_an_application_close_code() -> None:
    error = RemoteProtocolError("the app's own code", code=4000)
    assert error.code == 4000
