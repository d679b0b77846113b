// The holder's wallet (docs/wallet.md): claim a ticket from a one-time link,
// keep it in this browser with a holder key that never leaves it, and show the
// rotating GT1 code every 15 s with no network at all.
//
// Everything on screen is built from text nodes: nothing from the server or the
// URL is ever parsed as HTML.

import * as gt1 from "./gt1.js";
import { newHolderKey, sign } from "./keys.js";
import { tickets, pending } from "./idb.js";
import { _, fmt, chosen, load, save, language } from "./i18n.js";
import qrcodegen from "./vendor/qrcodegen.js";

// How the code is drawn: error correction and on-screen width (share of the
// screen's width), chosen from the read rates bench/wallet.py measured with the
// lane camera's pipeline (docs/wallet.md, "Sized for the lane camera"): EC L at
// 92 % of the width read best at every distance (a ~430-character code is QR
// version 11 at L, 13 at M, 16 at Q: a lower EC buys bigger modules).
// GT1_WALLET_TUNING overrides them for that bench and the tests only.
const TUNING = Object.assign({ ecl: "L", width: 0.92, border: 4, forceJsEd25519: false },
  globalThis.GT1_WALLET_TUNING || {});
const ECC = { L: "LOW", M: "MEDIUM", Q: "QUARTILE", H: "HIGH" };
const STATUS_EVERY_MS = 300_000;  // last known status: on open, then every 5 minutes

const main = document.getElementById("main");
let stopView = () => {};
let rerender = () => {};

// ------------------------------------------------------------------ small DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function show(...nodes) {
  stopView();
  stopView = () => {};
  main.replaceChildren(...nodes.filter(Boolean));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  return a && b && a.length === b.length && a.every((x, i) => x === b[i]);
}

function when(unixSeconds) {
  if (!unixSeconds) return "";
  const loc = language() === "zh_CN" ? "zh-CN" : "en-GB";
  return new Intl.DateTimeFormat(loc, { dateStyle: "medium", timeStyle: "short" }).format(new Date(unixSeconds * 1000));
}

// ------------------------------------------------------------------ the server

async function api(path, body) {
  let r;
  try {
    r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                            body: JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw Object.assign(new Error("offline"), { code: "OFFLINE" });
  }
  let data = {};
  try { data = await r.json(); } catch (e) { data = {}; }
  if (!r.ok) {
    throw Object.assign(new Error(data.error || `HTTP ${r.status}`),
                        { code: data.code || (r.status === 429 ? "TOO_MANY" : `HTTP_${r.status}`), data });
  }
  return data;
}

/** Headline and advice for a refusal code, in the holder's language. */
function refusal(code) {
  switch (code) {
    case "CLAIM_USED":
      return [_("This ticket link has already been used"),
              _("A ticket can be on one phone only. If you opened the link on another phone, the ticket is there. If that phone is lost, ask the box office for a new link.")];
    case "CLAIM_UNKNOWN":
      return [_("This ticket link does not work"),
              _("Check that you opened the whole link from your message or e-mail.")];
    case "CLAIM_EXPIRED":
      return [_("This ticket link has expired"), _("Ask the box office for a new link.")];
    case "CLAIM_REPLACED":
      return [_("This ticket link was replaced"),
              _("The ticket was given to someone else or reissued. Ask the person who sent you the link for the new one.")];
    case "TICKET_REVOKED":
      return [_("This ticket was cancelled"), _("Ask the box office if you think this is wrong.")];
    case "TOO_MANY":
      return [_("Too many tries"), _("Wait a minute, then try again.")];
    case "OFFLINE":
      return [_("No internet connection"), _("Adding a ticket needs the internet once. Connect and try again.")];
    case "FACE_REQUIRED":
    case "FACE_FRAMES":
      return [_("Photos of your face are needed"), _("Take the three photos first.")];
    case "STALE_REQUEST":
      return [_("Your phone's clock is wrong"), _("Set the date and time to automatic, then try again.")];
    case "TRANSFERRED":
      return [_("This ticket was already given away"), _("This phone no longer holds it.")];
    default:
      return [_("Something went wrong"), _("Try again in a moment. If it keeps happening, ask the box office.")];
  }
}

