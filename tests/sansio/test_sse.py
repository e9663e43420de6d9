"""SSE fields and comments, encoded as the WHATWG parser reads them."""

from __future__ import annotations

import pytest
from whatwg_sse import ParsedEvent, parse

from sansio_push import encode_comment, encode_event


@pytest.mark.parametrize("sep", ["\r\n", "\r", "\n"])
def test_data_is_split_into_lines_on_every_line_break(sep: str) -> None:
    assert encode_event(f"a{sep}b{sep}c") == b"data: a\ndata: b\ndata: c\n\n"


def test_mixed_line_breaks_each_start_a_data_line() -> None:
    assert encode_event("1\r\n2\r3\n4") == b"data: 1\ndata: 2\ndata: 3\ndata: 4\n\n"


def test_cr_lf_counts_as_one_line_break() -> None:
    assert encode_event("a\r\nb") == b"data: a\ndata: b\n\n"


def test_lf_cr_counts_as_two_line_breaks() -> None:
    assert encode_event("a\n\rb") == b"data: a\ndata: \ndata: b\n\n"


def test_trailing_line_break_gives_an_empty_last_data_line() -> None:
    assert encode_event("a\n") == b"data: a\ndata: \n\n"


def test_empty_data_is_one_empty_data_line() -> None:
    assert encode_event("") == b"data: \n\n"


def test_bytes_data_is_decoded_as_utf8() -> None:
    assert encode_event("é".encode()) == "data: é\n\n".encode()


def test_bytes_data_that_is_not_utf8_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode_event(b"\xff")


def test_event_id_and_retry_fields_come_before_the_data() -> None:
    block = encode_event("x", event="tick", id="42", retry=1500)
    assert block == b"event: tick\nid: 42\nretry: 1500\ndata: x\n\n"


def test_no_fields_but_data_by_default() -> None:
    assert encode_event("x") == b"data: x\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "\n"])
def test_line_break_in_event_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_event("x", event=bad)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "\r\n"])
def test_line_break_in_id_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_event("x", id=bad)


def test_nul_in_id_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode_event("x", id="a\0b")


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10"])
def test_retry_that_is_not_a_non_negative_int_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        encode_event("x", retry=bad)  # type: ignore[arg-type]


def test_comment_keepalive_is_one_colon_line() -> None:
    assert encode_comment() == b":\n"
    assert encode_comment("hi") == b":hi\n"


def test_line_break_in_a_comment_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode_comment("a\nb")


def test_no_data_is_a_block_of_the_fields_alone() -> None:
    assert encode_event(None, id="ab12cd34=e:1-1") == b"id: ab12cd34=e:1-1\n\n"
    assert encode_event(None, id="7", retry=10) == b"id: 7\nretry: 10\n\n"
    assert encode_event(None, event="x", id="7") == b"event: x\nid: 7\n\n"


def test_no_data_is_not_an_empty_data_line() -> None:
    # Data "" is an event a browser dispatches; no data is none.
    assert b"data" not in encode_event(None, id="7")
    assert encode_event("", id="7") == b"id: 7\ndata: \n\n"


def test_an_id_only_block_sets_the_last_event_id_without_dispatching() -> None:
    # Checked against the WHATWG parser: the block is taken, no event comes
    # of it, and the next event carries its id (what Last-Event-ID sends).
    stream = encode_event(None, id="start") + encode_event("m", event="msg")
    assert parse(stream) == [ParsedEvent("msg", "m", "start", None)]
    assert parse(encode_event(None, id="start")) == []


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_no_data_with_an_id_sse_cannot_carry_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_event(None, id=bad)
