/*
 * Display board: now serving per desk, the last calls, waiting counts; chime + spoken call-out per call.
 * State comes only from the server (snapshot on every (re)connect, then call/update events), so a board
 * that was offline shows the right state when it returns. window.boardState is read by tests.
 * When the facility shows names, entries carry `name`, already masked by the server ("R**** K****").
 */
(function () {
  "use strict";
  var D = window.OpdPage.data();
  var S = D.strings || {};
  var LOCALE = { en: "en-IN", hi: "hi-IN", gu: "gu-IN" }[D.lang] || "en-IN";
  var HIGHLIGHT_MS = 15000;
  var state = {
    connected: false, version: 0, desks: [], recent: [], waiting: {}, calls: [], snapshots: 0,
    updates: 0, highlighted: null, soundUnlocked: false,
  };
  window.boardState = state;

  function t(key, params) {
    var text = S[key] || key;
    Object.keys(params || {}).forEach(function (k) { text = text.split("{" + k + "}").join(String(params[k])); });
    return text;
  }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }
  function counterName(code) {
    var c = D.counters.filter(function (x) { return x.code === code; })[0];
    return c ? (c.names && c.names[D.lang]) || c.name : code;
  }
  var numbers = new Intl.NumberFormat(LOCALE);
  var clock = localClock(D.timezone);

  // The facility's local time (the PC behind a TV is often left on UTC); the PC's own zone if the
  // browser does not know the facility's.
  function localClock(zone) {
    var opts = { hour: "2-digit", minute: "2-digit" };
    try {
      return new Intl.DateTimeFormat(LOCALE, zone ? Object.assign({ timeZone: zone }, opts) : opts);
    } catch (e) {
      return new Intl.DateTimeFormat(LOCALE, opts);
    }
  }

  function isFresh(call) {
    return state.highlighted && call && call.label === state.highlighted.label && call.desk === state.highlighted.desk &&
      Date.now() - state.highlighted.shownAt < HIGHLIGHT_MS;
  }

  function renderDesks() {
    var box = $("desk-tiles");
    box.textContent = "";
    box.dataset.count = String(state.desks.length);
    state.desks.forEach(function (d) {
      var tile = el("div", "desk-tile");
      tile.dataset.desk = d.desk;
      var now = d.now;
      if (now && isFresh(now)) tile.classList.add("fresh");
      tile.appendChild(el("div", "tile-desk", d.name || d.desk));
      tile.appendChild(el("div", "tile-token" + (now ? "" : " empty"), now ? now.label : "—"));
      if (now && now.name) tile.appendChild(el("div", "tile-name", now.name));
      tile.appendChild(el("div", "tile-counter", now ? counterName(now.counter) : " "));
      box.appendChild(tile);
    });
  }

  function renderRecent() {
    var list = $("recent-list");
    list.textContent = "";
    state.recent.slice(0, 8).forEach(function (c, i) {
      var li = el("li", "recent-item" + (i === 0 && isFresh(c) ? " fresh" : ""));
      li.appendChild(el("span", "r-token", c.label));
      li.appendChild(el("span", "r-arrow", "→"));
      li.appendChild(el("span", "r-desk", c.desk_name || c.desk));
      li.appendChild(el("span", "r-time", clock.format(new Date(c.at))));
      if (c.name) li.appendChild(el("span", "r-name", c.name));
      list.appendChild(li);
    });
  }

  function renderCounts() {
    var list = $("count-list");
    list.textContent = "";
    Object.keys(state.waiting).forEach(function (code) {
      var li = el("li", "count-item");
      li.dataset.counter = code;
      li.appendChild(el("span", "c-name", counterName(code)));
      li.appendChild(el("span", "c-num", numbers.format(state.waiting[code])));
      list.appendChild(li);
    });
  }

  function render() {
    renderDesks();
    renderRecent();
    renderCounts();
  }

  function apply(snap) {
    state.version = snap.version;
    state.desks = snap.desks;
    state.recent = snap.recent;
    state.waiting = snap.waiting;
    render();
  }

  function knownName(call) {
    // A call normally comes with the snapshot rebuilt after it, which names the patient; one sent ahead
    // of a late rebuild has no name yet (the update right after carries it); a recall has it.
    var seen = state.desks.map(function (d) { return d.now; }).concat(state.recent).filter(function (c) {
      return c && c.label === call.label && c.counter === call.counter && c.name;
    })[0];
    return seen ? seen.name : undefined;
  }

  function onCall(call) {
    if (!call.name && knownName(call)) call.name = knownName(call);
    state.calls.push(call);
    if (state.calls.length > 200) state.calls.shift();
    state.highlighted = { label: call.label, desk: call.desk, shownAt: Date.now() };
    // Show it at once; the update that follows within ~0.1 s carries the authoritative state.
    state.desks.forEach(function (d) { if (d.desk === call.desk) d.now = call; });
    state.recent = [call].concat(state.recent).slice(0, 10);
    render();
    window.OpdCallout.enqueue({ label: call.label, desk: call.desk_name || call.desk, languages: D.languages });
    setTimeout(render, HIGHLIGHT_MS + 50);
  }

  function setConnected(ok) {
    state.connected = ok;
    var badge = $("board-status");
    badge.dataset.state = ok ? "online" : "offline";
    badge.classList.toggle("hidden", ok);
  }

  function tick() { $("board-clock").textContent = clock.format(new Date()); }

  // ?rate=1.25 speeds the voice up for a hall that finds it slow (0.5 .. 4).
  var rate = parseFloat(new URLSearchParams(window.location.search).get("rate"));
  var voice = { base: "/static/voice/", languages: D.languages };
  if (rate >= 0.5 && rate <= 4) voice.playbackRate = rate;
  window.OpdCallout.init(voice);
  var startBtn = $("start-sound");
  startBtn.addEventListener("click", function () {
    window.OpdCallout.unlock().then(function (ok) {
      state.soundUnlocked = ok;
      if (ok) startBtn.classList.add("hidden");
    });
  });

  var params = new URLSearchParams(D.query || {});
  var url = "/api/facilities/" + encodeURIComponent(D.hip_id) + "/board/events" + (params.toString() ? "?" + params : "");
  window.OpdLive.connect(url, {
    snapshot: function (snap) { state.snapshots += 1; setConnected(true); apply(snap); },
    update: function (snap) { state.updates += 1; apply(snap); },
    call: onCall,
    offline: function () { setConnected(false); },
  }, setConnected);
  tick();
  setInterval(tick, 10000);
})();