function refusalView(code) {
  const [head, advice] = refusal(code);
  return el("section", { class: "card refusal", dataset: { code } }, el("h2", {}, "✖ ", head), el("p", {}, advice),
            el("p", {}, el("a", { href: "/wallet/" }, _("My tickets"))));
}

// ------------------------------------------------------------------ the code

function drawQr(canvas, text) {
  const ecl = qrcodegen.QrCode.Ecc[ECC[TUNING.ecl] || "MEDIUM"];
  const qr = qrcodegen.QrCode.encodeSegments(qrcodegen.QrSegment.makeSegments(text), ecl, 1, 40, -1, false);
  const n = qr.size + 2 * TUNING.border;
  const cssWidth = Math.min(document.documentElement.clientWidth * TUNING.width, 720);
  const dpr = window.devicePixelRatio || 1;
  const scale = Math.max(1, Math.floor((cssWidth * dpr) / n));  // whole device pixels per module: crisp edges
  canvas.width = canvas.height = n * scale;
  canvas.style.width = canvas.style.height = `${(n * scale) / dpr}px`;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  for (let y = 0; y < qr.size; y++) {
    for (let x = 0; x < qr.size; x++) {
      if (qr.getModule(x, y)) ctx.fillRect((x + TUNING.border) * scale, (y + TUNING.border) * scale, scale, scale);
    }
  }
  canvas.dataset.version = String(qr.version);
  canvas.dataset.ecl = TUNING.ecl;
  canvas.dataset.text = text;
}

async function keepScreenOn() {
  try {
    if ("wakeLock" in navigator && document.visibilityState === "visible") {
      return await navigator.wakeLock.request("screen");
    }
  } catch (e) { /* not allowed here: the hint still says what to do */ }
  return null;
}

function entriesLine(t) {
  if (t.entries === 0) return _("Unlimited");
  const left = Math.max(0, t.entries - (t.used || 0));
  return fmt(_("{left} of {total}"), { left, total: t.entries });
}

function statusLine(t) {
  if (!t.statusAt) return _("As issued");
  return fmt(_("As of {time}"), { time: when(t.statusAt / 1000) });
}

function ticketCard(t) {
  return el("section", { class: "card ticket" },
    el("h2", { class: "event" }, t.event),
    el("p", { class: "meta" }, [t.venue, when(t.startsAt)].filter(Boolean).join(" · ")),
    el("dl", { class: "facts" },
      el("div", {}, el("dt", {}, _("Ticket")), el("dd", { class: "tier" }, t.tier || "—")),
      el("div", {}, el("dt", {}, _("Zone")), el("dd", { class: "zone" }, t.zone || _("Any"))),
      el("div", {}, el("dt", {}, _("Entries left")), el("dd", { class: "entries" }, entriesLine(t)))),
    el("p", { class: "small" }, statusLine(t), t.faceBound ? " · " + _("Face check at the gate") : ""));
}

