/*
 * Loaded by every page that extends base.html.
 * Same-origin requests that change state carry the CSRF token from the opd_csrf cookie in the
 * X-CSRF-Token header (double-submit): the service refuses cookie-authenticated writes without it.
 */
(function () {
  "use strict";
  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  var SAFE = { GET: 1, HEAD: 1, OPTIONS: 1 };
  var original = window.fetch.bind(window);
  window.fetch = function (input, init) {
    init = init || {};
    var method = (init.method || (input && input.method) || "GET").toUpperCase();
    var url = new URL(typeof input === "string" ? input : input.url, window.location.href);
    if (!SAFE[method] && url.origin === window.location.origin) {
      var headers = new Headers(init.headers || (input && input.headers) || {});
      if (!headers.has("X-CSRF-Token")) headers.set("X-CSRF-Token", cookie("opd_csrf"));
      init = Object.assign({}, init, { headers: headers, credentials: "same-origin" });
    }
    return original(input, init);
  };
  window.OpdPage = {
    cookie: cookie,
    /* The JSON the server put in <script type="application/json" id="page-data"> (no inline code). */
    data: function () {
      var el = document.getElementById("page-data");
      return el ? JSON.parse(el.textContent) : {};
    },
  };
})();
