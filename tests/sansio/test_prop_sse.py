"""Property: what we encode as SSE decodes to the same values, through a
parser written from the WHATWG standard and through httpx-sse's decoder."""

from __future__ import annotations

import os
import re

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sansio_wire import connect_sse, sse_body
from whatwg_sse import ParsedEvent, parse, split_lines

from sansio_push import DEFAULT_EVENT, Config, encode_comment, encode_event, prepare

SETTINGS = settings(
    max_examples=int(os.environ.get("SANSIO_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

BREAKS = st.sampled_from(["\r\n", "\r", "\n", "\n\r", "\r\r", "\n\n"])
TRICKY = st.sampled_from([" ", ":", "data: x", "\ufeff", "\0", "é", "\u2028", "\x85", "\x0b"])
data_text = st.lists(st.one_of(st.text(max_size=20), BREAKS, TRICKY), max_size=8).map("".join)
field_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=15)
id_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=15)
retries = st.integers(0, 10**12)


@st.composite
def events(draw: st.DrawFn) -> tuple[str, str | None, str | None, int | None]:
    return (
        draw(data_text),
        draw(st.none() | field_text),
        draw(st.none() | id_text),
        draw(st.none() | retries),
    )


def normalize(data: str) -> str:
    return re.sub(r"\r\n|\r", "\n", data)


def expected(
    sent: list[tuple[str, str | None, str | None, int | None]], default: str | None = None
) -> list[ParsedEvent]:
    out = []
    last_id = ""
    retry = None
    for data, event, id, r in sent:
        if id is not None:
            last_id = id
        if r is not None:
            retry = r
        name = event if event is not None else default
        out.append(ParsedEvent(name or "message", normalize(data), last_id, retry))
    return out


def httpx_sse_parse(stream: bytes, cuts: list[int]) -> list[tuple[str, str, str, int | None]]:
    """Decode with httpx-sse: its line decoder (fed in pieces) and SSEDecoder."""
    text = stream.decode()
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    out = []
    for a, b in zip(points, points[1:], strict=False):
        if a == b:
            continue
        for line in lines.decode(text[a:b]):
            sse = decoder.decode(line)
            if sse is not None:
                out.append((sse.event, sse.data, sse.id, sse.retry))
    return out


@SETTINGS
@given(st.lists(events(), max_size=5))
def test_encoded_events_decode_to_the_same_values_per_whatwg(
    sent: list[tuple[str, str | None, str | None, int | None]],
) -> None:
    stream = b"".join(encode_event(d, event=e, id=i, retry=r) for d, e, i, r in sent)
    assert parse(stream) == expected(sent)


@SETTINGS
@given(st.lists(events(), max_size=5), st.lists(st.integers(0, 10_000), max_size=10))
def test_encoded_events_decode_to_the_same_values_per_httpx_sse(
    sent: list[tuple[str, str | None, str | None, int | None]], cuts: list[int]
) -> None:
    stream = b"".join(encode_event(d, event=e, id=i, retry=r) for d, e, i, r in sent)
    # httpx-sse reports retry per event (not the standing reconnection time).
    want = [
        (p.type, p.data, p.last_event_id, r)
        for p, (_, _, _, r) in zip(expected(sent), sent, strict=True)
    ]
    assert httpx_sse_parse(stream, cuts) == want


@SETTINGS
@given(
    st.none() | field_text,
    st.lists(st.tuples(events(), st.booleans(), st.booleans()), max_size=5),
)
def test_connection_stream_decodes_to_what_was_sent(
    default: str | None,
    sent: list[tuple[tuple[str, str | None, str | None, int | None], bool, bool]],
) -> None:
    """Through a ServerConnection: default event names, prepared messages and
    keepalive comments mixed in; the chunk framing removed first."""
    conn, _ = connect_sse(Config(sse_event=default))
    for (data, event, id, retry), use_prepare, keepalive in sent:
        name = DEFAULT_EVENT if event is None else event
        if use_prepare:
            assert conn.send_prepared(prepare(data, event=name, id=id, retry=retry))
        else:
            assert conn.send_message(data, event=name, id=id, retry=retry)
        if keepalive:
            conn.send_keepalive()
    assert parse(sse_body(conn)) == expected([s for s, _, _ in sent], default)


@SETTINGS
@given(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30))
def test_comments_decode_to_nothing(text: str) -> None:
    assert parse(encode_comment(text) + encode_event("x")) == [
        ParsedEvent("message", "x", "", None)
    ]


@pytest.mark.parametrize(
    ("stream", "want"),
    [
        # The examples of the standard's section 9.2.4 / 9.2.6.
        (b"data: YHOO\ndata: +2\ndata: 10\n\n", [("message", "YHOO\n+2\n10", "")]),
        (
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
            b"data:  third event\n\n",
            [
                ("message", "first event", "1"),
                ("message", "second event", ""),
                ("message", " third event", ""),
            ],
        ),
        (b"data\n\ndata\ndata\n\ndata:", [("message", "", ""), ("message", "\n", "")]),
        (b"data:test\n\ndata: test\n\n", [("message", "test", ""), ("message", "test", "")]),
        (b"\xef\xbb\xbfdata: bom\r\n\r\n", [("message", "bom", "")]),
        (b"event: add\rdata: 73857293\r\r", [("add", "73857293", "")]),
        (b"retry: 10x\ndata: r\n\n", [("message", "r", "")]),
    ],
)
def test_the_whatwg_parser_reads_the_standard_examples(
    stream: bytes, want: list[tuple[str, str, str]]
) -> None:
    assert [(e.type, e.data, e.last_event_id) for e in parse(stream)] == want


def test_the_whatwg_parser_splits_lines_on_crlf_lf_and_cr_only() -> None:
    assert split_lines("a\r\nb\nc\rd\u2028e\x85f\n") == ["a", "b", "c", "d\u2028e\x85f"]