async function ticketView(t) {
  if (t.state === "transferred") return transferredView(t);
  if (t.state === "revoked" || t.state === "replaced") {
    const [head, advice] = t.state === "revoked"
      ? [_("This ticket was cancelled"), _("Ask the box office if you think this is wrong.")]
      : [_("This ticket has moved to another phone"),
         _("It was reissued by the box office. Codes from this phone no longer open the gates.")];
    show(ticketCard(t), el("section", { class: "card refusal", dataset: { state: t.state } },
                           el("h2", {}, "✖ ", head), el("p", {}, advice)));
    return;
  }
  const canvas = el("canvas", { class: "qr", role: "img", "aria-label": _("Entry code") });
  const countdown = el("span", { class: "countdown" });
  const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
  const offline = el("p", { class: "small offline" });
  const codeBox = el("section", { class: "code", dataset: { ticket: t.ticketId } }, canvas,
    el("div", { class: "timer" }, countdown, bar),
    el("p", { class: "hint" }, "☀ ", _("Turn the screen brightness up and hold the code about 10 cm from the gate camera.")));
  const giveAway = el("button", { class: "secondary", on: { click: () => transferAsk(t) } },
                      _("Give this ticket to someone else"));
  const count = (await tickets.all()).length;
  const others = count > 1 ? el("p", { class: "small center" }, el("a", { href: "/wallet/#all" },
                                fmt(_("All tickets on this phone ({n})"), { n: count }))) : null;
  show(ticketCard(t), codeBox, offline, giveAway, others);

  let lastStep = null;
  let timer = null;
  let alive = true;
  let lock = await keepScreenOn();
  const tick = async () => {
    if (!alive) return;
    const now = Date.now();
    const step = gt1.currentStep(now);
    if (step !== lastStep) {
      lastStep = step;
      const text = await gt1.present(t.credential, step, (m) => sign(t.key, m));
      if (!alive) return;
      drawQr(canvas, text);
      canvas.dataset.step = String(step);
    }
    const left = gt1.STEP_SECONDS - ((now / 1000) % gt1.STEP_SECONDS);
    countdown.textContent = fmt(_("New code in {s} s"), { s: Math.ceil(left) });
    bar.firstChild.style.width = `${(left / gt1.STEP_SECONDS) * 100}%`;
    timer = setTimeout(tick, Math.min(1000, left * 1000 + 20));
  };
  await tick();
  offlineReady().then((ok) => { offline.textContent = ok ? "✓ " + _("Works without internet") : ""; });
  const visible = async () => { if (document.visibilityState === "visible") lock = await keepScreenOn(); };
  document.addEventListener("visibilitychange", visible);
  const statusTimer = setInterval(() => refreshStatus(t), STATUS_EVERY_MS);
  refreshStatus(t);
  stopView = () => {
    alive = false;
    clearTimeout(timer);
    clearInterval(statusTimer);
    document.removeEventListener("visibilitychange", visible);
    if (lock) lock.release().catch(() => {});
  };
}

/** Ask central what it knows of this ticket (when online); keep it as "last known". */
async function refreshStatus(t) {
  if (!t.key || t.state !== "valid" || !navigator.onLine) return;
  const at = Math.floor(Date.now() / 1000);
  const msg = new TextEncoder().encode(`GT1-wallet/1 status ${t.ticketId} ${t.version} ${at}`);
  let st;
  try {
    st = await api("/wallet/api/status", { ticket_id: t.ticketId, version: t.version, at,
                                           signature: gt1.b64urlencode(await sign(t.key, msg)) });
  } catch (e) {
    return;  // offline or refused: the last known status stays
  }
  const fresh = await tickets.get(t.ticketId);
  if (!fresh || fresh.state !== "valid") return;
  fresh.used = st.used;
  fresh.entries = st.entries;
  fresh.statusAt = Date.now();
  if (st.state !== "valid") fresh.state = st.state;
  await tickets.put(fresh);
  Object.assign(t, fresh);
  const line = main.querySelector(".entries");
  if (st.state !== "valid") ticketView(fresh);
  else if (line) {
    line.textContent = entriesLine(fresh);
    main.querySelector(".ticket .small").firstChild.textContent = statusLine(fresh);
  }
}

async function offlineReady() {
  if (!("serviceWorker" in navigator)) return false;
  try {
    await navigator.serviceWorker.ready;
  } catch (e) {
    return false;
  }
  document.body.dataset.offline = "ready";
  return true;
}

// ------------------------------------------------------------------ transfer

