"""The echo app Autobahn|Testsuite's fuzzing client tests trio-push against.

Any path; a WebSocket upgrade gets a handler that writes every message back
as it came (text as text, binary as binary). The suite runs it as a user
would, with the CLI and the default queue bounds (tests/e2e/test_autobahn.py):

    cd tests/apps && trio-push autobahn_echo:app --port 9001 --max-message-size 16777216

or by hand with ``python tests/apps/autobahn_echo.py [--port 9001] [--compression]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any

import trio_push

# Autobahn's largest messages are 16 MiB (cases 9.1.6, 9.2.6); the default
# limit (1 MiB in) would close those with 1009. The send queue's bounds need
# no change: an echo of one message is queued whatever its size.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class Echo:
    def on_message(self, client: trio_push.Client, data: str | bytes) -> None:
        client.write(data)


ECHO = Echo()


def app(env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    if env["rack.upgrade?"] == "websocket":
        env["rack.upgrade"] = ECHO
        return 200, [], b""
    return 404, [("content-type", "text/plain")], b"WebSocket only\n"


def make_server(port: int = 0, *, compression: bool = False) -> trio_push.Server:
    """An echo server on 127.0.0.1 (port 0: any free port, see ``server.port``)."""
    return trio_push.Server(
        app,
        port,
        compression=compression,
        max_message_size=MAX_MESSAGE_SIZE,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = make_server(args.port, compression=args.compression)
    print(f"echo server on ws://127.0.0.1:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


if __name__ == "__main__":
    main()
