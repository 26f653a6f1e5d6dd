// Drives the reference @openclaw/gateway-client GatewayClient against a gateway and prints
// one JSON object per line on stdout for tests/interop/test_gateway_client.py.
//
//   node gateway_client_driver.mjs <gateway-client dist/index.mjs> <ws url> <token> <scenario> [text]
//
// scenario "session": connect (token only, no device identity), request health,
//   system-presence, system-event {text}, an unknown method; wait for >= 3 ticks and the
//   presence event carrying `text`; then {"kind":"done"} and exit 0.
// scenario "bad-token": connect with a wrong token; expect a connect error and the client
//   pausing its reconnect loop; then {"kind":"done"} and exit 0.
// scenario "reads": connect, request health and system-presence, then {"kind":"done"}.
// $DRIVER_CLIENT_OPTIONS (JSON object), if set, is merged over the GatewayClient options
// (e.g. {"clientName":"cli","mode":"probe","scopes":[]}).
// Anything unexpected: {"kind":"timeout"} after 20 s and exit 2.
import { pathToFileURL } from "node:url";

const [entry, url, token, scenario, text = "interop hello"] = process.argv.slice(2);
const { GatewayClient } = await import(pathToFileURL(entry).href);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const errorInfo = (err) => ({
  name: err?.name, message: String(err?.message ?? err), code: err?.gatewayCode ?? err?.code,
  details: err?.details, retryable: err?.retryable,
});

let client;
let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(deadline);
  Promise.resolve(client?.stopAndWait({ timeoutMs: 1000 })).catch(() => {}).finally(() => {
    setTimeout(() => process.exit(code), 50);
  });
}
const deadline = setTimeout(() => { out({ kind: "timeout" }); finish(2); }, 20000);

const state = { ticks: 0, presenceWithText: false, requestsDone: false, connects: 0 };
function maybeDone() {
  if (scenario === "session" && state.requestsDone && state.ticks >= 3 && state.presenceWithText) {
    out({ kind: "done" });
    finish(0);
  }
}

async function call(method, params) {
  try {
    const payload = await client.request(method, params);
    out({ kind: "result", method, ok: true, payload });
  } catch (err) {
    out({ kind: "result", method, ok: false, error: errorInfo(err) });
  }
}

client = new GatewayClient({
  url,
  token,
  // Token-only auth: no device identity, so nothing is signed and no device token stored.
  // (The package's default hostDeps.loadOrCreateDeviceIdentity already returns undefined;
  // null says so explicitly.)
  deviceIdentity: null,
  clientName: "gateway-client",
  mode: "backend",
  clientVersion: "0.0.0-interop",
  instanceId: "krabfast-interop",
  scopes: ["operator.read", "operator.write", "operator.admin"],
  requestTimeoutMs: 5000,
  hostDeps: {
    logError: (message) => out({ kind: "log", level: "error", message }),
    logDebug: (message) => out({ kind: "log", level: "debug", message }),
  },
  onHelloOk: async (hello) => {
    state.connects += 1;
    out({ kind: "hello", hello });
    if (state.connects > 1) return;
    if (scenario === "reads") {
      await call("health", {});
      await call("system-presence", {});
      out({ kind: "done" });
      finish(0);
      return;
    }
    if (scenario !== "session") return;
    await call("health", {});
    await call("system-presence", {});
    await call("system-event", { text });
    await call("krabfast.interop.no-such-method", {});
    state.requestsDone = true;
    maybeDone();
  },
  onEvent: (frame) => {
    out({ kind: "event", frame });
    if (frame.event === "tick") state.ticks += 1;
    if (frame.event === "presence") {
      const list = frame.payload?.presence;
      if (Array.isArray(list) && list.some((e) => e?.text === text)) state.presenceWithText = true;
    }
    maybeDone();
  },
  onGap: (info) => out({ kind: "gap", ...info }),
  onConnectError: (err) => out({ kind: "connect-error", error: errorInfo(err) }),
  onReconnectPaused: (info) => {
    out({ kind: "reconnect-paused", ...info });
    if (scenario === "bad-token") { out({ kind: "done" }); finish(0); }
  },
  onClose: (code, reason, info) => out({ kind: "close", code, reason, phase: info?.phase }),
  ...JSON.parse(process.env.DRIVER_CLIENT_OPTIONS || "{}"),
});
client.start();
