"""The views: an ordinary page and form, and one URL that accepts push."""

import asyncio
import time

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

import trio_push

from . import push

CHANNEL = "notes"
notes: list[dict[str, str]] = []


class Updates:
    """Every push client (WebSocket or SSE) subscribes to the 'notes' channel,
    then hears "subscribed" (an SSE event of type 'ready'), so it knows that
    no later note can pass it by."""

    def on_open(self, client):
        client.subscribe(CHANNEL)
        client.write("subscribed", event="ready")


updates = Updates()


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "notes/index.html", {"notes": notes})


async def notes_json(request: HttpRequest) -> JsonResponse:
    """An async view: under ASGI it runs on the server's asyncio loop (under
    WSGI, Django gives it a loop of its own in the request's thread)."""
    await asyncio.sleep(0)
    return JsonResponse({"notes": notes, "loop": type(asyncio.get_running_loop()).__module__})


@require_POST
def add_note(request: HttpRequest) -> HttpResponse:
    """The form's POST (CSRF-checked by Django's middleware): keep the note and
    publish it to every open page, over WebSocket and SSE alike."""
    text = request.POST.get("text", "").strip()
    if not text:
        return HttpResponse("a note needs some text\n", status=400)
    note = {"text": text, "at": time.strftime("%H:%M:%S")}
    # publish is safe from the view's worker thread; False means nobody got it
    # (with --redis: Redis is unreachable), and the poster is told.
    if not trio_push.publish(CHANNEL, f"{note['at']} {note['text']}"):
        return HttpResponse("not published: the push server cannot reach Redis\n", status=503)
    notes.append(note)
    if request.accepts("application/json") and not request.accepts("text/html"):
        return JsonResponse(note, status=201)
    return redirect("index")


async def live(request: HttpRequest) -> HttpResponse:
    """The page's EventSource and its WebSocket connect here: a 2xx after
    ``push.accept`` hands either to ``updates``. Under WSGI both reach this view
    (Django needs no WebSocket route); under ASGI the event stream does, and
    the WebSocket goes to the same handler without Django (pushsite/asgi.py)."""
    if not push.accept(request, updates):
        return HttpResponse("this URL is for EventSource and WebSocket\n", status=400)
    return HttpResponse()
