"""A Flask app with push: ordinary pages and JSON, plus SSE and WebSocket
updates whenever the form is posted.

Run it from this folder:

    trio-push app:app

then open http://localhost:9292/ in two windows and post a note in one.
"""

import time

from flask import Flask, jsonify, redirect, render_template, request, url_for

import trio_push

app = Flask(__name__)
notes: list[dict[str, str]] = []


class Updates:
    """Every push client (WebSocket or SSE) subscribes to the 'notes' channel,
    then hears "subscribed" (an SSE event of type 'ready'), so it knows that
    no later note can pass it by."""

    def on_open(self, client):
        client.subscribe("notes")
        client.write("subscribed", event="ready")


updates = Updates()


@app.get("/")
def index():
    return render_template("index.html", notes=notes)


@app.get("/notes.json")
def notes_json():
    return jsonify(notes)


@app.post("/notes")
def add_note():
    note = {"text": request.form["text"], "at": time.strftime("%H:%M:%S")}
    notes.append(note)
    # One publish reaches every subscriber, over WebSocket and SSE alike.
    trio_push.publish("notes", f"{note['at']} {note['text']}")
    if request.accept_mimetypes.best == "application/json":
        return jsonify(note), 201
    return redirect(url_for("index"))


@app.get("/events")
def events():
    """SSE: the browser's EventSource connects here."""
    if request.environ["rack.upgrade?"] != "sse":
        return "this URL is for EventSource\n", 400
    request.environ["rack.upgrade"] = updates
    return ""


# Werkzeug matches a WebSocket handshake only to a rule marked websocket=True.
@app.route("/ws", websocket=True)
def ws():
    """WebSocket: the browser's WebSocket connects here."""
    if request.environ["rack.upgrade?"] != "websocket":
        return "this URL is for WebSocket\n", 400
    request.environ["rack.upgrade"] = updates
    return ""
