"""Static files from a root folder, with no way out of it."""

from __future__ import annotations

import logging
import mimetypes
import os
import posixpath
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import trio

log = logging.getLogger("trio_push")

_CHUNK = 64 * 1024
_ARCHIVE_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


class StaticFiles:
    """Serves GET and HEAD for files under ``root``.

    A path that leaves the root (``..`` in any encoding, an absolute path, a
    symlink pointing outside) gets 404, never a file. A folder serves its
    ``index.html``. Answers carry ``Content-Type``, ``Content-Length``,
    ``ETag`` and ``Last-Modified``, and 304 to a matching conditional GET.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"static root {root!s} is not a folder")

    def find(self, env: dict[str, Any]) -> str | None:
        """The real path of the file ``env`` asks for, or None."""
        if env["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return None
        # PATH_INFO is already percent-decoded (as latin-1, per PEP 3333).
        try:
            path = env["PATH_INFO"].encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None
        if "\0" in path or "\\" in path:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        full = os.path.realpath(os.path.join(self.root, *parts))
        if full != self.root and not full.startswith(self.root + os.sep):
            return None
        if os.path.isdir(full):
            full = os.path.join(full, "index.html")
        return full if os.path.isfile(full) else None

    async def serve(self, env: dict[str, Any], path: str) -> tuple[int, list[tuple[str, str]], Any]:
        st = os.stat(path)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        last_modified = formatdate(st.st_mtime, usegmt=True)
        headers = [("etag", etag), ("last-modified", last_modified)]
        if _not_modified(env, etag, st.st_mtime):
            return 304, headers, b""
        ctype, encoding = mimetypes.guess_type(posixpath.basename(path))
        if encoding is not None:
            # A .tar.gz is a gzip file to download, not a tar to be unpacked
            # by the browser: no Content-Encoding.
            ctype = _ARCHIVE_TYPES.get(encoding, "application/octet-stream")
        elif ctype is None:
            ctype = "application/octet-stream"
        elif ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        headers.append(("content-type", ctype))
        # The size stat'ed is what is sent, as nginx does: bytes appended
        # meanwhile are left out.
        size = st.st_size
        if env["REQUEST_METHOD"] == "HEAD":
            body: Any = b""
        elif size <= _CHUNK:
            body = await trio.to_thread.run_sync(_read, path, size)
            size = len(body)  # shorter if truncated since: the head is not out yet
        else:
            body = _stream(path, size)
        headers.append(("content-length", str(size)))
        return 200, headers, body


def _read(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


async def _stream(path: str, size: int) -> Any:
    async with await trio.open_file(path, "rb") as f:
        while size:
            chunk = await f.read(min(_CHUNK, size))
            if not chunk:
                # Truncated since the head went out: the promised length
                # cannot be sent, so the connection is closed (as a broken
                # transport is, quietly), which tells the client.
                log.warning("%s: truncated during a download, closing the connection", path)
                raise trio.BrokenResourceError("static file truncated")
            size -= len(chunk)
            yield chunk


def _not_modified(env: dict[str, Any], etag: str, mtime: float) -> bool:
    inm = env.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = env.get("HTTP_IF_MODIFIED_SINCE")
    if ims is not None:
        try:
            return int(mtime) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False
