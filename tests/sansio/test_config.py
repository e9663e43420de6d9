"""The limits and options a server shares among its connections."""

from __future__ import annotations

import pytest

from sansio_push import Config


def test_default_max_message_size_is_one_mebibyte() -> None:
    assert Config().max_message_size == 1024 * 1024


def test_default_limits() -> None:
    config = Config()
    assert config.max_head_size == 64 * 1024
    assert config.max_body_size == 1024 * 1024


@pytest.mark.parametrize(
    "values",
    [
        {"h2_max_frame_size": 16383},
        {"h2_max_frame_size": 2**24},
        {"h2_max_concurrent_streams": 0},
        {"h2_max_header_list_size": 0},
        {"h2_stream_window": 1000},
        {"h2_connection_window": 2**31},
    ],
)
def test_http2_settings_http_2_cannot_carry_are_refused_at_once(values: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(values))):
        Config(**values)  # type: ignore[arg-type]
