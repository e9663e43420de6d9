"""Static files: types, lengths, validators, 304, HEAD, no way out of root, and
files that grow or shrink while they are downloaded."""

from __future__ import annotations

import logging
import os
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.server import (
    TIMEOUT,
    connect,
    exchange,
    http_client,
    parse_responses,
    read_all,
    read_until,
)

SECRET = b"TOP-SECRET-CONTENT"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "style.css").write_text("body {}")
    (root / "app.js").write_text("let x = 1;")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "data.unknownext").write_bytes(b"\x00\x01")
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "release.tar.gz").write_bytes(b"\x1f\x8b" + bytes(30))
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<h1>sub</h1>")
    (root / "sub" / "note.txt").write_text("note")
    # Outside the root, and symlinks in the root pointing there.
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path / "private", root / "linkdir")
    return root


@pytest.fixture
async def port(start_server: Any, root: Path) -> int:
    def app(env: dict[str, Any]) -> Any:
        return 404, {"content-type": "text/plain"}, b"app says no"

    server = await start_server(app, root=str(root))
    return server.port  # type: ignore[no-any-return]


async def get(port: int, path: str, method: str = "GET", **headers: str) -> Any:
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            return await http.request(
                method,
                f"http://127.0.0.1:{port}{path}",
                headers={k.replace("_", "-"): v for k, v in headers.items()},
            )


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.png", "image/png"),
        ("/data.unknownext", "application/octet-stream"),
    ],
)
async def test_content_type_follows_the_extension(port: int, path: str, ctype: str) -> None:
    response = await get(port, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == ctype


async def test_an_archive_is_a_download_not_a_content_encoding(port: int) -> None:
    response = await get(port, "/release.tar.gz")
    assert response.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in response.headers
    assert response.content == b"\x1f\x8b" + bytes(30)


async def test_javascript_content_type(port: int) -> None:
    response = await get(port, "/app.js")
    assert response.headers["content-type"].split(";")[0] in (
        "application/javascript",
        "text/javascript",
    )


async def test_content_length_and_body(port: int, root: Path) -> None:
    response = await get(port, "/style.css")
    assert response.headers["content-length"] == str(len("body {}"))
    assert response.content == b"body {}"


async def test_big_file_arrives_whole_with_content_length(port: int, root: Path) -> None:
    response = await get(port, "/big.bin")
    assert response.headers["content-length"] == "300000"
    assert response.content == (root / "big.bin").read_bytes()


async def test_folder_serves_its_index(port: int) -> None:
    assert (await get(port, "/")).text == "<h1>home</h1>"
    assert (await get(port, "/sub/")).text == "<h1>sub</h1>"


async def test_etag_and_last_modified(port: int, root: Path) -> None:
    response = await get(port, "/style.css")
    assert response.headers["etag"].startswith('"')
    mtime = (root / "style.css").stat().st_mtime
    assert response.headers["last-modified"] == formatdate(mtime, usegmt=True)


async def test_if_none_match_gives_304(port: int) -> None:
    etag = (await get(port, "/style.css")).headers["etag"]
    response = await get(port, "/style.css", if_none_match=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


async def test_if_none_match_with_another_etag_gives_200(port: int) -> None:
    response = await get(port, "/style.css", if_none_match='"not-it"')
    assert response.status_code == 200
    assert response.content == b"body {}"


async def test_if_modified_since_gives_304(port: int) -> None:
    last_modified = (await get(port, "/style.css")).headers["last-modified"]
    response = await get(port, "/style.css", if_modified_since=last_modified)
    assert response.status_code == 304


async def test_if_modified_since_before_the_change_gives_200(port: int) -> None:
    response = await get(port, "/style.css", if_modified_since=formatdate(0, usegmt=True))
    assert response.status_code == 200


async def test_changed_file_gets_a_new_etag(port: int, root: Path) -> None:
    etag = (await get(port, "/sub/note.txt")).headers["etag"]
    (root / "sub" / "note.txt").write_text("a longer note")
    os.utime(root / "sub" / "note.txt", (1, 1))
    response = await get(port, "/sub/note.txt", if_none_match=etag)
    assert response.status_code == 200
    assert response.text == "a longer note"


async def test_head_has_the_headers_but_no_body(port: int) -> None:
    request = b"HEAD /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await exchange(port, request)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert rest == b""
    [(status, headers, body)] = parse_responses(raw, ["HEAD"])
    assert status == 200
    assert headers["content-length"] == "7"
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert "etag" in headers
    assert body == b""


async def test_missing_file_goes_to_the_app(port: int) -> None:
    response = await get(port, "/missing.txt")
    assert (response.status_code, response.text) == (404, "app says no")


async def test_post_goes_to_the_app(port: int) -> None:
    response = await get(port, "/style.css", "POST")
    assert response.text == "app says no"


# -- traversal: raw request lines, since clients normalize paths -------------------

TRAVERSALS = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/%252e%252e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/link.txt",
    "/linkdir/secret.txt",
    "/%00/../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_traversal_never_serves_the_file(port: int, path: str) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    raw = await exchange(port, request)
    assert SECRET not in raw
    [(status, _headers, _body)] = parse_responses(raw) or [(400, {}, b"")]
    assert status in (400, 403, 404)


async def test_absolute_path_never_serves_the_file(port: int, root: Path) -> None:
    secret = (root.parent / "secret.txt").as_posix()
    for path in (f"/{secret}", f"/%2f{secret.lstrip('/')}", secret.replace("/", "%2f")):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        raw = await exchange(port, request)
        assert SECRET not in raw, path
        assert parse_responses(raw)[0][0] in (400, 403, 404), path


async def test_absolute_form_target_never_serves_the_file(port: int) -> None:
    request = b"GET http://x/../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await exchange(port, request)
    assert SECRET not in raw


async def test_traversal_in_one_pipelined_connection(port: int) -> None:
    # Several attempts on one keep-alive connection: none leaks, all answered.
    requests = b"".join(
        f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for p in ("/../secret.txt", "/%2e%2e/secret.txt", "/link.txt")
    )
    requests += b"GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        async with stream:
            await stream.send_all(requests)
            raw = await read_all(stream)
    assert SECRET not in raw
    responses = parse_responses(raw)
    assert [s for s, _, _ in responses] == [404, 404, 404, 200]
    assert responses[-1][2] == b"body {}"


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/linkdir/secret.txt"])
async def test_traversal_with_curl_path_as_is(port: int, path: str) -> None:
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [
                "curl",
                "-sS",
                "--path-as-is",
                "--max-time",
                str(TIMEOUT),
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
    assert SECRET not in result.stdout
    assert result.stdout.rsplit(b"\n", 1)[1] in (b"403", b"404")


# -- a file changing under a download ---------------------------------------------

BIG = 16 * 1024 * 1024 + 1000  # far more than the kernel buffers hold


@pytest.fixture
async def big_file(start_server: Any, tmp_path: Path) -> tuple[int, Path, bytes]:
    root = tmp_path / "public"
    root.mkdir()
    data = os.urandom(BIG)
    (root / "big.bin").write_bytes(data)
    (root / "small.txt").write_text("small")
    server = await start_server(lambda env: (404, {}, b""), root=str(root))
    return server.port, root / "big.bin", data


async def slow_download(port: int) -> tuple[trio.SocketStream, bytearray, bytes]:
    """A keep-alive GET of big.bin from a client with a small receive
    buffer; returns once the head is in, the body still mostly unsent."""
    stream = await connect(port, rcvbuf=65536)
    await stream.send_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = bytearray()
    head = await read_until(stream, b"\r\n\r\n", buf)
    assert b"content-length: %d\r\n" % BIG in head.lower(), head
    return stream, buf, head


async def read_up_to(stream: trio.SocketStream, buf: bytearray, n: int) -> bytes:
    """``n`` bytes, or fewer if the server closes first."""
    while len(buf) < n and (data := await stream.receive_some(65536)):
        buf += data
    return bytes(buf)


async def test_static_file_growing_during_a_download_sends_the_size_stated(
    big_file: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As nginx does: the body is the Content-Length stat'ed, bytes appended
    meanwhile are not sent, and the connection serves its next request."""
    port, path, data = big_file
    with caplog.at_level(logging.INFO, logger="trio_push"), trio.fail_after(TIMEOUT):
        stream, buf, _head = await slow_download(port)
        async with stream:
            with path.open("ab") as f:
                f.write(os.urandom(1024 * 1024))
            body = await read_up_to(stream, buf, BIG)
            assert len(body) == BIG and body == data
            await stream.send_all(
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            rest = await read_all(stream)
    [(status, _headers, small)] = parse_responses(rest)
    assert (status, small) == (200, b"small")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_static_file_truncated_during_a_download_closes_with_a_warning(
    big_file: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The promised length cannot be sent: the connection is closed after
    what the file still has, with a one-line warning, not an internal error."""
    port, path, data = big_file
    with caplog.at_level(logging.INFO, logger="trio_push"), trio.fail_after(TIMEOUT):
        stream, buf, _head = await slow_download(port)
        async with stream:
            os.truncate(path, BIG // 2)
            body = await read_up_to(stream, buf, BIG)
    assert body == data[: BIG // 2]
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelno, r.exc_info) for r in problems] == [(logging.WARNING, None)], caplog.text
    assert "big.bin" in problems[0].getMessage()