function transferAsk(t) {
  const go = el("button", { class: "danger", on: { click: () => transferDo(t, go) } }, _("Give it away"));
  show(ticketCard(t), el("section", { class: "card" },
    el("h2", {}, _("Give this ticket to someone else?")),
    el("p", {}, _("You get a link to send to the new holder. From then on this phone no longer shows the code, and codes shown earlier by this phone are refused at each gate once it has synced with the box office (usually within a minute).")),
    el("div", { class: "row" }, go,
       el("button", { class: "secondary", on: { click: () => ticketView(t) } }, _("Cancel")))));
}

async function transferDo(t, button) {
  button.disabled = true;
  const at = Math.floor(Date.now() / 1000);
  const msg = new TextEncoder().encode(`GT1-wallet/1 transfer ${t.ticketId} ${t.version} ${at}`);
  try {
    const res = await api("/wallet/api/transfer", { ticket_id: t.ticketId, version: t.version, at,
                                                    signature: gt1.b64urlencode(await sign(t.key, msg)) });
    t.state = "transferred";
    t.transferUrl = location.origin + res.claim_url;
    t.transferredAt = Date.now();
    t.key = null;  // useless from now on: gone from this phone
    await tickets.put(t);
    transferredView(t);
  } catch (e) {
    button.disabled = false;
    const [head, advice] = e.code === "OFFLINE"
      ? [_("No internet connection"), _("Giving a ticket away needs the internet. Connect and try again.")]
      : refusal(e.code);
    main.append(el("p", { class: "msg crit", dataset: { code: e.code } }, head, ": ", advice));
  }
}

function transferredView(t) {
  const link = el("input", { class: "link", readonly: true, value: t.transferUrl || "" });
  const copied = el("span", { class: "small" });
  const copy = el("button", { on: { click: async () => {
    link.select();
    try { await navigator.clipboard.writeText(link.value); copied.textContent = _("Copied"); } catch (e) { /* selected */ }
  } } }, _("Copy link"));
  const share = navigator.share ? el("button", { on: { click: () => navigator.share({ url: link.value }).catch(() => {}) } },
                                     _("Share link")) : null;
  show(ticketCard(t), el("section", { class: "card transferred", dataset: { state: "transferred" } },
    el("h2", {}, "➜ ", _("Transferred")),
    el("p", {}, _("This ticket is no longer on this phone. Send this link to the new holder; it works once.")),
    link, el("div", { class: "row" }, copy, share, copied)));
}

// ------------------------------------------------------------------ claim

async function claimView(token) {
  const claimHash = hex(await gt1.sha256(new TextEncoder().encode(token)));
  const here = (await tickets.all()).find((t) => t.claimHash === claimHash);
  if (here) {
    history.replaceState(null, "", `/wallet/#t=${here.ticketId}`);  // the token leaves the address bar
    return ticketView(here);
  }
  const inFlight = await pending.get(claimHash);
  if (inFlight) return redeem(token, claimHash, inFlight.key, inFlight.face, null);  // the answer was lost
  show(el("p", { class: "msg" }, _("Checking your ticket link…")));
  let offer;
  try {
    offer = await api("/wallet/api/claim/open", { token });
  } catch (e) {
    return show(refusalView(e.code));
  }
  const t = { event: offer.event, venue: offer.venue, startsAt: offer.starts_at, tier: offer.tier, zone: offer.zone,
              entries: offer.entries };
  const add = el("button", { class: "primary", id: "add" }, _("Add to this phone"));
  const face = offer.face !== "off" ? faceSection(token, offer, add) : null;
  add.addEventListener("click", async () => {
    add.disabled = true;
    const key = await newHolderKey();
    const wantFace = face ? face.wanted() : false;
    await pending.put({ claimHash, key, face: wantFace });
    redeem(token, claimHash, key, wantFace, add);
  });
  show(el("section", { class: "card" }, el("h2", {}, _("A ticket for you"))), ticketCard(t), face ? face.node : null,
       el("p", { class: "small" }, _("The ticket is kept on this phone only. It works without internet at the gate.")),
       add);
}

