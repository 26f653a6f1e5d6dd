// The gateway connection: challenge -> signed connect -> hello-ok, request/response
// correlation, events, and reconnecting by itself with backoff.
//
// Status changes are "status" events ({state, text, ...}); server events are "gateway-event"
// ({event, payload}); every successful handshake is a "hello" event (the hello-ok payload).

import { deviceTokens } from "./device.js";
import {
  BLOCKED, DROP_DEVICE_TOKEN, GatewayError, NEEDS_CREDENTIAL, RETRY, WAIT_FOR_APPROVAL,
  explainClose, explainConnectError,
} from "./errors.js";

const PROTOCOL = 4;
// `webchat` / `webchat` is the reference's WebChat client (isWebchatClient): the gateway
// checks its Origin, and a loopback page pairs silently.
export const CLIENT = Object.freeze({
  id: "webchat", mode: "webchat", version: "1.0.0", displayName: "krabfast WebChat",
});
// What chatting needs (sessions.list/chat.history: read; chat.send/abort: write), no more.
export const SCOPES = Object.freeze(["operator.read", "operator.write"]);
const ROLE = "operator";

const CHALLENGE_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const PAIRING_POLL_MS = 4_000;

// The gateway lowercases platform and family with ASCII rules only before verifying.
function asciiLower(text) {
  return (text || "").trim().replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/** The v3 string a device signs: it binds the connect's key facts to the challenge nonce. */
export function signaturePayload({ deviceId, client, role, scopes, signedAt, token, nonce }) {
  return ["v3", deviceId, client.id, client.mode, role, scopes.join(","), String(signedAt),
          token || "", nonce, asciiLower(client.platform), asciiLower(client.deviceFamily)]
    .join("|");
}

function backoffMs(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(base * (0.8 + Math.random() * 0.4)); // jitter: tabs do not reconnect in step
}

export class Gateway extends EventTarget {
  /**
   * url: ws(s):// URL of the gateway. identity: from device.js. credential(): the current
   * shared secret {token} or {password} or null.
   */
  constructor({ url, identity, credential }) {
    super();
    this.url = url;
    this.identity = identity;
    this.credential = credential;
    this.client = {
      ...CLIENT,
      platform: (navigator.platform || "").trim() || "web",
      instanceId: crypto.randomUUID(),
    };
    const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (timeZone) this.client.timeZone = timeZone;
    this.ws = null;
    this.connected = false;
    this.hello = null;
    this.status = { state: "idle", text: "" };
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.timers = {};
  }

  start() {
    this._open();
  }

  /** Reconnect now (after a new credential, or the person asked to). */
  retryNow() {
    this._clearTimer("retry");
    this.attempt = 0;
    if (this.ws) this._detach(this.ws, { code: 1000, reason: "", quiet: true });
    this._open();
  }

  /** Call `method`; resolves with the response payload, rejects with a GatewayError. */
  request(method, params = {}, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    if (!this.connected) {
      return Promise.reject(new GatewayError({ code: "DISCONNECTED", message: "not connected" }));
    }
    return this._send(this.ws, method, params, timeoutMs);
  }

  // -- internals -----------------------------------------------------------------------------

  _setStatus(status) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  _clearTimer(name) {
    if (this.timers[name]) {
      clearTimeout(this.timers[name]);
      clearInterval(this.timers[name]);
      delete this.timers[name];
    }
  }

  _open() {
    this._setStatus({ state: "connecting",
                      text: this.attempt ? "Reconnecting…" : "Connecting…" });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._setStatus({ state: "blocked", text: `This is not a gateway address: ${this.url}.` });
      return;
    }
    this.ws = ws;
    ws.everOpened = false;
    ws.outcome = null; // what a connect refusal decided; applied when the socket closes
    ws.shutdown = null;
    ws.onopen = () => { ws.everOpened = true; };
    ws.onmessage = (ev) => this._onFrame(ws, ev.data);
    ws.onclose = (ev) => this._detach(ws, { code: ev.code, reason: ev.reason });
    ws.onerror = () => {}; // a close event always follows, with what we can know
    this._clearTimer("challenge");
    this.timers.challenge = setTimeout(() => {
      if (this.ws === ws && !this.connected) {
        this._detach(ws, { code: 4000, reason: "no challenge from the gateway" });
      }
    }, CHALLENGE_TIMEOUT_MS);
  }

  _send(ws, method, params, timeoutMs) {
    const id = `wc-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GatewayError({ code: "TIMEOUT", message: `${method} timed out` }));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, ws });
      ws.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  _onFrame(ws, data) {
    if (ws !== this.ws) return;
    ws.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the gateway only sends JSON text frames
    }
    if (frame.type === "res") {
      const entry = this.pending.get(frame.id);
      if (!entry) return;
      this.pending.delete(frame.id);
      clearTimeout(entry.timer);
      if (frame.ok) entry.resolve(frame.payload);
      else entry.reject(new GatewayError(frame.error));
    } else if (frame.type === "event") {
      if (frame.event === "connect.challenge" && !this.connected) {
        this._connect(ws, frame.payload || {}).catch((err) => {
          console.error("webchat: connect failed", err);
          this._detach(ws, { code: 4000, reason: String(err && err.message || err) });
        });
        return;
      }
      if (frame.event === "shutdown") ws.shutdown = frame.payload || {};
      this.dispatchEvent(new CustomEvent("gateway-event",
                                         { detail: { event: frame.event, payload: frame.payload } }));
    }
  }

  async _connect(ws, challenge) {
    this._clearTimer("challenge");
    const secret = this.credential();
    const deviceToken = secret ? null : deviceTokens.get(this.url, this.identity.deviceId);
    const auth = secret ? { ...secret } : deviceToken ? { deviceToken } : undefined;
    // The reference signs the challenge's ts, so a browser with a wrong clock still connects.
    const signedAt = Number.isInteger(challenge.ts) ? challenge.ts : Date.now();
    const scopes = [...SCOPES];
    const payload = signaturePayload({
      deviceId: this.identity.deviceId, client: this.client, role: ROLE, scopes, signedAt,
      token: (secret && secret.token) || deviceToken || "", nonce: challenge.nonce,
    });
    const params = {
      minProtocol: PROTOCOL, maxProtocol: PROTOCOL, client: this.client, role: ROLE, scopes,
      caps: [], userAgent: navigator.userAgent, locale: navigator.language,
      device: {
        id: this.identity.deviceId, publicKey: this.identity.publicKey,
        signature: await this.identity.sign(payload), signedAt, nonce: challenge.nonce,
      },
    };
    if (auth) params.auth = auth;
    if (ws !== this.ws) return;
    let hello;
    try {
      hello = await this._send(ws, "connect", params, REQUEST_TIMEOUT_MS);
    } catch (err) {
      if (ws !== this.ws) return;
      ws.outcome = explainConnectError(err, { usedDeviceToken: Boolean(deviceToken) });
      ws.outcome.code = err.reason;
      if (ws.outcome.action === DROP_DEVICE_TOKEN) deviceTokens.clear(this.url);
      return; // the gateway closes the socket after a refusal; _detach applies the outcome
    }
    if (ws !== this.ws) return;
    this.connected = true;
    this.hello = hello;
    this.attempt = 0;
    if (hello.auth && hello.auth.deviceToken) {
      deviceTokens.set(this.url, this.identity.deviceId, hello.auth.deviceToken);
    }
    this._watchTicks(ws, (hello.policy && hello.policy.tickIntervalMs) || 30_000);
    this._setStatus({ state: "connected", text: "Connected." });
    this.dispatchEvent(new CustomEvent("hello", { detail: hello }));
  }

  // The gateway ticks every tickIntervalMs; a socket silent for two ticks is dead even if
  // the browser has not noticed (a sleeping laptop, a dropped Wi-Fi).
  _watchTicks(ws, tickMs) {
    this._clearTimer("ticks");
    this.timers.ticks = setInterval(() => {
      if (ws === this.ws && Date.now() - ws.lastFrameAt > tickMs * 2 + 5_000) {
        this._detach(ws, { code: 4000, reason: "" });
      }
    }, Math.max(1_000, Math.min(tickMs, 15_000)));
  }

  /** Forget `ws`, fail what waited on it, and decide what happens next. */
  _detach(ws, { code, reason, quiet = false }) {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasConnected = this.connected;
    this.connected = false;
    this._clearTimer("challenge");
    this._clearTimer("ticks");
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(); } catch { /* already closed */ }
    for (const [id, entry] of this.pending) {
      if (entry.ws !== ws) continue;
      this.pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(new GatewayError({ code: "DISCONNECTED", message: "connection lost" }));
    }
    if (wasConnected) this.dispatchEvent(new CustomEvent("disconnected"));
    if (quiet) return;
    const outcome = ws.outcome;
    if (outcome) {
      switch (outcome.action) {
        case NEEDS_CREDENTIAL:
        case BLOCKED:
          this._setStatus({ state: outcome.action, text: outcome.text, code: outcome.code,
                            credential: outcome.credential });
          return;
        case WAIT_FOR_APPROVAL:
          this._retryIn(PAIRING_POLL_MS, { state: "pairing", text: outcome.text,
                                           code: outcome.code, requestId: outcome.requestId });
          return;
        case DROP_DEVICE_TOKEN:
          this._retryIn(0, { state: "connecting", text: outcome.text });
          return;
        case RETRY:
          this._retryIn(outcome.retryAfterMs || backoffMs(this.attempt++),
                        { state: "retrying", text: outcome.text, code: outcome.code });
          return;
      }
    }
    const text = explainClose({ code, reason, everOpened: ws.everOpened || wasConnected,
                                shutdown: ws.shutdown, gatewayUrl: this.url });
    this._retryIn(backoffMs(this.attempt++), { state: "retrying", text, code: code || null });
  }

  _retryIn(ms, status) {
    this._clearTimer("retry");
    this._setStatus({ ...status, retryAt: Date.now() + ms });
    this.timers.retry = setTimeout(() => {
      delete this.timers.retry;
      this._open();
    }, ms);
  }
}
