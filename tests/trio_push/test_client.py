"""The Client object: write, pending, close, open, env, protocol, SSE fields,
writes from other threads, and close_code (how a connection closed, as
on_close sees it)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.exceptions import ConnectionClosed as WSClosed

import sansio_push
import sansio_push as sp
import trio_push
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    fill_until_refused,
    http_client,
    in_thread,
    push_app,
    wait_for,
    ws_connect,
)
from trio_push import _client
from trio_push._client import _share


async def test_write_returns_true_when_queued(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            assert rec.clients[0].write("queued") is True
            assert await ws.get_message() == "queued"


async def test_write_returns_false_after_close(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            client = rec.clients[0]
            client.close()
            assert client.write("too late") is False
            assert await in_thread(client.write, "too late from a thread") is False
            with contextlib.suppress(ConnectionClosed):
                await ws.get_message()
        await rec.closed.wait()
        assert client.write("after on_close") is False
        assert await in_thread(client.write, "after on_close, from a thread") is False


async def test_write_returns_false_after_the_server_stopped(serve_scope: Any) -> None:
    rec = Recorder()
    server, scope, done = await serve_scope(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            scope.cancel()
            await done.wait()
            del ws
    client = rec.clients[0]
    assert client.write("nobody listens") is False
    assert await in_thread(client.write, "nobody listens") is False
    client.close()  # idempotent, and harmless once the server is gone
    await in_thread(client.close)


async def test_pending_counts_messages_not_yet_handed_to_the_os(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        await rec.opened.wait()
        client = rec.clients[0]
        assert client.pending == 0
        for i in range(5):
            client.write(str(i))
        # No checkpoint yet: the writer task has not run.
        assert client.pending == 5
        assert await ws.messages(5) == ["0", "1", "2", "3", "4"]
        await wait_for(lambda: client.pending == 0)
    await ws.aclose()


async def test_close_flushes_what_was_written_before(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))

    def client() -> tuple[list[Any], int | None]:
        got = []
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            try:
                while True:
                    got.append(ws.recv(timeout=TIMEOUT))
            except WSClosed as exc:
                return got, exc.rcvd.code if exc.rcvd else None

    async def server_side() -> None:
        await rec.opened.wait()
        for i in range(100):
            rec.clients[0].write(f"m{i}")
        rec.clients[0].close()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            got, code = await in_thread(client)
    assert got == [f"m{i}" for i in range(100)]
    assert code == 1000


async def test_close_is_idempotent(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            client = rec.clients[0]
            client.close()
            client.close(1001, "again")
            await in_thread(client.close)
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code
        await rec.closed.wait()
    assert code == 1000
    assert rec.names().count("close") == 1


async def test_open_is_true_until_close(start_server: Any) -> None:
    seen: list[bool] = []

    class Handler:
        def on_open(self, client: Any) -> None:
            seen.append(client.open)
            client.close()
            seen.append(client.open)

        def on_close(self, client: Any) -> None:
            seen.append(client.open)

    server = await start_server(push_app(Handler()))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.get_message()
        await wait_for(lambda: len(seen) == 3)
    assert seen == [True, False, False]


async def test_env_is_the_request_env(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/room/7?user=ann",
            extra_headers=[(b"x-token", b"secret")],
        ):
            await rec.opened.wait()
    env = rec.clients[0].env
    assert env["PATH_INFO"] == "/room/7"
    assert env["QUERY_STRING"] == "user=ann"
    assert env["HTTP_X_TOKEN"] == "secret"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["rack.upgrade?"] == "websocket"
    assert env["rack.upgrade"] is rec


async def test_env_is_the_dict_the_app_got_with_the_same_items_in_order(
    start_server: Any,
) -> None:
    rec = Recorder()
    seen: list[tuple[dict[str, Any], list[tuple[str, Any]]]] = []

    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = rec
        seen.append((env, list(env.items())))
        return 200, {}, []

    server = await start_server(app)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/room/7?user=ann"):
            await rec.opened.wait()
    env, items = seen[0]
    assert rec.clients[0].env is env
    assert list(env.items()) == items


async def test_connections_share_their_envs_strings_but_not_a_key_of_their_own(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    url = f"ws://127.0.0.1:{server.port}/room/7?user=ann"
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url), open_websocket_url(url):
            await wait_for(lambda: len(rec.clients) == 2)
    first, second = (client.env for client in rec.clients)
    for key in ("PATH_INFO", "HTTP_HOST", "HTTP_UPGRADE", "SERVER_PROTOCOL", "REMOTE_ADDR"):
        assert first[key] is second[key], key
    keys = {key: key for key in second}
    assert all(keys[key] is key for key in first if key in keys)
    assert first["HTTP_SEC_WEBSOCKET_KEY"] != second["HTTP_SEC_WEBSOCKET_KEY"]


_ENV_KEYS = st.sampled_from(
    ["PATH_INFO", "RAW_URI", "QUERY_STRING", "HTTP_USER_AGENT", "HTTP_COOKIE", "wsgi.input"]
)


@given(
    st.lists(
        st.tuples(
            st.one_of(_ENV_KEYS, st.text(max_size=8)),
            st.one_of(st.text(max_size=12), st.integers(), st.none(), st.binary(max_size=4)),
        )
    )
)
def test_sharing_an_envs_strings_keeps_the_dict_its_items_and_their_order(
    pairs: list[tuple[str, Any]],
) -> None:
    env = {"".join(list(key)): value for key, value in pairs}  # keys of their own
    before = list(env.items())
    same = env
    _share(env)
    assert env is same
    assert list(env.items()) == before
    # Another connection's equal env gets the same strings.
    other = {"".join(list(key)): copy_of(value) for key, value in env.items()}
    _share(other)
    for (key, value), (its_key, its_value) in zip(env.items(), other.items(), strict=True):
        assert its_key is key
        if isinstance(value, str) and key in ("PATH_INFO", "HTTP_USER_AGENT"):
            assert its_value is value


def copy_of(value: Any) -> Any:
    """An equal string that is another object (anything else as it is)."""
    return "".join(list(value)) if isinstance(value, str) and len(value) > 1 else value


def test_the_strings_kept_for_every_connection_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_client, "_KEPT", {})  # (the others' table is left as it was)
    for i in range(2 * _client._KEPT_MAX):
        _share({"HTTP_USER_AGENT": f"agent {i}", f"HTTP_X_{i}": "v"})
    _share({"HTTP_USER_AGENT": "x" * 10_000})
    assert len(_client._KEPT) <= _client._KEPT_MAX
    assert all(len(text) <= _client._KEPT_SIZE for text in _client._KEPT)


async def test_protocol_is_websocket_or_sse(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            await wait_for(lambda: len(rec.clients) == 1)
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/sse"),
        ):
            await wait_for(lambda: len(rec.clients) == 2)
    assert [c.protocol for c in rec.clients] == ["websocket", "sse"]


async def _sse_events(port: int, rec: Recorder, n: int, write: Any) -> list[Any]:
    """Open an SSE stream, call ``write(client)`` once open, read ``n`` events."""
    events = []
    async with (
        http_client() as http,
        aconnect_sse(http, "GET", f"http://127.0.0.1:{port}/events") as es,
    ):
        assert es.response.headers["content-type"].startswith("text/event-stream")
        await rec.opened.wait()
        write(rec.clients[-1])
        async for event in es.aiter_sse():
            events.append(event)
            if len(events) == n:
                break
    return events


async def test_sse_write_sets_event_id_and_retry(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))

    def write(client: Any) -> None:
        assert client.write("payload", event="update", id="42", retry=1500) is True

    with trio.fail_after(TIMEOUT):
        [event] = await _sse_events(server.port, rec, 1, write)
    assert event.event == "update"
    assert event.data == "payload"
    assert event.id == "42"
    assert event.retry == 1500


async def test_sse_default_event_name_is_msg(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        [event] = await _sse_events(server.port, rec, 1, lambda c: c.write("tick"))
    assert event.event == "msg"
    assert event.data == "tick"


async def test_sse_event_name_none_gives_the_browser_default(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), sse_event=None)
    with trio.fail_after(TIMEOUT):
        [event] = await _sse_events(server.port, rec, 1, lambda c: c.write("tick"))
    assert event.event == "message"  # no event: field was sent
    assert event.data == "tick"


async def test_sse_multiline_message_arrives_whole(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        [event] = await _sse_events(server.port, rec, 1, lambda c: c.write("one\ntwo\r\nthree"))
    assert event.data == "one\ntwo\nthree"


async def test_sse_close_ends_the_stream(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    got = []
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            await rec.opened.wait()
            rec.clients[0].write("a")
            rec.clients[0].write("b")
            rec.clients[0].close()
            async for event in es.aiter_sse():
                got.append(event.data)
        await rec.closed.wait()
    assert got == ["a", "b"]


async def test_sse_write_from_curl(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))

    async def server_side() -> None:
        await rec.opened.wait()
        rec.clients[0].write("via curl", event="note", id="7")
        rec.clients[0].close()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            result = await trio.run_process(
                [
                    "curl",
                    "-sS",
                    "-N",
                    "--max-time",
                    str(TIMEOUT),
                    "-H",
                    "Accept: text/event-stream",
                    f"http://127.0.0.1:{server.port}/sse",
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
    assert result.stdout == b"event: note\nid: 7\ndata: via curl\n\n"


# -- other threads ----------------------------------------------------------------


async def test_writes_from_many_threads_all_arrive_in_per_thread_order(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), max_queue_messages=10_000)
    n_threads, n_messages = 8, 200
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        await rec.opened.wait()
        client = rec.clients[0]
        barrier = threading.Barrier(n_threads)
        results: list[bool] = []

        def writer(t: int) -> None:
            barrier.wait(timeout=TIMEOUT)
            ok = [client.write(f"{t}:{i}") for i in range(n_messages)]
            results.append(all(ok))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        messages = await ws.messages(n_threads * n_messages)
        await in_thread(lambda: [t.join(TIMEOUT) for t in threads])
    assert results == [True] * n_threads
    by_thread: dict[int, list[int]] = {}
    for m in messages:
        t, i = m.split(":")
        by_thread.setdefault(int(t), []).append(int(i))
    assert by_thread == {t: list(range(n_messages)) for t in range(n_threads)}
    await ws.aclose()


async def test_close_from_another_thread(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            client = rec.clients[0]

            def from_thread() -> None:
                client.write("last")
                client.close()

            await in_thread(from_thread)
            assert await ws.get_message() == "last"
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code
        await rec.closed.wait()
    assert code == 1000


async def test_thread_started_before_the_server_runs_can_write(start_server: Any) -> None:
    # The seed's clock: a thread started at import time, before serve().
    clients: list[Any] = []
    lock = threading.Lock()
    stop = threading.Event()

    def clock() -> None:
        n = 0
        while not stop.is_set():
            with lock:
                for c in clients:
                    c.write(f"tick {n}")
            n += 1
            time.sleep(0.01)

    class Clock:
        def on_open(self, client: Any) -> None:
            with lock:
                clients.append(client)

        def on_close(self, client: Any) -> None:
            with lock:
                clients.remove(client)

    thread = threading.Thread(target=clock, daemon=True)
    thread.start()
    try:
        server = await start_server(push_app(Clock()))
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                first = await ws.get_message()
                second = await ws.get_message()
            async with (
                http_client() as http,
                aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
            ):
                sse = await es.aiter_sse().__anext__()
    finally:
        stop.set()
        await in_thread(thread.join, TIMEOUT)
    assert first.startswith("tick ")
    assert int(second.split()[1]) > int(first.split()[1])
    assert sse.event == "msg"
    assert sse.data.startswith("tick ")


async def test_bytes_like_messages_go_as_binary(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            client = rec.clients[0]
            client.write(bytearray(b"from bytearray"))
            client.write(memoryview(b"from memoryview"))
            client.write("text")
            got = [await ws.get_message() for _ in range(3)]
    assert got == [b"from bytearray", b"from memoryview", "text"]


async def test_writes_from_a_worker_thread_callback_come_before_the_close(
    start_server: Any,
) -> None:
    class Burst:
        def on_open(self, client: Any) -> None:
            for i in range(100):
                client.write(f"w{i}")
            client.close()

    server = await start_server(push_app(Burst()), threads=2)

    def client() -> tuple[list[Any], int | None]:
        got = []
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            try:
                while True:
                    got.append(ws.recv(timeout=TIMEOUT))
            except WSClosed as exc:
                return got, exc.rcvd.code if exc.rcvd else None

    with trio.fail_after(TIMEOUT):
        got, code = await in_thread(client)
    assert got == [f"w{i}" for i in range(100)]
    assert code == 1000


async def test_what_cannot_be_sent_fails_in_the_calling_thread_not_the_server(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            await rec.opened.wait()
            client = rec.clients[0]

            def from_thread() -> list[str]:
                errors = []
                for bad in (lambda: client.write(b"\xff"), lambda: client.write("x", id="a\nb")):
                    try:
                        bad()
                    except ValueError as exc:
                        errors.append(type(exc).__name__)
                client.write("still fine")
                client.close()
                return errors

            errors = await in_thread(from_thread)
            got = [event.data async for event in es.aiter_sse()]
    assert errors == ["UnicodeDecodeError", "ValueError"]
    assert got == ["still fine"]
    async with http_client() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/plain")).status_code == 200


async def test_a_close_code_endpoints_may_not_send_fails_in_the_calling_thread(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            client = rec.clients[0]

            def from_thread() -> str:
                try:
                    client.close(999)
                except ValueError as exc:
                    return str(exc)
                return "no error"

            assert "999" in await in_thread(from_thread)
            assert client.open
            await in_thread(client.close, 4000)
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code
    assert code == 4000


class Closes:
    """Records close_code and close_reason as on_close sees them."""

    def __init__(self) -> None:
        self.client: trio_push.Client | None = None
        self.opened = trio.Event()
        self.closed = trio.Event()
        self.seen: list[tuple[Any, str]] = []
        self.while_open: list[Any] = []

    async def on_open(self, client: trio_push.Client) -> None:
        self.client = client
        self.while_open.append(client.close_code)
        self.opened.set()

    async def on_close(self, client: trio_push.Client) -> None:
        self.seen.append((client.close_code, client.close_reason))
        self.closed.set()


async def serve(start_server: Any, **options: Any) -> tuple[trio_push.Server, Closes]:
    handler = Closes()
    return await start_server(push_app(handler), **options), handler


async def test_on_close_sees_the_code_the_peer_closed_with(start_server: Any) -> None:
    server, handler = await serve(start_server)

    def peer() -> None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.close(4001, "going to lunch")

    with trio.fail_after(TIMEOUT):
        await in_thread(peer)
        await handler.closed.wait()
    assert handler.while_open == [None]
    assert handler.seen == [(4001, "going to lunch")]


async def test_on_close_sees_1008_when_the_queue_bound_closed_a_client_that_does_not_read(
    start_server: Any,
) -> None:
    server, handler = await serve(start_server, max_queue_messages=10)
    ws = await RawWebSocket.open(server.port, rcvbuf=4096)
    with trio.fail_after(TIMEOUT):
        await handler.opened.wait()
        client = handler.client
        assert client is not None
        await fill_until_refused(client)
        while client.write("more"):
            pass
        await handler.closed.wait()
    ((code, reason),) = handler.seen
    assert code is sp.CloseCode.POLICY_VIOLATION
    assert reason == "send queue full: the client does not read"
    await ws.aclose()


async def test_on_close_sees_the_code_the_server_closed_with(start_server: Any) -> None:
    server, handler = await serve(start_server)

    def peer() -> int | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            try:
                ws.recv(TIMEOUT)
            except WSClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None
        return None

    async def close_when_open() -> None:
        await handler.opened.wait()
        assert handler.client is not None
        handler.client.close(4000, "done")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_when_open)
            assert await in_thread(peer) == 4000
        await handler.closed.wait()
    assert handler.seen == [(4000, "done")]


async def test_on_close_sees_1006_when_the_peer_drops_the_connection(start_server: Any) -> None:
    server, handler = await serve(start_server)
    ws = await RawWebSocket.open(server.port)
    with trio.fail_after(TIMEOUT):
        await handler.opened.wait()
        await ws.aclose()
        await handler.closed.wait()
    ((code, reason),) = handler.seen
    assert code is sp.CloseCode.ABNORMAL
    assert reason == ""


async def test_an_event_stream_has_no_close_code(start_server: Any) -> None:
    server, handler = await serve(start_server)
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            http.stream(
                "GET", f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"}
            ),
        ):
            await handler.opened.wait()
        await handler.closed.wait()
    assert handler.while_open == [None]
    assert handler.seen == [(None, "")]


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str, message: str) -> list[int]:
    """Count the calls of sansio_push's function ``name`` that encode
    ``message``, wherever its modules refer to it."""
    calls = [0]
    real = getattr(sansio_push, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += args[0] == message
        return real(*args, **kwargs)

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("sansio_push.") and getattr(module, name, None) is real:
            monkeypatch.setattr(module, name, counting)
    return calls


async def test_a_write_from_a_thread_is_encoded_once_on_sse(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, handler = await serve(start_server)
    calls = count_calls(monkeypatch, "encode_event", "from a thread")
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            await handler.opened.wait()
            client = handler.client
            assert client is not None
            assert await in_thread(client.write, "from a thread")
            event = await es.aiter_sse().__anext__()
    assert (event.event, event.data) == ("msg", "from a thread")
    assert calls == [1]


async def test_a_write_from_a_thread_is_encoded_once_on_a_websocket(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, handler = await serve(start_server)
    calls = count_calls(monkeypatch, "encode_message", "from a thread")
    ws = await RawWebSocket.open(server.port)
    with trio.fail_after(TIMEOUT):
        await handler.opened.wait()
        client = handler.client
        assert client is not None
        assert await in_thread(client.write, "from a thread")
        assert await ws.messages(1) == ["from a thread"]
    assert calls == [1]
    await ws.aclose()
