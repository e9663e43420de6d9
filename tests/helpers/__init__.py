"""Helpers shared by the tests, each defined once (none of these is a test module).

- ``server``: apps, raw sockets and real clients for a server in the test's own Trio run.
- ``frames``: WebSocket frames built by hand, a client that sends them, a bystander.
- ``procs``: servers as subprocesses, as a user runs them, on a free port.
- ``pubsub``: cheap raw push clients, a throwaway ``redis-server``.
- ``browser``: headless Chromium.
"""
