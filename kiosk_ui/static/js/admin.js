/*
 * Admin pages: forms and buttons that call the admin JSON API with fetch (base.js adds the CSRF header).
 * A form names its endpoint in data-api / data-method; each field's name is its JSON key ("names.hi"
 * nests), data-kind converts it (int, minutes → seconds, list, bool = a checkbox's state), data-optional
 * leaves an empty field out.
 * A response carrying a one-time secret (data-secret="token" | "password") is shown once, then reloads.
 */
(function () {
  "use strict";
  var page = window.OpdPage ? window.OpdPage.data() : {};
  var strings = page.strings || {};
  var FLASH = "opd-admin-flash";

  function t(key, params) {
    var text = strings["admin.js." + key] || "";
    Object.keys(params || {}).forEach(function (k) { text = text.replace("{" + k + "}", params[k]); });
    return text;
  }

  function put(target, key, value) {
    var parts = key.split(".");
    for (var i = 0; i < parts.length - 1; i++) {
      target[parts[i]] = target[parts[i]] || {};
      target = target[parts[i]];
    }
    target[parts[parts.length - 1]] = value;
  }

  function collect(form) {
    var body = {};
    var lists = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      var kind = el.dataset.kind || "str";
      var optional = el.hasAttribute("data-optional");
      if (kind === "list") {
        lists[el.name] = lists[el.name] || { values: [], optional: optional };
        var on = el.type === "checkbox" ? el.checked : el.value !== "";
        if (on) lists[el.name].values.push(el.value);
        return;
      }
      if (kind === "bool") { put(body, el.name, el.checked); return; }
      var raw = el.value.trim();
      if (raw === "") {
        if (el.dataset.emptyFlag) { body[el.dataset.emptyFlag] = true; return; }
        if (optional) return;
      }
      var value = raw;
      if (kind === "int") value = parseInt(raw, 10);
      if (kind === "minutes") value = Math.round(parseFloat(raw) * 60);
      put(body, el.name, value);
    });
    Object.keys(lists).forEach(function (name) {
      var list = lists[name];
      if (list.values.length || !list.optional) put(body, name, list.values);
    });
    return body;
  }

  function message(status, payload) {
    if (!payload || !payload.error) return t("error", { detail: "HTTP " + status });
    var known = t("codes." + payload.error);
    var detail = payload.detail;
    if (Array.isArray(detail)) {
      detail = detail.map(function (e) { return (e.loc || []).slice(1).join(".") + ": " + e.msg; }).join("; ");
      return (known ? known + " " : "") + detail;
    }
    return known || t("error", { detail: detail || payload.error });
  }

  function showError(box, text) {
    if (!box) { window.alert(text); return; }
    box.textContent = text;
    box.classList.remove("hidden");
    box.scrollIntoView({ block: "nearest" });
  }

  function showSecret(value) {
    var box = document.getElementById("secret-box");
    document.getElementById("secret-value").textContent = value;
    box.classList.remove("hidden");
    box.scrollIntoView({ block: "start" });
  }

  function done() {
    try { window.sessionStorage.setItem(FLASH, "1"); } catch (e) { /* private mode: no flash, still fine */ }
    window.location.reload();
  }

  function call(api, method, body, secretKey, errorBox, busy) {
    if (busy) busy.disabled = true;
    var init = { method: method, headers: { "Accept": "application/json" } };
    if (body !== null) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api, init).then(function (r) {
      return r.text().then(function (text) {
        var payload = null;
        try { payload = text ? JSON.parse(text) : null; } catch (e) { payload = null; }
        if (!r.ok) { showError(errorBox, message(r.status, payload)); return; }
        if (secretKey && payload && payload[secretKey]) { showSecret(payload[secretKey]); return; }
        done();
      });
    }).catch(function () {
      showError(errorBox, t("network"));
    }).then(function () {
      if (busy) busy.disabled = false;
    });
  }

  document.querySelectorAll("form.api-form").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var box = form.querySelector(".form-error");
      if (box) box.classList.add("hidden");
      var button = form.querySelector("[type=submit]");
      call(form.dataset.api, form.dataset.method || "POST", collect(form), form.dataset.secret, box, button);
    });
  });

  document.querySelectorAll("button.api-action").forEach(function (btn) {
    btn.addEventListener("click", function () {
      if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) return;
      var body = btn.dataset.body ? JSON.parse(btn.dataset.body) : null;
      call(btn.dataset.api, btn.dataset.method || "POST", body, btn.dataset.secret, null, btn);
    });
  });

  document.querySelectorAll("button.edit-toggle").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var row = document.getElementById(btn.dataset.target);
      var open = row.classList.toggle("hidden") === false;
      btn.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) {
        var first = row.querySelector("input, select");
        if (first) first.focus();
      }
    });
  });

  var copy = document.getElementById("secret-copy");
  if (copy) {
    copy.addEventListener("click", function () {
      var text = document.getElementById("secret-value").textContent;
      var shown = function () { copy.textContent = copy.dataset.done; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(shown, function () { fallbackCopy(text); shown(); });
      } else {
        fallbackCopy(text);
        shown();
      }
    });
    document.getElementById("secret-done").addEventListener("click", function () { window.location.reload(); });
  }

  function fallbackCopy(text) {
    // Plain-HTTP hospital LANs have no Clipboard API: select the text and use the legacy copy command.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* the admin can still select it by hand */ }
    document.body.removeChild(area);
  }

  try {
    if (window.sessionStorage.getItem(FLASH)) {
      window.sessionStorage.removeItem(FLASH);
      var flash = document.getElementById("flash");
      if (flash) {
        flash.classList.remove("hidden");
        window.setTimeout(function () { flash.classList.add("hidden"); }, 4000);
      }
    }
  } catch (e) { /* no storage: no flash */ }
})();
