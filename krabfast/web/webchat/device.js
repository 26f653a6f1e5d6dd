// This browser's device identity: an Ed25519 key pair made with WebCrypto and kept in
// IndexedDB. The private key is created non-extractable, so page script can sign with it
// but can never read it out (IndexedDB stores the CryptoKey object itself).
//
// The gateway derives the device id the way the reference does: the lowercase hex SHA-256
// of the raw 32-byte public key (krabfast/gateway/device_auth.py).

const DB_NAME = "krabfast-webchat";
const STORE = "identity";
const RECORD = "device-v1";
const DEVICE_TOKEN_PREFIX = "krabfast.webchat.deviceToken.v1:";

export class IdentityUnavailable extends Error {}

export function b64url(bytes) {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idb(db, mode, op) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = op(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

class DeviceIdentity {
  constructor(keys, publicKeyRaw, deviceId, persisted) {
    this.keys = keys;
    this.publicKey = b64url(publicKeyRaw);
    this.deviceId = deviceId;
    this.persisted = persisted; // false: a key for this page load only (no IndexedDB)
  }

  /** Unpadded base64url Ed25519 signature of the UTF-8 bytes of `text`. */
  async sign(text) {
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, this.keys.privateKey,
                                         new TextEncoder().encode(text));
    return b64url(sig);
  }
}

async function fromKeys(keys, persisted) {
  const raw = await crypto.subtle.exportKey("raw", keys.publicKey);
  return new DeviceIdentity(keys, raw, await sha256Hex(raw), persisted);
}

/** The stored identity, or a new one (stored when IndexedDB works). */
export async function loadOrCreateIdentity() {
  if (!globalThis.isSecureContext || !crypto.subtle) {
    throw new IdentityUnavailable(
      "This page is not in a secure context, so the browser offers no cryptography to prove " +
      "its identity. Open it from http://localhost or http://127.0.0.1 on the gateway host, " +
      "or over HTTPS.");
  }
  let db = null;
  try {
    db = await openDb();
    const stored = await idb(db, "readonly", (s) => s.get(RECORD));
    if (stored && stored.privateKey && stored.publicKey) return await fromKeys(stored, true);
  } catch (err) {
    console.warn("webchat: IndexedDB unavailable, using a key for this page only", err);
    db = null;
  }
  let keys;
  try {
    keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  } catch (err) {
    throw new IdentityUnavailable(
      "This browser cannot make an Ed25519 key (WebCrypto), which the gateway needs to " +
      "recognise it. Use a current Chromium, Chrome, Edge, Firefox or Safari.");
  }
  if (db) {
    try {
      await idb(db, "readwrite", (s) => s.put(
        { privateKey: keys.privateKey, publicKey: keys.publicKey, createdAtMs: Date.now() },
        RECORD));
      return await fromKeys(keys, true);
    } catch (err) {
      console.warn("webchat: could not store the device key", err);
    }
  }
  return await fromKeys(keys, false);
}

// The device token the gateway issued to this device (hello-ok.auth.deviceToken), per
// gateway URL. With it the page reconnects without the shared token, within the scopes
// the device was approved for.
export const deviceTokens = {
  get(gatewayUrl, deviceId) {
    try {
      const entry = JSON.parse(localStorage.getItem(DEVICE_TOKEN_PREFIX + gatewayUrl) || "null");
      return entry && entry.deviceId === deviceId ? entry.token : null;
    } catch {
      return null;
    }
  },
  set(gatewayUrl, deviceId, token) {
    try {
      localStorage.setItem(DEVICE_TOKEN_PREFIX + gatewayUrl, JSON.stringify({ deviceId, token }));
    } catch { /* storage full or disabled: the shared token still works */ }
  },
  clear(gatewayUrl) {
    try { localStorage.removeItem(DEVICE_TOKEN_PREFIX + gatewayUrl); } catch { /* ignore */ }
  },
};
