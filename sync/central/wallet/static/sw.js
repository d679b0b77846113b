// The wallet's service worker: keeps the app and both catalogues so the code
// shows with no network at all (flight mode, reload). RELEASE is a hash of the
// files, filled in by the central: a new release installs a new cache.
const RELEASE = "__RELEASE__";
const CACHE = `gt1-wallet-${RELEASE}`;
const SHELL = "/wallet/";
const FILES = [
  SHELL, "/wallet/app.js", "/wallet/gt1.js", "/wallet/keys.js", "/wallet/idb.js", "/wallet/i18n.js",
  "/wallet/wallet.css", "/wallet/manifest.webmanifest", "/wallet/icon.svg",
  "/wallet/vendor/qrcodegen.js", "/wallet/vendor/ed25519.js",
  "/wallet/i18n/en.json", "/wallet/i18n/zh_CN.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES.map((f) => new Request(f, { cache: "reload" }))))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n.startsWith("gt1-wallet-") && n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/wallet/api/")) return;
  if (req.mode === "navigate" && (url.pathname === "/wallet/" || url.pathname === "/wallet/claim")) {
    event.respondWith(caches.match(SHELL).then((hit) => hit || fetch(req)));
    return;
  }
  if (FILES.includes(url.pathname)) {
    event.respondWith(caches.match(url.pathname).then((hit) => hit || fetch(req)));
  }
});
