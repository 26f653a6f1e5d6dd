// Drives the reference @openclaw/gateway-client GatewayClient with a generated Ed25519 device
// identity against a gateway, printing one JSON object per line on stdout for
// tests/interop/test_device_identity.py.
//
//   node device_client_driver.mjs <gateway-client dist/index.mjs> <ws url> <shared token>
//
// Phases, each a fresh GatewayClient (clientName "cli", mode "cli", scopes ["operator.read"]):
//   shared  - auth by the shared token; the gateway pairs the device and issues a device token
//             (stored through hostDeps.storeDeviceAuthToken); request `health`.
//   device  - `deviceToken` option only, no shared token; request `system-presence`.
//   stored  - no auth options: the client loads the stored token itself; request `health`.
//   stale   - the stored token replaced by a wrong one: the connect fails with
//             AUTH_DEVICE_TOKEN_MISMATCH and the client clears its stored token.
// Then {"kind":"done"} and exit 0. Anything stuck: {"kind":"timeout"} after 25 s and exit 2.
// The package ships no crypto helpers: signing and key export use node:crypto (hostDeps).
import crypto from "node:crypto";
import { pathToFileURL } from "node:url";

const [entry, url, sharedToken] = process.argv.slice(2);
const { GatewayClient } = await import(pathToFileURL(entry).href);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const errorInfo = (err) => ({
  name: err?.name, message: String(err?.message ?? err), code: err?.gatewayCode ?? err?.code,
  details: err?.details,
});
const deadline = setTimeout(() => { out({ kind: "timeout" }); process.exit(2); }, 25000);

// 1. The identity: deviceId = hex sha256 of the raw 32-byte public key.
const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
const rawPublicKey = publicKey.export({ type: "spki", format: "der" }).subarray(-32);
const deviceIdentity = {
  deviceId: crypto.createHash("sha256").update(rawPublicKey).digest("hex"),
  publicKeyPem: publicKey.export({ type: "spki", format: "pem" }),
  privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }),
};
out({ kind: "identity", deviceId: deviceIdentity.deviceId, publicKey: rawPublicKey.toString("base64url") });

// 2. Host dependencies: signing, key export, and an in-memory token store.
let phase = "init";
const tokenStore = new Map(); // `${deviceId}:${role}` -> { token, scopes }
const hostDeps = {
  signDevicePayload: (pem, payload) => {
    out({ kind: "signed", phase, payload });
    return crypto.sign(null, Buffer.from(payload, "utf8"), crypto.createPrivateKey(pem)).toString("base64url");
  },
  publicKeyRawBase64UrlFromPem: (pem) =>
    crypto.createPublicKey(pem).export({ type: "spki", format: "der" }).subarray(-32).toString("base64url"),
  loadDeviceAuthToken: ({ deviceId, role }) => tokenStore.get(`${deviceId}:${role}`) ?? null,
  storeDeviceAuthToken: ({ deviceId, role, token, scopes }) => {
    out({ kind: "store", phase, deviceId, role, token, scopes });
    tokenStore.set(`${deviceId}:${role}`, { token, scopes });
  },
  clearDeviceAuthToken: ({ deviceId, role }) => {
    out({ kind: "clear", phase, deviceId, role });
    tokenStore.delete(`${deviceId}:${role}`);
  },
  logError: (message) => out({ kind: "log", phase, level: "error", message }),
  logDebug: (message) => out({ kind: "log", phase, level: "debug", message }),
};

function newClient(auth, expectFailure) {
  const { promise, resolve, reject } = Promise.withResolvers();
  const client = new GatewayClient({
    url,
    ...auth,
    deviceIdentity,
    hostDeps,
    clientName: "cli", // gateway-client/backend on loopback skips pairing: no device token
    mode: "cli",
    clientVersion: "0.0.0-interop",
    scopes: ["operator.read"],
    requestTimeoutMs: 5000,
    onHelloOk: (hello) => { out({ kind: "hello", phase, hello, auth: hello.auth }); resolve(client); },
    onConnectError: (err) => {
      out({ kind: "connect-error", phase, error: errorInfo(err) });
      if (expectFailure) resolve(client); else reject(err);
    },
    onReconnectPaused: (info) => out({ kind: "reconnect-paused", phase, ...info }),
    onClose: (code, reason) => out({ kind: "close", phase, code, reason }),
  });
  client.start();
  return promise;
}

async function call(client, method, params) {
  try {
    out({ kind: "result", phase, method, ok: true, payload: await client.request(method, params) });
  } catch (err) {
    out({ kind: "result", phase, method, ok: false, error: errorInfo(err) });
  }
}

const key = `${deviceIdentity.deviceId}:operator`;

phase = "shared";
let client = await newClient({ token: sharedToken });
await call(client, "health", {});
await client.stopAndWait({ timeoutMs: 2000 });

phase = "device";
client = await newClient({ deviceToken: tokenStore.get(key)?.token });
await call(client, "system-presence", {});
await client.stopAndWait({ timeoutMs: 2000 });

phase = "stored";
client = await newClient({});
await call(client, "health", {});
await client.stopAndWait({ timeoutMs: 2000 });

phase = "stale";
tokenStore.set(key, { token: "A".repeat(43), scopes: ["operator.read"] });
client = await newClient({}, true);
await client.stopAndWait({ timeoutMs: 2000 });

phase = "end";
out({ kind: "done" });
clearTimeout(deadline);
setTimeout(() => process.exit(0), 50);
