// push.js: trio-push's browser helper, a WebSocket that resumes. Plain JS: no build, no dependency.
//   var sock = pushSocket("/ws", {onmessage: function (data, channel, position) {},
//                                 onopen: function (event) {}, onclose: function (event) {}});
//   sock.send(data)   false while not connected; sock.close() closes for good (no reconnect);
//   sock.positions    {channel: position}, where the page is on each channel.
// The server app subscribes from there: client.subscribe(ch, since=client.since(ch), envelope=True).
// Each envelope, JSON {"channel", "position", "data"} (binary: that JSON without data, "\n", the
// bytes), gives onmessage(data, channel, position), data a string or an ArrayBuffer. One without
// data says where a subscription starts: recorded, not delivered. A message that is not an
// envelope (the app's own client.write) comes as onmessage(data, null, null).
// After any close it reconnects with ?since=<JSON positions>, waiting minDelay ms (250), doubled
// after each failure up to maxDelay (10000), with jitter; back to minDelay once open.
// Served by trio_push.js_helper_app: router.handle("GET", "/push.js", trio_push.js_helper_app).
// Options: minDelay, maxDelay, protocols (WebSocket subprotocols), since (positions to start from).
(function (root) {
  "use strict";
  function envelope(raw) {
    var head, data;
    try {
      if (typeof raw === "string") {
        head = JSON.parse(raw);
        data = head.data;
      } else {
        var bytes = new Uint8Array(raw), nl = bytes.indexOf(10);
        if (nl < 0) return null;
        head = JSON.parse(new TextDecoder().decode(bytes.subarray(0, nl)));
        data = raw.slice(nl + 1);
      }
    } catch (e) { return null; }
    return head && typeof head.channel === "string" && "position" in head ? [head, data] : null;
  }
  function pushSocket(url, options) {
    var o = options || {}, min = o.minDelay || 250, max = o.maxDelay || 10000, delay = min;
    var sock = {positions: Object.assign({}, o.since), ws: null}, stopped = false, timer = null;
    function target() {
      var u = new URL(url, root.location.href), known = Object.keys(sock.positions).length;
      u.protocol = u.protocol.replace(/^http/, "ws");
      var query = new URLSearchParams(u.search);
      query.delete("since");  // the one of the last connection
      if (known) query.set("since", JSON.stringify(sock.positions));
      u.search = query.toString();
      return u.href;
    }
    function connect() {
      timer = null;
      var ws = sock.ws = new WebSocket(target(), o.protocols);
      ws.binaryType = "arraybuffer";
      ws.onopen = function (e) { delay = min; if (o.onopen) o.onopen(e); };
      ws.onmessage = function (e) {
        var found = envelope(e.data);
        if (!found) { if (o.onmessage) o.onmessage(e.data, null, null); return; }
        var head = found[0];
        if (head.position) sock.positions[head.channel] = head.position;
        if (("data" in head || typeof e.data !== "string") && o.onmessage) {
          o.onmessage(found[1], head.channel, head.position);
        }
      };
      ws.onclose = function (e) {
        if (o.onclose) o.onclose(e);
        if (stopped) return;
        timer = setTimeout(connect, delay / 2 + Math.random() * delay / 2);
        delay = Math.min(delay * 2, max);
      };
    }
    sock.send = function (data) {
      if (!sock.ws || sock.ws.readyState !== 1) return false;
      sock.ws.send(data);
      return true;
    };
    sock.close = function (code, reason) {
      stopped = true;
      clearTimeout(timer);
      if (sock.ws) sock.ws.close(code || 1000, reason);
    };
    connect();
    return sock;
  }
  root.pushSocket = pushSocket;
})(typeof self !== "undefined" ? self : this);
