/*
 * Patient status page: token, counter, status, tokens ahead and the estimated wait, live over SSE.
 * Public and personal-data free: the server sends only the token label, counter and queue position.
 */
(function () {
  "use strict";
  var D = window.OpdPage.data();
  var S = D.strings || {};
  var LOCALE = { en: "en-IN", hi: "hi-IN", gu: "gu-IN" }[D.lang] || "en-IN";
  var numbers = new Intl.NumberFormat(LOCALE);
  var state = { status: null, position: null, eta: null, updates: 0, connected: false, last: null };
  window.statusState = state;

  function t(key, params) {
    var text = S[key] || key;
    Object.keys(params || {}).forEach(function (k) { text = text.split("{" + k + "}").join(String(params[k])); });
    return text;
  }
  function $(id) { return document.getElementById(id); }

  function render(s) {
    state.status = s.status;
    state.position = s.position;
    state.eta = s.eta_minutes;
    state.updates += 1;
    state.last = s;
    $("status-card").dataset.status = s.status;
    $("status-label").textContent = s.label;
    $("status-counter").textContent = (s.counter_names && s.counter_names[D.lang]) || s.counter_name;
    var main = t("status.state_" + s.status);
    if (s.status === "called") main = t("status.go_to", { desk: s.desk_name || s.desk || "" });
    $("status-main").textContent = main;
    var pos = "";
    if (s.status === "waiting" && s.position != null) {
      pos = s.position === 0 ? t("status.next") : t("status.ahead", { n: numbers.format(s.position) });
    }
    $("status-position").textContent = pos;
    $("status-position").dataset.position = s.position == null ? "" : String(s.position);
    $("status-eta").textContent = s.status === "waiting" && s.eta_minutes ? t("status.eta", { n: numbers.format(s.eta_minutes) }) : "";
  }

  function setConnected(ok) {
    state.connected = ok;
    $("status-offline").classList.toggle("hidden", ok);
  }

  window.OpdLive.connect("/api/status/" + encodeURIComponent(D.public_id) + "/events", {
    status: function (s) { setConnected(true); render(s); },
    offline: function () { setConnected(false); },
  }, setConnected);
})();
