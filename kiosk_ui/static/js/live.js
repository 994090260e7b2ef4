/*
 * One live connection to a server-sent event stream, kept alive across network drops and service restarts.
 *
 *   OpdLive.connect("/api/facilities/X/board/events", {snapshot: fn, update: fn, call: fn}, onState)
 *
 * EventSource retries by itself after a dropped stream, but gives up for good after an HTTP error (a 502
 * from a proxy while the service restarts); then we open a new one with backoff. The server sends a
 * "ping" event every 15 s, so silence for 40 s means a half-open connection: reconnect. Every new
 * connection starts with a full snapshot, which is how a board that was offline catches up.
 */
(function (root) {
  "use strict";
  var SILENCE_MS = 40000;

  function connect(url, handlers, onState) {
    var source = null;
    var delay = 500;
    var lastSeen = Date.now();
    var retryTimer = null;
    var stopped = false;
    var status = { connected: false, connects: 0, errors: 0 };

    function setState(connected) {
      status.connected = connected;
      if (onState) onState(connected, status);
    }

    function open() {
      if (stopped) return;
      retryTimer = null;
      source = new root.EventSource(url);
      source.onopen = function () {
        status.connects += 1;
        delay = 500;
        lastSeen = Date.now();
        setState(true);
      };
      source.onerror = function () {
        status.errors += 1;
        setState(false);
        if (source.readyState === root.EventSource.CLOSED) retry();
      };
      Object.keys(handlers).forEach(function (name) {
        source.addEventListener(name, function (ev) {
          lastSeen = Date.now();
          var data = null;
          try { data = JSON.parse(ev.data); } catch (e) { return; }
          handlers[name](data, ev);
        });
      });
      source.addEventListener("ping", function () { lastSeen = Date.now(); });
    }

    function retry() {
      if (source) source.close();
      if (retryTimer || stopped) return;
      retryTimer = root.setTimeout(open, delay);
      delay = Math.min(delay * 2, 5000);
    }

    root.setInterval(function () {
      if (!stopped && Date.now() - lastSeen > SILENCE_MS) {
        lastSeen = Date.now();
        setState(false);
        retry();
      }
    }, 5000);

    open();
    return {
      status: status,
      close: function () { stopped = true; if (source) source.close(); },
    };
  }

  root.OpdLive = { connect: connect };
})(window);
