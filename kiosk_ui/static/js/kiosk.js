/*
 * Walk-in kiosk: touch a department -> walk-in token (kiosk device auth) -> slip on the paired printer.
 * The kiosk's device token arrives once as ?device=dev_... (or is typed on the setup screen) and is kept
 * in localStorage; it is removed from the address bar at once so it does not linger in history.
 * A USB QR scanner acts as a keyboard: it types the ABHA card's JSON into a hidden field and presses Enter.
 * Nothing here calls outside the hospital's own service, so the kiosk works without internet.
 */
(function () {
  "use strict";
  var el = document.getElementById("page-data");
  var data = window.OpdPage ? window.OpdPage.data() : JSON.parse(el ? el.textContent : "{}");
  var STORE = "opd_kiosk_device:" + data.hip_id;
  var RETURN_MS = 20000; // the next patient should not find the previous number on screen
  var CARD_MS = 90000; // a scanned card is forgotten if nobody picks a department
  var lang = data.lang;
  var cardQr = null;
  var cardTimer = null;
  var returnTimer = null;
  var busy = false;

  function $(id) { return document.getElementById(id); }
  function t(key) {
    var own = data.strings[lang] || {};
    return own[key] || (data.strings.en || {})[key] || key;
  }

  function deviceToken() {
    var params = new URLSearchParams(window.location.search);
    var given = params.get("device");
    if (given) {
      try { window.localStorage.setItem(STORE, given); } catch (e) { /* private mode: keep it in memory */ }
      params.delete("device");
      var rest = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
      return given;
    }
    try { return window.localStorage.getItem(STORE); } catch (e) { return null; }
  }
  var token = deviceToken();

  function applyLang(code) {
    lang = code;
    document.documentElement.lang = code;
    document.querySelectorAll("[data-i18n]").forEach(function (node) {
      node.textContent = t(node.getAttribute("data-i18n"));
    });
    document.querySelectorAll(".kiosk-lang").forEach(function (b) {
      var on = b.getAttribute("data-lang") === code;
      b.classList.toggle("current", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    document.querySelectorAll(".kiosk-counter").forEach(function (b) {
      var counter = counterOf(b.getAttribute("data-code"));
      if (counter) b.querySelector(".kiosk-counter-name").textContent = counter.names[code];
    });
    $("kiosk-facility").textContent = data.facility[code];
    document.title = data.facility[code] + " · " + t("kiosk.title");
  }

  function counterOf(code) {
    for (var i = 0; i < data.counters.length; i++) if (data.counters[i].code === code) return data.counters[i];
    return null;
  }

  function show(id) {
    ["screen-home", "screen-busy", "screen-done", "screen-error", "screen-setup"].forEach(function (s) {
      $(s).classList.toggle("hidden", s !== id);
    });
    if (id === "screen-home") focusScanner();
  }

  function focusScanner() {
    var scan = $("kiosk-scan");
    if (document.activeElement !== scan && !$("screen-home").classList.contains("hidden")) {
      scan.focus({ preventScroll: true });
    }
  }

  function home() {
    clearTimeout(returnTimer);
    forgetCard();
    applyLang(data.default_lang);
    busy = false;
    show(token ? "screen-home" : "screen-setup");
  }

  function later() {
    clearTimeout(returnTimer);
    returnTimer = setTimeout(home, RETURN_MS);
  }

  function cardText(key) {
    // Kept in data-i18n so a language switch re-translates whatever the bar currently says.
    var node = $("kiosk-card-text");
    node.setAttribute("data-i18n", key);
    node.textContent = t(key);
  }

  function forgetCard() {
    cardQr = null;
    clearTimeout(cardTimer);
    $("kiosk-card-bar").classList.remove("read", "bad");
    cardText("kiosk.scan_hint");
    $("kiosk-card-cancel").classList.add("hidden");
  }

  function onScan(raw) {
    var text = raw.trim();
    var ok = false;
    try { ok = text.charAt(0) === "{" && typeof JSON.parse(text) === "object"; } catch (e) { ok = false; }
    forgetCard();
    if (!ok) {
      $("kiosk-card-bar").classList.add("bad");
      cardText("kiosk.scan_bad");
      return;
    }
    // Parsed and checked by the service (both card and app QR layouts); the kiosk only carries it.
    cardQr = text;
    $("kiosk-card-bar").classList.add("read");
    cardText("kiosk.scan_read");
    $("kiosk-card-cancel").classList.remove("hidden");
    cardTimer = setTimeout(forgetCard, CARD_MS);
  }

  function api(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify(body),
      credentials: "omit",
    });
  }

  function fail(message) {
    busy = false;
    $("kiosk-error-text").textContent = message;
    show("screen-error");
    later();
  }

  function getToken(code) {
    if (busy) return;
    busy = true;
    show("screen-busy");
    var body = cardQr ? { abha_qr: cardQr } : {};
    api("/api/facilities/" + encodeURIComponent(data.hip_id) + "/counters/" + encodeURIComponent(code) + "/tokens", body)
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          forgetToken();
          return null;
        }
        return r.json().then(function (j) { return { status: r.status, body: j }; });
      })
      .then(function (res) {
        if (!res) return;
        if (res.status !== 201) {
          var err = res.body && res.body.error;
          if (err === "invalid_abha_qr") fail(t("kiosk.error_card"));
          else if (err === "counter_closed") fail(t("kiosk.error_closed"));
          else if (res.status === 503) fail(t("kiosk.error_network"));
          else fail(t("kiosk.error_generic"));
          forgetCard();
          return;
        }
        var issued = res.body;
        // A missing slip must not hide the number: show it either way, with the right advice.
        return api("/api/tokens/" + encodeURIComponent(issued.id) + "/print", { language: lang })
          .then(function (r) { return r.status === 202; }, function () { return false; })
          .then(function (printed) { done(issued, code, printed); });
      })
      .catch(function () { fail(t("kiosk.error_network")); });
  }

  function done(issued, code, printed) {
    busy = false;
    forgetCard();
    var number = $("kiosk-number");
    number.textContent = issued.label;
    number.setAttribute("data-token-id", issued.id);
    number.setAttribute("data-public-id", issued.public_id);
    var counter = counterOf(code);
    $("kiosk-done-counter").textContent = counter ? counter.names[lang] : code;
    var take = $("kiosk-take");
    take.setAttribute("data-i18n", printed ? "kiosk.take_slip" : "kiosk.slip_failed");
    take.textContent = t(take.getAttribute("data-i18n"));
    take.classList.toggle("warn", !printed);
    $("kiosk-already").classList.toggle("hidden", issued.outcome !== "rescan" && issued.outcome !== "duplicate");
    show("screen-done");
    later();
  }

  function forgetToken() {
    token = null;
    try { window.localStorage.removeItem(STORE); } catch (e) { /* nothing stored */ }
    busy = false;
    $("kiosk-setup-rejected").classList.remove("hidden");
    show("screen-setup");
  }

  document.querySelectorAll(".kiosk-lang").forEach(function (b) {
    b.addEventListener("click", function () { applyLang(b.getAttribute("data-lang")); focusScanner(); });
  });
  document.querySelectorAll(".kiosk-counter").forEach(function (b) {
    b.addEventListener("click", function () { getToken(b.getAttribute("data-code")); });
  });
  $("kiosk-card-cancel").addEventListener("click", function () { forgetCard(); focusScanner(); });
  $("kiosk-done-ok").addEventListener("click", home);
  $("kiosk-error-ok").addEventListener("click", home);
  $("kiosk-scan").addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    var value = ev.target.value;
    ev.target.value = "";
    if (value) onScan(value);
  });
  // Touches elsewhere must not leave the scanner typing into nowhere.
  document.addEventListener("click", function () { setTimeout(focusScanner, 0); });
  window.addEventListener("focus", focusScanner);
  $("kiosk-setup-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var value = $("kiosk-setup-token").value.trim();
    if (!value) return;
    token = value;
    try { window.localStorage.setItem(STORE, value); } catch (e) { /* kept in memory only */ }
    $("kiosk-setup-token").value = "";
    $("kiosk-setup-rejected").classList.add("hidden");
    home();
  });

  home();
})();
