// The holder's Ed25519 key: made in this browser and never sent anywhere.
// WebCrypto with a non-extractable private key where the browser has Ed25519
// (Chromium, Firefox, Safari 17+); otherwise the vendored noble-ed25519
// (vendor/ed25519.js, MIT), whose 32-byte seed then lives in IndexedDB.

let nativeChecked = null;

async function hasNativeEd25519() {
  if (globalThis.GT1_WALLET_TUNING && globalThis.GT1_WALLET_TUNING.forceJsEd25519) return false;
  if (nativeChecked === null) {
    nativeChecked = (async () => {
      try {
        const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
        const sig = await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, new Uint8Array(1));
        return sig.byteLength === 64;
      } catch (e) {
        return false;
      }
    })();
  }
  return nativeChecked;
}

/** A new holder key: {kind, privateKey | seed, pub (raw 32 bytes)}; storable in IndexedDB. */
export async function newHolderKey() {
  if (await hasNativeEd25519()) {
    const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
    return { kind: "webcrypto", privateKey: kp.privateKey, pub };
  }
  const ed = await import("./vendor/ed25519.js");
  const seed = ed.utils.randomSecretKey();
  return { kind: "js", seed, pub: await ed.getPublicKeyAsync(seed) };
}

/** Ed25519 signature of ``message`` by a stored holder key (64 bytes). */
export async function sign(key, message) {
  if (key.kind === "webcrypto") {
    return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, message));
  }
  const ed = await import("./vendor/ed25519.js");
  return ed.signAsync(message, key.seed);
}
