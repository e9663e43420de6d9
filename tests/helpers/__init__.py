"""Helpers shared by the tests, each defined once (none of these is a test module).

- ``server``: ``TIMEOUT``, handlers and apps (``Recorder``, ``push_app``, ``Echo``), raw
  sockets (``connect``, ``exchange``, ``RawWebSocket``), the clients we did not write
  (``ws_connect``, ``http_client``, ``get``), ``wait_for``: for a server in the test's own
  Trio run (the ``start_server`` fixture, tests/conftest.py).
- ``frames``: WebSocket frames built by hand, a client that sends them (``RawWS``), and a
  ``Bystander`` that must keep being served.
- ``procs``: servers as subprocesses, as a user runs them: ``free_port``, ``running``, the
  CLI (``cli``, ``run_cli``), ``vm_rss_kib``.
- ``pubsub``: cheap raw push clients by the thousand, a throwaway ``redis-server``,
  in-process servers whose handler subscribes, ``ServerProcess``.
- ``history``: channel history: an ``EventSource`` that resumes with ``Last-Event-ID``
  (httpx-sse), a ``TcpProxy`` that keeps a server away from Redis.
- ``browser``: headless Chromium.
- ``wstest_venv``: builds the Python 2.7 virtualenv of Autobahn's wstest (also a script).

Fixtures (servers, Redis, TLS, an app folder for the CLI) are in tests/conftest.py.
"""
