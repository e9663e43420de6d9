"""Close codes as an IntEnum, the codes an endpoint may send, status phrases."""

from __future__ import annotations

from http import HTTPStatus

import pytest

import sansio_push
from sansio_push import CloseCode, can_send_close_code
from sansio_push._codes import phrase


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_a_close_code_round_trips_through_its_number_and_its_name(code: CloseCode) -> None:
    assert CloseCode(int(code)) is code
    assert CloseCode[code.name] is code
    assert code == int(code) and str(int(code)) == f"{code:d}"


def test_the_module_names_are_the_enum_members() -> None:
    for name in ("NORMAL", "GOING_AWAY", "PROTOCOL_ERROR", "INVALID_DATA", "POLICY_VIOLATION"):
        assert getattr(sansio_push, name) is CloseCode[name]
    for name in ("MESSAGE_TOO_BIG", "INTERNAL_ERROR", "ABNORMAL"):
        assert getattr(sansio_push, name) is CloseCode[name]


def test_the_members_are_the_numbers_of_rfc_6455() -> None:
    assert [int(c) for c in CloseCode] == [*range(1000, 1004), *range(1005, 1015)]


@pytest.mark.parametrize(
    "code,sendable",
    [(1000, True), (1003, True), (1004, False), (1005, False), (1006, False), (1014, True)]
    + [(1015, False), (2999, False), (3000, True), (4999, True), (5000, False), (999, False)],
)
def test_which_codes_an_endpoint_may_send(code: int, sendable: bool) -> None:
    assert can_send_close_code(code) is sendable


def test_phrase_is_the_reason_phrase_http_names_and_empty_for_others() -> None:
    assert phrase(101) == b"Switching Protocols"
    assert phrase(431) == b"Request Header Fields Too Large"
    assert all(phrase(s.value) == s.phrase.encode() for s in HTTPStatus)
    assert phrase(599) == b"" and phrase(0) == b""
