// GT1 rotating codes in the browser, byte for byte as crypto/gt1.py makes them
// (docs/gt1.md): qr_text = "GT1:" + base45(CBOR([credential, step, proof])),
// proof = Ed25519(holder key, CBOR(["GT1-proof", SHA-256(credential), step])),
// step = floor(unix_time / 15). CBOR here is the shortest-form encoding cbor2
// writes, so the gate re-computes exactly the bytes the holder signed.

export const PREFIX = "GT1:";
export const STEP_SECONDS = 15;
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

export function currentStep(ms) {
  return Math.floor(ms / 1000 / STEP_SECONDS);
}

export function b45encode(bytes) {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let v = bytes[i] * 256 + bytes[i + 1];
    const c = v % 45; v = (v - c) / 45;
    const d = v % 45; const e = (v - d) / 45;
    out += ALPHABET[c] + ALPHABET[d] + ALPHABET[e];
  }
  if (bytes.length % 2) {
    const v = bytes[bytes.length - 1];
    out += ALPHABET[v % 45] + ALPHABET[Math.floor(v / 45)];
  }
  return out;
}

// ------------------------------------------------------------------ CBOR (encode)

function head(major, n) {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  if (n < 0x100000000) return Uint8Array.of(m | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  const out = new Uint8Array(9);
  out[0] = m | 27;
  let v = BigInt(n);
  for (let i = 8; i >= 1; i--) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
}

export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

export const cbor = {
  uint: (n) => head(0, n),
  bytes: (b) => concat([head(2, b.length), b]),
  text: (s) => { const b = new TextEncoder().encode(s); return concat([head(3, b.length), b]); },
  array: (items) => concat([head(4, items.length), ...items]),
};

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** What the holder key signs for ``step``: CBOR(["GT1-proof", SHA-256(credential), step]). */
export async function proofMessage(credential, step) {
  return cbor.array([cbor.text("GT1-proof"), cbor.bytes(await sha256(credential)), cbor.uint(step)]);
}

/** The QR text for ``step``; ``sign(message) -> Promise<Uint8Array(64)>`` holds the holder key. */
export async function present(credential, step, sign) {
  const proof = await sign(await proofMessage(credential, step));
  if (!(proof instanceof Uint8Array) || proof.length !== 64) throw new Error("holder proof must be 64 bytes");
  return PREFIX + b45encode(cbor.array([cbor.bytes(credential), cbor.uint(step), cbor.bytes(proof)]));
}

// ------------------------------------------------------------------ CBOR (decode, for showing the claims)

class Reader {
  constructor(bytes) { this.b = bytes; this.i = 0; this.depth = 0; }
  byte() { if (this.i >= this.b.length) throw new Error("CBOR: truncated"); return this.b[this.i++]; }
  arg(info) {
    if (info < 24) return info;
    const n = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!n) throw new Error("CBOR: indefinite or reserved length");
    let v = 0n;
    for (let k = 0; k < n; k++) v = (v << 8n) | BigInt(this.byte());
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  take(n) {
    if (typeof n !== "number" || this.i + n > this.b.length) throw new Error("CBOR: truncated");
    const out = this.b.subarray(this.i, this.i + n); this.i += n; return out;
  }
  item() {
    if (++this.depth > 8) throw new Error("CBOR: too deep");
    const ib = this.byte(), major = ib >> 5, info = ib & 31;
    let v;
    if (major === 7) {
      v = { 20: false, 21: true, 22: null }[info];
      if (v === undefined) throw new Error("CBOR: unsupported simple value");
    } else {
      const a = this.arg(info);
      if (major === 0) v = a;
      else if (major === 1) v = typeof a === "bigint" ? -1n - a : -1 - a;
      else if (major === 2) v = this.take(a);
      else if (major === 3) v = new TextDecoder("utf-8", { fatal: true }).decode(this.take(a));
      else if (major === 4) { v = []; for (let k = 0; k < a; k++) v.push(this.item()); }
      else if (major === 5) { v = new Map(); for (let k = 0; k < a; k++) { const key = this.item(); v.set(key, this.item()); } }
      else if (major === 6) v = { tag: a, value: this.item() };
    }
    this.depth--;
    return v;
  }
}

export function decode(bytes) {
  const r = new Reader(bytes);
  const v = r.item();
  if (r.i !== bytes.length) throw new Error("CBOR: trailing bytes");
  return v;
}

/** The claims of a credential (COSE_Sign1 bytes), for display: event, tier, zone, entries, version, face. */
export function claimsOf(credential) {
  const msg = decode(credential);
  if (!msg || msg.tag !== 18 || !Array.isArray(msg.value) || msg.value.length !== 4) {
    throw new Error("not a GT1 credential (COSE_Sign1)");
  }
  const c = decode(msg.value[2]);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const cnf = c.get(8);
  return {
    ticketId: hex(c.get(7)), event: c.get(-70001), tier: c.get(-70002) ?? "", zone: c.get(-70003) ?? null,
    entries: c.get(-70004) ?? 1, version: c.get(-70005) ?? 1, face: c.get(-70006) === true,
    holderPub: cnf instanceof Map && cnf.get(1) instanceof Map ? cnf.get(1).get(-2) : null,
    nbf: c.get(5) ?? null, exp: c.get(4) ?? null,
  };
}

// ------------------------------------------------------------------ small helpers

export function b64decode(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function b64urlencode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