async function redeem(token, claimHash, key, face, button) {
  let res;
  try {
    res = await api("/wallet/api/claim", { token, public_key: gt1.b64urlencode(key.pub), face });
  } catch (e) {
    const later = e.code === "OFFLINE" || e.code === "TOO_MANY" || e.code === "UNAVAILABLE" || /^HTTP_5/.test(e.code);
    if (!later) await pending.remove(claimHash);  // a definite answer: the next try starts afresh
    if (!button && !later && /^FACE_/.test(e.code)) return claimView(token);  // e.g. the photos went stale
    if (button) {
      button.disabled = false;
      const [head, advice] = refusal(e.code);
      main.append(el("p", { class: "msg crit", dataset: { code: e.code } }, head, ": ", advice));
      return;
    }
    return show(refusalView(e.code));
  }
  const credential = gt1.b64decode(res.credential);
  const claims = gt1.claimsOf(credential);
  if (!sameBytes(claims.holderPub, key.pub) || claims.ticketId !== res.ticket_id) {
    return show(refusalView("BAD_CREDENTIAL"));  // not bound to our key: never store it
  }
  const t = { ticketId: res.ticket_id, claimHash, credential, key, event: claims.event, venue: res.venue,
              startsAt: res.starts_at, tier: claims.tier, zone: claims.zone, entries: claims.entries,
              version: claims.version, faceBound: claims.face, state: "valid", used: 0, statusAt: null,
              addedAt: Date.now() };
  await tickets.put(t);
  await pending.remove(claimHash);
  history.replaceState(null, "", `/wallet/#t=${t.ticketId}`);
  ticketView(t);
}

function faceSection(token, offer, add) {
  const need = offer.face === "require";
  const agree = el("input", { type: "checkbox", id: "face-consent" });
  const video = el("video", { class: "selfie", autoplay: true, muted: true, playsinline: true });
  const progress = el("p", { class: "progress", "aria-live": "polite" });
  const start = el("button", { id: "face-start", disabled: true }, _("Take the photos"));
  const box = el("div", { class: "camera", hidden: true }, el("div", { class: "frame" }, video, el("div", { class: "oval" })),
                 progress, start);
  let frames = 0;
  let stream = null;
  const ready = () => !agree.checked ? !need : frames >= offer.face_frames;
  const sync = () => {
    add.disabled = !ready();
    box.hidden = !agree.checked;
    if (agree.checked && !stream) openCamera();
  };
  async function openCamera() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user", width: 640, height: 480 },
                                                           audio: false });
      video.srcObject = stream;
      await video.play().catch(() => {});
      start.disabled = false;
      progress.textContent = _("Look at the camera, face inside the oval, in good light.");
    } catch (e) {
      progress.textContent = _("The camera could not be opened. Allow the camera for this page, or ask the box office.");
    }
  }
  function frameJpeg() {
    const w = video.videoWidth, h = video.videoHeight;
    const k = Math.min(1, 480 / Math.max(w, h));
    const c = el("canvas");
    c.width = Math.round(w * k);
    c.height = Math.round(h * k);
    c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
    for (const q of [0.85, 0.75, 0.6, 0.45]) {
      const url = c.toDataURL("image/jpeg", q);
      const b64 = url.slice(url.indexOf(",") + 1);
      if (b64.length <= 58_000) return b64;
    }
    return null;
  }
  start.addEventListener("click", async () => {
    start.disabled = true;
    let tries = 0;
    while (frames < offer.face_frames && tries < 8) {
      tries++;
      await new Promise((r) => setTimeout(r, 600));
      const image = frameJpeg();
      if (!image) continue;
      let res;
      try {
        res = await api("/wallet/api/claim/face", { token, image });
      } catch (e) {
        progress.textContent = refusal(e.code).join(": ");
        break;
      }
      frames = res.frames;
      progress.textContent = res.problem
        ? faceProblem(res.problem)
        : fmt(_("Photo {n} of {total} taken"), { n: frames, total: res.needed });
    }
    if (frames >= offer.face_frames) {
      progress.textContent = "✓ " + _("Photos done. The photos themselves are not kept.");
      progress.dataset.done = "1";
      if (stream) stream.getTracks().forEach((tr) => tr.stop());
    } else {
      start.disabled = false;
    }
    sync();
  });
  agree.addEventListener("change", sync);
  queueMicrotask(sync);
  const node = el("section", { class: "card face" },
    el("h3", {}, need ? _("This ticket is tied to the holder's face") : _("Tie this ticket to your face (optional)")),
    el("p", {}, _("At the gate, a camera compares your face with a face template made now from three photos. This stops the ticket from being used by someone else.")),
    el("p", {}, fmt(_("The photos are not kept. Only the template (numbers that describe your face) is stored by the organiser, and it is deleted {days} days after the event."),
                    { days: offer.face_retention_days })),
    el("label", { class: "consent" }, agree, " ", need ? _("I agree to the face check for this ticket")
                                                       : _("Yes, tie this ticket to my face")),
    box);
  return { node, wanted: () => agree.checked && frames >= offer.face_frames };
}

