"""An event-stream parser written from the WHATWG HTML standard (not a test module).

Section 9.2.6 "Interpreting an event stream" (and 9.2.5's ABNF): the stream
is UTF-8, a leading BOM is dropped, lines end with CRLF, LF or CR, and an
unterminated last line is discarded. Kept independent of sansio_push on
purpose: it is the oracle the encoder is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParsedEvent:
    type: str
    data: str
    last_event_id: str
    #: The reconnection time when the event was dispatched (None: never set).
    retry: int | None


def split_lines(text: str) -> list[str]:
    """Complete lines; end-of-line = CRLF / CR / LF. A last line without
    its end-of-line is not returned (it never gets processed)."""
    lines = []
    start = i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\r":
            lines.append(text[start:i])
            i += 2 if text[i + 1 : i + 2] == "\n" else 1
            start = i
        elif ch == "\n":
            lines.append(text[start:i])
            i += 1
            start = i
        else:
            i += 1
    return lines


def parse(stream: bytes) -> list[ParsedEvent]:
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[ParsedEvent] = []
    data_buffer = ""
    event_type_buffer = ""
    last_event_id_buffer = ""
    last_event_id = ""
    reconnection_time: int | None = None
    for line in split_lines(text):
        if line == "":
            # Dispatch the event.
            last_event_id = last_event_id_buffer
            if data_buffer == "":
                data_buffer = event_type_buffer = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append(
                ParsedEvent(
                    event_type_buffer or "message", data_buffer, last_event_id, reconnection_time
                )
            )
            data_buffer = event_type_buffer = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type_buffer = value
        elif field == "data":
            data_buffer += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_event_id_buffer = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            reconnection_time = int(value)
        # Any other field (or a retry that is not all digits) is ignored.
    return events
