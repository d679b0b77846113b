// The wallet's words: English source strings marked _("..."), Simplified
// Chinese from the gettext catalogue (domain "wallet", served as JSON and kept
// by the service worker). Placeholders {name} are filled after translation.

const SUPPORTED = ["en", "zh_CN"];
let catalogue = {};
let current = "en";

export function normalise(tag) {
  if (!tag) return null;
  const t = String(tag).trim().toLowerCase().replace(/-/g, "_");
  if (t === "zh" || t.startsWith("zh_")) return /^zh_(hant|tw|hk|mo)\b/.test(t) ? null : "zh_CN";
  if (t === "en" || t.startsWith("en_")) return "en";
  return null;
}

export function chosen() {
  const saved = normalise(localStorage.getItem("wallet.lang"));
  if (saved) return saved;
  for (const tag of navigator.languages || [navigator.language]) {
    const lang = normalise(tag);
    if (lang) return lang;
  }
  return "en";
}

export async function load(lang) {
  current = SUPPORTED.includes(lang) ? lang : "en";
  catalogue = {};
  if (current !== "en") {
    try {
      const r = await fetch(`/wallet/i18n/${current}.json`);
      if (r.ok) catalogue = await r.json();
    } catch (e) {
      catalogue = {};  // offline and not cached yet: English
    }
  }
  document.documentElement.lang = current === "zh_CN" ? "zh-CN" : "en";
  return current;
}

export function language() {
  return current;
}

export function save(lang) {
  localStorage.setItem("wallet.lang", lang);
}

export function _(message) {
  return catalogue[message] || message;
}

export function fmt(text, values) {
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in values ? String(values[k]) : m));
}