function faceProblem(sub) {
  switch (sub) {
    case "NO_FACE":
      return _("No face found: look at the camera, face inside the oval.");
    case "SEVERAL_FACES":
      return _("More than one face: only the holder, please.");
    default:
      return _("Not clear enough: hold still, come a little closer, more light.");
  }
}

// ------------------------------------------------------------------ my tickets

async function homeView() {
  const all = await tickets.all();
  const hash = location.hash.slice(1);
  const wanted = new URLSearchParams(hash).get("t");
  const one = all.find((t) => t.ticketId === wanted) || (all.length === 1 && hash !== "all" ? all[0] : null);
  if (one) return ticketView(one);
  if (!all.length) {
    return show(el("section", { class: "card" }, el("h2", {}, _("No tickets on this phone yet")),
                   el("p", {}, _("Open the ticket link you received after buying, on this phone."))));
  }
  show(el("h2", {}, _("My tickets")), el("ul", { class: "list" }, all.map((t) =>
    el("li", {}, el("a", { href: `/wallet/#t=${t.ticketId}`, on: { click: (ev) => {
      ev.preventDefault();
      history.replaceState(null, "", `/wallet/#t=${t.ticketId}`);
      ticketView(t);
    } } }, t.event, " · ", t.tier || "", t.state !== "valid" ? ` (${_("not valid")})` : "")))));
}

// ------------------------------------------------------------------ start

function header() {
  const other = language() === "zh_CN" ? "en" : "zh_CN";
  const button = document.getElementById("lang");
  button.textContent = other === "zh_CN" ? "中文" : "English";
  button.onclick = async () => {
    save(other);
    await load(other);
    header();
    rerender();
  };
  document.getElementById("title").textContent = _("My tickets");
  document.title = _("Ticket wallet");
}

async function start() {
  await load(chosen());
  header();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/wallet/sw.js", { scope: "/wallet/" }).catch(() => {});
  }
  if (!globalThis.crypto || !crypto.subtle || !globalThis.indexedDB) {
    show(el("section", { class: "card refusal" }, el("h2", {}, _("This browser cannot hold tickets")),
            el("p", {}, _("Open the link in an up-to-date browser (Chrome, Safari or Firefox), over https."))));
    return;
  }
  // after a claim the address becomes /wallet/#t=TICKET (the token leaves the address bar)
  rerender = () => (location.pathname === "/wallet/claim" ? claimView(location.hash.slice(1)) : homeView());
  await rerender();
  // another link opened in the same tab changes only the part after '#': draw that one
  window.addEventListener("hashchange", () => rerender());
}

start();
