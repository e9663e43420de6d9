"""Prepared: a message encoded once, queued as the same bytes on many connections."""

from __future__ import annotations

import pytest
from sansio_wire import (
    connect_sse,
    connect_ws,
    parse_frames,
    sse_body,
)

import sansio_push._prepared
import sansio_push._sse_stream
import sansio_push._websocket
from sansio_push import Config, Prepared, prepare


def test_prepared_message_is_queued_as_the_same_bytes_on_many_connections() -> None:
    p = prepare("broadcast")
    conns = [connect_ws()[0] for _ in range(5)]
    for conn in conns:
        assert conn.send_prepared(p)
    datas = [conn.data_to_send() for conn in conns]
    assert all(d == datas[0] for d in datas)
    assert [f.payload for f in parse_frames(datas[0])] == [b"broadcast"]
    assert all(conn.pending == 1 for conn in conns)


def test_prepared_message_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"ws": 0, "sse": 0}
    real_ws, real_sse = sansio_push._prepared.encode_message, sansio_push._prepared.encode_event

    def count_ws(msg: str | bytes) -> bytes:
        calls["ws"] += 1
        return real_ws(msg)

    def count_sse(*args: object, **kwargs: object) -> bytes:
        calls["sse"] += 1
        return real_sse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sansio_push._prepared, "encode_message", count_ws)
    monkeypatch.setattr(sansio_push._websocket, "encode_message", count_ws)
    p = Prepared("news")
    monkeypatch.setattr(sansio_push._prepared, "encode_event", count_sse)
    monkeypatch.setattr(sansio_push._sse_stream, "encode_event", count_sse)
    ws_conns = [connect_ws()[0] for _ in range(10)]
    sse_conns = [connect_sse()[0] for _ in range(10)]
    for conn in ws_conns + sse_conns:
        assert conn.send_prepared(p)
    assert calls == {"ws": 1, "sse": 1}


def test_prepared_sse_block_uses_each_connection_default_event() -> None:
    p = prepare("x")
    a, _ = connect_sse()
    b, _ = connect_sse(Config(sse_event=None))
    a.send_prepared(p)
    b.send_prepared(p)
    assert sse_body(a) == b"event: msg\ndata: x\n\n"
    assert sse_body(b) == b"data: x\n\n"


def test_prepared_explicit_fields_are_written() -> None:
    conn, _ = connect_sse()
    conn.send_prepared(prepare("x", event="e", id="1", retry=5))
    assert sse_body(conn) == b"event: e\nid: 1\nretry: 5\ndata: x\n\n"


def test_prepare_with_a_bad_field_raises_value_error_at_once() -> None:
    with pytest.raises(ValueError):
        prepare("x", id="a\nb")
    with pytest.raises(ValueError):
        prepare("x", event="a\rb")


def test_prepared_message_after_close_returns_false() -> None:
    conn, _ = connect_ws()
    conn.close()
    assert conn.send_prepared(prepare("x")) is False
