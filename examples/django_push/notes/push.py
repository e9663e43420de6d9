"""Push from Django views, under WSGI and under ASGI alike.

Under WSGI a view accepts a push request by setting ``request.META['rack.upgrade']``
(``META`` is the WSGI environ). Under ASGI, Django's handler owns ``send``, so a
view cannot send the ``trio_push.upgrade`` message itself: :func:`accept` puts the
handler in ``request.scope`` and :func:`asgi` (around Django's application) sends
the message in place of the view's 2xx response. Django serves ``http`` scopes
only; a WebSocket goes to ``websocket_app`` instead, without Django.
"""

from typing import Any

import trio_push

#: Where :func:`accept` leaves the handler for :func:`asgi`, in the ASGI scope.
HANDLER = "trio_push.handler"


def accept(request: Any, handler: Any) -> bool:
    """Hand ``request`` to ``handler`` if it is a push request (WebSocket or
    SSE); False if it is not (answer it as any other request)."""
    scope = getattr(request, "scope", None)
    if scope is None:  # WSGI
        if not request.META.get("rack.upgrade?"):
            return False
        request.META["rack.upgrade"] = handler
        return True
    if "trio_push.upgrade" not in scope.get("extensions", {}):
        return False
    scope[HANDLER] = handler
    return True


def asgi(django_app: Any, websocket_app: Any) -> Any:
    """Django's ASGI application, where a view may :func:`accept` push, and
    WebSocket requests (which Django does not serve) given to ``websocket_app``."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await websocket_app(scope, receive, send)
            return
        if "trio_push.upgrade" not in scope.get("extensions", {}):
            await django_app(scope, receive, send)
            return

        async def send_or_upgrade(message: dict[str, Any]) -> None:
            handler = scope.get(HANDLER)
            if handler is None:
                await send(message)
            elif message["type"] == "http.response.start":
                if message["status"] < 300:
                    await send({"type": "trio_push.upgrade", "handler": handler})
                else:  # the view accepted, then answered otherwise (a middleware?)
                    del scope[HANDLER]
                    await send(message)
            # The body of a response the upgrade took the place of is not sent.

        await django_app(scope, receive, send_or_upgrade)

    return application


def websockets(paths: dict[str, Any]) -> trio_push.ASGIPush:
    """The WebSocket side: the handler for the request's path (403 elsewhere)."""
    return trio_push.ASGIPush(lambda scope: paths.get(scope["path"]))
