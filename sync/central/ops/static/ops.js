// Ops room: refresh the live part of the page every second without a reload.
// - Only nodes that changed are replaced (the focused field, a note being typed,
//   the scroll position survive every refresh).
// - A failed or slow refresh is never silent: after STALE_MS without fresh data
//   the banner says how old the numbers are (and when central stops answering).
// - Optional sound for a new critical alert (the checkbox; remembered).
// No inline handlers anywhere: the pages' Content-Security-Policy forbids them.
(function () {
  var pick = document.querySelector("form.evpick select");
  if (pick) pick.addEventListener("change", function () { pick.form.submit(); });
})();
(function () {
  var box = document.getElementById("live");
  if (!box || !box.dataset.live) return;
  var STALE_MS = 3000, EVERY_MS = 1000;
  var stale = document.getElementById("stale");
  var lastOk = Date.now(), lastFailed = false, busy = false, started = 0;
  var sound = document.getElementById("sound");
  var heard = {};
  function critKeys(root) {
    var out = [];
    root.querySelectorAll("[data-alerts]").forEach(function (el) {
      (el.getAttribute("data-alerts") || "").split(" ").forEach(function (k) { if (k) out.push(k); });
    });
    return out;
  }
  critKeys(box).forEach(function (k) { heard[k] = true; });
  if (sound) {
    sound.checked = localStorage.getItem("ops-sound") === "1";
    sound.addEventListener("change", function () { localStorage.setItem("ops-sound", sound.checked ? "1" : "0"); });
  }
  function beep() {
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var o = ctx.createOscillator(), g = ctx.createGain();
      o.frequency.value = 880; g.gain.value = 0.15;
      o.connect(g); g.connect(ctx.destination); o.start(); o.stop(ctx.currentTime + 0.35);
    } catch (e) { /* no audio: the banner still shows */ }
  }
  function hhmmss(t) { return new Date(t).toISOString().substr(11, 8); }
  function showAge() {
    if (!stale) return;
    var age = Date.now() - lastOk;
    if (age < STALE_MS) { stale.hidden = true; document.body.classList.remove("is-stale"); return; }
    var text = (lastFailed ? stale.dataset.down : stale.dataset.old) || "";
    text = text.replace("{n}", Math.round(age / 1000)).replace("{time}", hhmmss(lastOk) + " UTC");
    if (stale.textContent !== "✖ " + text) stale.textContent = "✖ " + text;
    stale.hidden = false;
    document.body.classList.add("is-stale");
  }
  // replace only what differs: same tag and attributes -> recurse; text -> set data
  function same(a, b) {
    if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
    if (a.nodeType !== 1) return true;
    if (a.attributes.length !== b.attributes.length) return false;
    for (var i = 0; i < b.attributes.length; i++) {
      var at = b.attributes[i];
      if (a.getAttribute(at.name) !== at.value) return false;
    }
    return true;
  }
  function patch(into, from) {
    var a = into.firstChild, b = from.firstChild;
    while (b) {
      var nextB = b.nextSibling;
      if (!a) { into.appendChild(b); b = nextB; continue; }
      var nextA = a.nextSibling;
      if (same(a, b)) {
        if (a.nodeType === 1) patch(a, b);
        else if (a.nodeValue !== b.nodeValue) a.nodeValue = b.nodeValue;
      } else if (a.contains(document.activeElement)) {
        into.insertBefore(b, a);  // keep the focused node; the new one goes before it
        nextA = a;
      } else {
        into.replaceChild(b, a);
      }
      a = nextA; b = nextB;
    }
    while (a) {
      var n = a.nextSibling;
      if (!a.contains(document.activeElement)) into.removeChild(a);
      a = n;
    }
  }
  function tick() {
    showAge();
    if (busy) {
      if (Date.now() - started > 4000) busy = false;  // a hung request must not stop the refresh
      else return;
    }
    if (document.hidden) return;
    busy = true; started = Date.now();
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = ctl ? setTimeout(function () { ctl.abort(); }, 3000) : null;
    fetch(box.dataset.live, {credentials: "same-origin", cache: "no-store", signal: ctl ? ctl.signal : undefined})
      .then(function (r) {
        if (r.status === 401 || r.redirected) { location.reload(); return null; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        lastOk = Date.now(); lastFailed = false;
        var tpl = document.createElement("template");
        tpl.innerHTML = html;
        var fresh = critKeys(tpl.content).filter(function (k) { return !heard[k]; });
        patch(box, tpl.content);
        fresh.forEach(function (k) { heard[k] = true; });
        if (fresh.length && sound && sound.checked) beep();
      })
      .catch(function () { lastFailed = true; })
      .then(function () { if (timer) clearTimeout(timer); busy = false; showAge(); });
  }
  setInterval(tick, EVERY_MS);
})();
