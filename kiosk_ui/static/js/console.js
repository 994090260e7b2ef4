/*
 * Clerk console: the desk's waiting line, the called patient's shared profile, and the desk actions
 * (buttons and single-key shortcuts N R S C T U P F). Talks to the JSON API with the session cookie;
 * base.js adds the CSRF header. Live: any board event for the desk's counters refreshes the line.
 */
(function () {
  "use strict";
  var D = window.OpdPage.data();
  if (!D.desk) return;
  var S = D.strings || {};
  var desk = D.desks.filter(function (d) { return d.code === D.desk; })[0];
  var LOCALE = { en: "en-IN", hi: "hi-IN", gu: "gu-IN" }[D.lang] || "en-IN";
  var LANE = { emergency: 0, senior: 1, pwd: 1, pregnant: 1, normal: 2 };
  var state = {
    desk: D.desk, counters: desk.counters, waiting: [], current: null, busy: false,
    refreshes: 0, lastAction: null, lastError: null, lastFhir: null, live: null,
  };
  window.consoleState = state;

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
  function flash(text, bad) {
    var f = $("flash");
    f.textContent = text;
    f.className = "flash" + (bad ? " error" : "");
  }

  function api(method, url, body) {
    var init = { method: method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (resp) {
      if (resp.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
      if (resp.status === 204) return { status: 204, body: null };
      return resp.json().then(
        function (json) { return { status: resp.status, body: json }; },
        function () { return { status: resp.status, body: null }; }
      );
    });
  }
  function failed(res) {
    var detail = res.body && (typeof res.body.detail === "string" ? res.body.detail : res.body.error);
    state.lastError = detail || String(res.status);
    flash(t("console.failed", { detail: state.lastError }), true);
  }

  // ---- the line

  var base = "/api/facilities/" + encodeURIComponent(D.hip_id);
  function refresh() {
    return Promise.all(state.counters.map(function (c) {
      return api("GET", base + "/counters/" + encodeURIComponent(c) + "/queue");
    })).then(function (results) {
      var waiting = [], called = [];
      results.forEach(function (res) {
        if (res.status !== 200) return;
        waiting = waiting.concat(res.body.waiting);
        called = called.concat(res.body.called);
      });
      waiting.sort(function (a, b) {
        return (LANE[a.priority] - LANE[b.priority]) || (Date.parse(a.issued_at) - Date.parse(b.issued_at));
      });
      var mine = called.filter(function (x) { return x.desk === state.desk; });
      mine.sort(function (a, b) { return Date.parse(b.called_at) - Date.parse(a.called_at); });
      state.waiting = waiting;
      state.current = mine[0] || null;
      state.refreshes += 1;
      render();
    });
  }
  var timer = null;
  function scheduleRefresh() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 60);
  }

  function age(p) {
    return p && p.year_of_birth ? new Date().getFullYear() - p.year_of_birth : null;
  }
  function minutesSince(iso) {
    return Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 60000));
  }
  function fmt(n) { return new Intl.NumberFormat(LOCALE).format(n); }
  function badge(text, cls) { return el("span", "badge " + (cls || ""), text); }

  function summary(p) {
    if (!p) return "";
    var bits = [p.name || ""];
    var a = age(p);
    if (a != null || p.gender) bits.push([a != null ? a : "", p.gender ? t("gender." + p.gender) : ""].join(" ").trim());
    if (p.phone) bits.push(p.phone);
    if (p.abha_number) bits.push(p.abha_number);
    if (p.abha_address) bits.push(p.abha_address);
    return bits.filter(Boolean).join(" · ");
  }

  function renderWaiting() {
    var rows = $("waiting-rows");
    rows.textContent = "";
    state.waiting.forEach(function (tok) {
      var tr = el("tr");
      tr.dataset.token = tok.id;
      var label = el("td", "tok");
      label.appendChild(el("strong", null, tok.label));
      if (state.counters.length > 1) label.appendChild(el("span", "muted small", " " + tok.counter));
      tr.appendChild(label);
      var prio = el("td");
      if (tok.priority !== "normal") prio.appendChild(badge(t("priority." + tok.priority), tok.priority === "emergency" ? "emergency" : "prio"));
      prio.appendChild(badge(t("source." + tok.source), tok.source === "walk_in" ? "" : "scan"));
      tr.appendChild(prio);
      tr.appendChild(el("td", "who", summary(tok.patient)));
      tr.appendChild(el("td", "wait", t("console.minutes", { n: fmt(minutesSince(tok.issued_at)) })));
      rows.appendChild(tr);
    });
    $("waiting-count").textContent = fmt(state.waiting.length);
    $("waiting-empty").classList.toggle("hidden", state.waiting.length > 0);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text).catch(function () { legacyCopy(text); });
    legacyCopy(text);
    return Promise.resolve();
  }
  function legacyCopy(text) {
    var area = el("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing else to try */ }
    area.remove();
  }

  function profileRows(p) {
    var addr = p.address || {};
    var place = [addr.line, addr.district, addr.state, addr.pincode].filter(Boolean).join(", ");
    var born = [p.day_of_birth, p.month_of_birth, p.year_of_birth].filter(Boolean).join("-");
    var a = age(p);
    return [
      ["name", p.name], ["age", a != null ? String(a) : null], ["birth", born || null],
      ["gender", p.gender ? t("gender." + p.gender) : null], ["phone", p.phone],
      ["abha_number", p.abha_number], ["abha_address", p.abha_address], ["address", place || null],
    ].filter(function (r) { return r[1]; });
  }

  function renderCurrent() {
    var cur = state.current;
    $("current-label").textContent = cur ? cur.label : "—";
    $("current-meta").textContent = cur
      ? counterName(cur.counter) + " · " + t("priority." + cur.priority) + (cur.recalls ? " · " + t("console.recalled", { n: fmt(cur.recalls) }) : "")
      : "";
    ["btn-recall", "btn-skip", "btn-complete", "btn-transfer", "btn-print"].forEach(function (id) { $(id).disabled = !cur; });
    $("btn-fhir").disabled = !(cur && cur.patient);
    var fields = $("profile-fields");
    fields.textContent = "";
    var p = cur && cur.patient;
    $("profile-empty").classList.toggle("hidden", !!p);
    if (!p) return;
    profileRows(p).forEach(function (row) {
      var dt = el("dt", null, t("console.field_" + row[0]));
      var dd = el("dd");
      dd.appendChild(el("span", "value", row[1]));
      var btn = el("button", "btn small copy", t("console.copy"));
      btn.type = "button";
      btn.dataset.field = row[0];
      btn.addEventListener("click", function () {
        copyText(row[1]).then(function () { btn.textContent = t("console.copied"); setTimeout(function () { btn.textContent = t("console.copy"); }, 1200); });
      });
      dd.appendChild(btn);
      fields.appendChild(dt);
      fields.appendChild(dd);
    });
  }

  function render() {
    renderWaiting();
    renderCurrent();
  }

  // ---- actions

  function run(name, promise) {
    state.busy = true;
    state.lastAction = name;
    return promise.then(function (res) {
      state.busy = false;
      if (res.status >= 400) { failed(res); return res; }
      return refresh().then(function () { return res; });
    }, function (err) {
      state.busy = false;
      flash(t("console.failed", { detail: String(err) }), true);
    });
  }

  var actions = {
    next: function () {
      return run("next", api("POST", base + "/desks/" + encodeURIComponent(state.desk) + "/call-next")).then(function (res) {
        if (!res) return;
        if (res.status === 204) flash(t("console.nobody_waiting"));
        else if (res.status === 200) flash(t("console.called", { label: res.body.label }));
      });
    },
    recall: function () { return tokenAction("recall", {}); },
    skip: function () { return tokenAction("skip", {}); },
    complete: function () { return tokenAction("complete", {}); },
    undo: function () {
      return run("undo", api("POST", base + "/desks/" + encodeURIComponent(state.desk) + "/undo")).then(function (res) {
        if (res && res.status === 200) flash(t("console.undone"));
      });
    },
    transfer: function () { openTransfer(); return Promise.resolve(); },
    print: function () {
      if (!state.current) return Promise.resolve();
      return printToken(state.current);
    },
    fhir: function () {
      var cur = state.current;
      if (!cur || !cur.patient) return Promise.resolve();
      return api("GET", "/api/tokens/" + encodeURIComponent(cur.id) + "/fhir-patient").then(function (res) {
        if (res.status !== 200) return failed(res);
        state.lastFhir = res.body;
        var blob = new Blob([JSON.stringify(res.body, null, 2)], { type: "application/fhir+json" });
        var a = el("a");
        a.href = URL.createObjectURL(blob);
        a.download = "patient-" + cur.label + ".json";
        document.body.appendChild(a);
        a.click();
        a.remove();
        flash(t("console.fhir_done"));
      });
    },
  };

  function tokenAction(name, body) {
    var cur = state.current;
    if (!cur) return Promise.resolve();
    body.desk = state.desk;
    return run(name, api("POST", "/api/tokens/" + encodeURIComponent(cur.id) + "/" + name, body)).then(function (res) {
      if (res && res.status === 200) flash(t("console.done_" + name, { label: cur.label }));
    });
  }

  function printToken(tok) {
    var printer = $("printer").value;
    if (!printer) { flash(t("console.printer_none"), true); return Promise.resolve(); }
    return api("POST", "/api/tokens/" + encodeURIComponent(tok.id) + "/print", { printer: printer, language: D.lang }).then(function (res) {
      if (res.status >= 400) return failed(res);
      flash(t("console.printed", { label: tok.label }));
    });
  }

  // ---- transfer dialog (keyboard: T, arrows, Enter; Esc cancels)

  function openTransfer() {
    var cur = state.current;
    if (!cur) return;
    var select = $("transfer-counter");
    select.textContent = "";
    D.counters.forEach(function (c) {
      if (c.code === cur.counter) return;
      var opt = el("option", null, c.code + " — " + counterName(c.code));
      opt.value = c.code;
      select.appendChild(opt);
    });
    select.selectedIndex = 0;
    $("transfer-dialog").showModal();
    select.focus();
  }
  $("transfer-dialog").addEventListener("close", function () {
    var dialog = $("transfer-dialog");
    var target = $("transfer-counter").value;
    if (dialog.returnValue === "ok" && target) {
      tokenAction("transfer", { counter: target });
    }
    dialog.returnValue = "";
  });
  $("transfer-counter").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") {
      ev.preventDefault();
      $("transfer-dialog").close("ok");
    }
  });

  // ---- walk-in

  function issue(ev) {
    if (ev) ev.preventDefault();
    var body = { priority: $("walkin-priority").value };
    var name = $("walkin-name").value.trim();
    var qr = $("walkin-qr").value.trim();
    if (name) body.name = name;
    if (qr) body.abha_qr = qr;
    var counter = $("walkin-counter").value;
    return api("POST", base + "/counters/" + encodeURIComponent(counter) + "/tokens", body).then(function (res) {
      var out = $("walkin-result");
      if (res.status !== 201) {
        var detail = res.body && (typeof res.body.detail === "string" ? res.body.detail : res.body.error);
        out.textContent = t("console.failed", { detail: detail || res.status });
        out.className = "flash error";
        return;
      }
      out.textContent = t("console.issued", { label: res.body.label });
      out.className = "flash";
      $("walkin-form").reset();
      if ($("walkin-print").checked) printToken(res.body);
      scheduleRefresh();
    });
  }
  $("walkin-form").addEventListener("submit", issue);
  // A USB hand scanner types the card's QR text and presses Enter: issue at once if it is complete JSON.
  $("walkin-qr").addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    try { JSON.parse(ev.target.value); } catch (e) { return; }
    ev.preventDefault();
    issue();
  });

  // ---- printers

  var printerSelect = $("printer");
  api("GET", base + "/printers").then(function (res) {
    if (res.status !== 200 || !Array.isArray(res.body)) return;
    res.body.forEach(function (p) {
      if (!p.active) return;
      var opt = el("option", null, p.name + (p.online ? "" : " (" + t("console.offline") + ")"));
      opt.value = p.name;
      printerSelect.appendChild(opt);
    });
    var saved = localStorage.getItem("opd_printer_" + state.desk);
    if (saved) printerSelect.value = saved;
  });
  printerSelect.addEventListener("change", function () { localStorage.setItem("opd_printer_" + state.desk, printerSelect.value); });

  // ---- buttons and keys

  document.querySelectorAll("[data-action]").forEach(function (btn) {
    btn.addEventListener("click", function () { actions[btn.dataset.action](); });
  });
  var KEYS = { n: "next", r: "recall", s: "skip", c: "complete", t: "transfer", u: "undo", p: "print", f: "fhir" };
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.altKey || ev.metaKey || ev.repeat) return;
    var tag = (ev.target && ev.target.tagName) || "";
    if ($("transfer-dialog").open) return;
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(tag)) {
      // Esc leaves a form field so the single-key shortcuts work again (focus stays for the next scan).
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    var action = KEYS[(ev.key || "").toLowerCase()];
    if (!action || state.busy) return;
    var btn = $("btn-" + action);
    if (btn && btn.disabled) return;
    ev.preventDefault();
    actions[action]();
  });

  // ---- live

  var url = base + "/board/events?counters=" + encodeURIComponent(state.counters.join(","));
  state.live = window.OpdLive.connect(url, { snapshot: scheduleRefresh, update: scheduleRefresh, call: scheduleRefresh });
  setInterval(renderWaiting, 30000); // waiting minutes tick even when nothing happens
  refresh();
})();
