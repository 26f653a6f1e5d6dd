// Drives the reference @openclaw/gateway-client GatewayClient through a chat turn and an
// agent run, printing one JSON object per line for tests/interop/test_chat_interop.py.
//
//   node chat_driver.mjs <gateway-client dist/index.mjs> <ws url> <token> <sessionKey> <chat msg> <agent msg>
//
// 1. chat.send {sessionKey, message, idempotencyKey} -> {"kind":"result","method":"chat.send",...};
//    every `chat` event -> {"kind":"event",...}; once the run's `final` (or error/aborted)
//    arrives: chat.history {sessionKey} -> {"kind":"result","method":"chat.history",...}.
// 2. agent {message, sessionKey, deliver:false, idempotencyKey} with {expectFinal:true}; the
//    interim `accepted` answer -> {"kind":"accepted","payload":...}; the final answer ->
//    {"kind":"result","method":"agent",...}.
// Then {"kind":"done"} and exit 0; {"kind":"timeout"} after 60 s and exit 2.
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const [entry, url, token, sessionKey, chatMessage, agentMessage] = process.argv.slice(2);
const { GatewayClient } = await import(pathToFileURL(entry).href);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const errorInfo = (err) => ({
  name: err?.name, message: String(err?.message ?? err), code: err?.gatewayCode ?? err?.code,
  details: err?.details,
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
const deadline = setTimeout(() => { out({ kind: "timeout" }); finish(2); }, 60000);

async function call(method, params, opts) {
  try {
    const payload = await client.request(method, params, opts);
    out({ kind: "result", method, ok: true, payload });
    return payload;
  } catch (err) {
    out({ kind: "result", method, ok: false, error: errorInfo(err) });
    return undefined;
  }
}

let chatRunId = null;
let resolveChatEnd;
const chatEnded = new Promise((resolve) => { resolveChatEnd = resolve; });
const early = [];

function onChat(frame) {
  const p = frame.payload ?? {};
  if (chatRunId === null) { early.push(p); return; }
  if (p.runId === chatRunId && ["final", "error", "aborted"].includes(p.state)) resolveChatEnd();
}

async function scenario() {
  const chatKey = randomUUID();
  const sent = await call("chat.send", { sessionKey, message: chatMessage, idempotencyKey: chatKey });
  if (!sent) { out({ kind: "done" }); finish(0); return; }
  chatRunId = sent.runId ?? chatKey;
  for (const p of early.splice(0)) onChat({ payload: p });
  await chatEnded;
  await call("chat.history", { sessionKey });
  await call("agent", { message: agentMessage, sessionKey, deliver: false,
                        idempotencyKey: randomUUID() },
             { expectFinal: true, onAccepted: (payload) => out({ kind: "accepted", payload }) });
  out({ kind: "done" });
  finish(0);
}

let connects = 0;
client = new GatewayClient({
  url,
  token,
  deviceIdentity: null,
  clientName: "gateway-client",
  mode: "backend",
  clientVersion: "0.0.0-interop",
  instanceId: "krabfast-chat-interop",
  scopes: ["operator.read", "operator.write", "operator.admin"],
  requestTimeoutMs: 20000,
  hostDeps: {
    logError: (message) => out({ kind: "log", level: "error", message }),
    logDebug: () => {},
  },
  onHelloOk: (hello) => {
    connects += 1;
    out({ kind: "hello", hello });
    if (connects === 1) scenario().catch((err) => { out({ kind: "crash", error: errorInfo(err) }); finish(3); });
  },
  onEvent: (frame) => {
    if (frame.event === "tick" || frame.event === "health") return;
    out({ kind: "event", frame });
    if (frame.event === "chat") onChat(frame);
  },
  onGap: (info) => out({ kind: "gap", ...info }),
  onConnectError: (err) => out({ kind: "connect-error", error: errorInfo(err) }),
  onClose: (code, reason) => out({ kind: "close", code, reason }),
});
client.start();
