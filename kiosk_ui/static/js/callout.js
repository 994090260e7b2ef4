/*
 * Spoken token call-outs for the display board, from pre-generated clips.
 *
 * The board PC usually has no speech voices, so the sentence ("Token A17,
 * desk 3") is assembled from short Ogg/Vorbis clips under /static/voice/
 * (made by scripts/gen_voice.py) and played one after another through ONE
 * <audio> element.  The clip selection is the same as kiosk_ui/voice.py;
 * tests/unit/test_voice.py runs sequence() under node and compares.
 *
 *   OpdCallout.init({base: "/static/voice/", languages: ["hi", "gu", "en"]});
 *   button.onclick = () => OpdCallout.unlock();   // browsers need one click before sound
 *   OpdCallout.enqueue({label: "A17", desk: "3"}); // chime, then hi, gu, en
 *
 * OpdCallout.state = {playing, queue, played, current, blocked, skipped} for tests.
 * Plain script, no build step: sets window.OpdCallout (module.exports under node).
 */
(function (root) {
  "use strict";

  var EXT = ".ogg";
  var CHIME = "chime" + EXT;
  var MAX_NUMBER = 9999;
  // Same as TEMPLATES in kiosk_ui/voice.py.
  var TEMPLATES = {
    hi: ["token", "label", "desk", "desk_label", "come"],
    gu: ["token", "label", "desk", "desk_label", "come"],
    en: ["token", "label", "desk", "desk_label"],
  };
  var PART_RE = /[A-Za-z]|[0-9]+/g;
  var SEP = "[ \\t\\u00a0._:#-]*";
  var DESK_PREFIX_RE = new RegExp("^" + SEP + "(?:desk(?![a-z])" + SEP + "(?=[a-z0-9])|d" + SEP + "(?=[0-9]))", "i");

  // ---- which clips (pure functions, mirrored in kiosk_ui/voice.py) ----

  function numberStems(n) {
    if (n < 100) return ["n" + n];
    var stems = [];
    var thousands = Math.floor(n / 1000);
    var hundreds = Math.floor((n % 1000) / 100);
    var rest = n % 100;
    if (thousands) stems.push("k" + thousands);
    if (hundreds) stems.push("h" + hundreds);
    if (rest) stems.push("n" + rest);
    return stems;
  }

  function labelStems(label) {
    var stems = [];
    var parts = String(label == null ? "" : label).match(PART_RE) || [];
    parts.forEach(function (part) {
      if (/^[0-9]/.test(part)) {
        if (part.replace(/^0+/, "").length <= String(MAX_NUMBER).length) {
          stems.push.apply(stems, numberStems(parseInt(part, 10)));
        } else {
          part.split("").forEach(function (d) { stems.push("n" + d); });
        }
      } else {
        stems.push("letter_" + part.toLowerCase());
      }
    });
    return stems;
  }

  function deskStems(desk) {
    return labelStems(String(desk == null ? "" : desk).replace(DESK_PREFIX_RE, ""));
  }

  function clips(lang, label, desk) {
    var template = TEMPLATES[lang];
    if (!template) throw new Error("no voice clips for language " + lang);
    var stems = [];
    template.forEach(function (slot) {
      if (slot === "label") stems.push.apply(stems, labelStems(label));
      else if (slot === "desk_label") stems.push.apply(stems, deskStems(desk));
      else stems.push(slot);
    });
    return stems.map(function (stem) { return lang + "/" + stem + EXT; });
  }

  /* Chime, then the call-out in each language; languages without clips are skipped. */
  function sequence(languages, label, desk) {
    var out = [CHIME];
    (languages || []).forEach(function (lang) {
      if (Object.prototype.hasOwnProperty.call(TEMPLATES, lang)) {
        out.push.apply(out, clips(lang, label, desk));
      }
    });
    return out;
  }

  // ---- the player ----

  var config = {
    base: "/static/voice/", // URL of the clip folder
    languages: ["hi", "en"], // default order when enqueue() is not given languages
    clipTimeoutMs: 6000, // a clip that has not ended by then is skipped (clips are <= 2.5 s)
    playbackRate: 1,
    keepPlayed: 500, // state.played / state.skipped keep this many recent entries
  };
  var state = { playing: false, queue: [], played: [], current: null, blocked: false, skipped: [] };
  var audio = null;
  var cache = {}; // clip path -> Promise<string|null> (object URL, direct URL, or null = missing)

  function element() {
    if (!audio) {
      audio = root.document.createElement("audio");
      audio.id = "opd-callout-audio";
      audio.preload = "auto";
      audio.style.display = "none";
      (root.document.body || root.document.documentElement).appendChild(audio);
    }
    return audio;
  }

  /* Fetch a clip once into memory; null if the server says it is not there. */
  function load(path) {
    if (!cache[path]) {
      var url = config.base + path;
      cache[path] = root.fetch(url)
        .then(function (resp) {
          if (!resp.ok) return null;
          return resp.blob().then(function (blob) { return root.URL.createObjectURL(blob); });
        })
        .catch(function () { return url; }); // no fetch (file://): let <audio> try the URL itself
    }
    return cache[path];
  }

  function preload(paths) {
    paths.forEach(load);
  }

  function remember(list, path) {
    list.push(path);
    if (list.length > config.keepPlayed) list.splice(0, list.length - config.keepPlayed);
  }

  /* Play one clip to its end. Resolves "ended", "skipped" or "blocked" (autoplay refused). */
  function playClip(path) {
    return load(path).then(function (src) {
      if (!src) return "skipped";
      return new Promise(function (resolve) {
        var el = element();
        var timer = null;
        var settled = false;
        function finish(result) {
          if (settled) return; // play() may reject after "error" fired: don't touch the next clip's handlers
          settled = true;
          clearTimeout(timer);
          el.onended = el.onerror = null;
          resolve(result);
        }
        el.onended = function () { finish("ended"); };
        el.onerror = function () { finish("skipped"); };
        timer = setTimeout(function () { el.pause(); finish("skipped"); }, config.clipTimeoutMs);
        el.src = src;
        el.defaultPlaybackRate = el.playbackRate = config.playbackRate;
        var started = el.play();
        if (started && started.catch) {
          started.catch(function (err) {
            finish(err && err.name === "NotAllowedError" ? "blocked" : "skipped");
          });
        }
      });
    });
  }

  function pump() {
    if (state.playing || state.blocked || !state.queue.length) return;
    var job = state.queue[0];
    state.playing = true;
    var paths = sequence(job.languages || config.languages, job.label, job.desk);
    preload(paths);
    var i = job.next || 0;
    function step() {
      if (i >= paths.length) return done(true);
      state.current = paths[i];
      playClip(paths[i]).then(function (result) {
        if (result === "blocked") {
          job.next = i; // resume from this clip after unlock()
          state.blocked = true;
          return done(false);
        }
        remember(result === "ended" ? state.played : state.skipped, paths[i]);
        i += 1;
        step();
      });
    }
    function done(finished) {
      if (finished) state.queue.shift();
      state.playing = false;
      state.current = null;
      pump();
    }
    step();
  }

  /* Queue a call-out: {label: "A17", desk: "3", languages?: ["hi", "gu", "en"]}. */
  function enqueue(call) {
    state.queue.push({ label: call.label, desk: call.desk, languages: call.languages || null });
    preload(sequence(call.languages || config.languages, call.label, call.desk));
    pump();
  }

  /*
   * Call from a click handler ("start sound"): browsers only let a page make
   * sound after a user gesture.  Plays the chime (muted if a call is already
   * waiting; that call starts with the chime anyway), then resumes the queue.
   * Resolves true if the browser allowed sound.
   */
  function unlock() {
    if (state.playing) return Promise.resolve(true);
    var el = element();
    var waiting = state.queue.length > 0;
    el.muted = waiting;
    el.src = config.base + CHIME;
    return Promise.resolve(el.play()).then(
      function () {
        if (waiting) el.pause();
        el.muted = false;
        state.blocked = false;
        pump();
        return true;
      },
      function () {
        el.muted = false;
        return false;
      }
    );
  }

  /* Options: any key of config (base, languages, clipTimeoutMs, playbackRate, keepPlayed). */
  function init(options) {
    Object.keys(options || {}).forEach(function (key) { config[key] = options[key]; });
    var fixed = [CHIME];
    config.languages.forEach(function (lang) {
      if (TEMPLATES[lang]) fixed.push.apply(fixed, clips(lang, "", ""));
    });
    if (root.fetch) preload(fixed);
    return api;
  }

  var api = {
    sequence: sequence,
    clips: clips,
    init: init,
    enqueue: enqueue,
    unlock: unlock,
    preload: preload,
    state: state,
    config: config,
  };
  root.OpdCallout = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof window !== "undefined" ? window : globalThis);
