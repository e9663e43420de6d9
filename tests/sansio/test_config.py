"""The limits and options a server shares among its connections."""

from __future__ import annotations

from sansio_push import Config


def test_default_max_message_size_is_one_mebibyte() -> None:
    assert Config().max_message_size == 1024 * 1024


def test_default_limits() -> None:
    config = Config()
    assert config.max_head_size == 64 * 1024
    assert config.max_body_size == 1024 * 1024
