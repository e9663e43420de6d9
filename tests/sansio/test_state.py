"""The phase table: the moves it lists are the only ones a connection makes."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from sansio_wire import (
    OP_CLOSE,
    close_payload,
    connect_sse,
    connect_ws,
    frame,
    new,
    receive,
    request,
    ws_request,
)

from sansio_push import Config, LocalProtocolError, ServerConnection
from sansio_push._state import MOVES, Phase, move

ALLOWED = {(a, b) for a, targets in MOVES.items() for b in targets}


def phase(conn: ServerConnection) -> Phase:
    return conn._state.phase


def test_the_table_names_every_phase_and_a_way_to_done_from_each_live_one() -> None:
    assert set(MOVES) == set(Phase)
    assert all(Phase.DONE in MOVES[p] for p in Phase if p is not Phase.DONE)
    assert MOVES[Phase.DONE] == frozenset()


@pytest.mark.parametrize("current,new", sorted(ALLOWED, key=str))
def test_a_move_the_table_lists_is_made(current: Phase, new: Phase) -> None:
    assert move(current, new) is new


@pytest.mark.parametrize(
    "current,new",
    sorted(set(itertools.product(Phase, Phase)) - ALLOWED, key=str),
)
def test_a_move_the_table_does_not_list_raises_local_protocol_error(
    current: Phase, new: Phase
) -> None:
    with pytest.raises(LocalProtocolError, match=f"{current.name} to {new.name}"):
        move(current, new)


def test_a_connection_starts_in_http_and_stays_there_across_requests() -> None:
    conn = new()
    assert phase(conn) is Phase.HTTP
    receive(conn, request())
    conn.respond(200)
    receive(conn, request())
    assert phase(conn) is Phase.HTTP and conn.protocol == "http"


def test_an_accepted_upgrade_moves_to_websocket_then_done() -> None:
    conn, _ = connect_ws()
    assert phase(conn) is Phase.WEBSOCKET
    receive(conn, frame(OP_CLOSE, close_payload(1000)))
    assert phase(conn) is Phase.DONE and conn.finished


def test_an_accepted_event_stream_moves_to_sse_then_done() -> None:
    conn, _ = connect_sse()
    assert phase(conn) is Phase.SSE
    conn.close()
    assert phase(conn) is Phase.DONE and conn.finished


@pytest.mark.parametrize(
    "data",
    [request(headers=[("Connection", "close")]), b"NOT HTTP\r\n\r\n"],
    ids=["a response that closes", "a request we reject"],
)
def test_http_moves_to_done_when_the_connection_cannot_be_reused(data: bytes) -> None:
    conn = new()
    receive(conn, data)
    if not conn.finished:
        conn.respond(200)
    assert phase(conn) is Phase.DONE


def test_abort_moves_any_live_phase_to_done() -> None:
    for conn in (new(), connect_ws()[0], connect_sse()[0]):
        conn.abort()
        assert phase(conn) is Phase.DONE and not conn.open


@pytest.mark.parametrize("connect", [connect_ws, connect_sse])
def test_an_upgraded_connection_takes_no_http_call(
    connect: Callable[[], tuple[ServerConnection, bytes]],
) -> None:
    conn, _ = connect()
    with pytest.raises(LocalProtocolError):
        conn.start_response(200, [])
    with pytest.raises(LocalProtocolError):
        conn.send_body(b"x")
    with pytest.raises(LocalProtocolError):
        conn.end_response()


def test_a_finished_http_connection_answers_nothing_more() -> None:
    conn = new(Config(max_body_size=1))
    receive(conn, ws_request([("Content-Length", "2")]) + b"xx")
    assert conn.finished  # 413: the upgrade cannot follow
    with pytest.raises(LocalProtocolError):
        conn.start_response(200, [], upgrade=True)
    assert phase(conn) is Phase.DONE and conn.protocol == "http"


def test_done_reads_nothing_and_reports_nothing() -> None:
    conn, _ = connect_ws()
    conn.abort()
    conn.receive_data(frame(OP_CLOSE, close_payload(1000)))
    assert conn.next_event() is None
