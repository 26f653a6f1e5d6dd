// WebChat: the page. Reads the gateway and its token from the URL fragment (then strips
// them from the address bar), connects with this browser's device identity, and shows one
// session at a time: history, the streamed reply, send with Enter, stop.

import { IdentityUnavailable, loadOrCreateIdentity } from "./device.js";
import { explainRequestError, explainRunError } from "./errors.js";
import { Gateway } from "./gateway.js";

const $ = (id) => document.getElementById(id);
const HISTORY_LIMIT = 200;
const GATEWAY_KEY = "krabfast.webchat.gateway";
const TOKEN_PREFIX = "krabfast.webchat.token:";
const SESSION_PREFIX = "krabfast.webchat.session:";

// -- where to connect, and with what -------------------------------------------------------

const FRAGMENT_SECRETS = ["token", "password", "gateway", "gatewayUrl"];

/** Takes `token`, `password` and `gateway` out of the fragment and the address bar. */
function takeFragment() {
  const found = {};
  const rest = [];
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const name = eq < 0 ? part : part.slice(0, eq);
    if (!FRAGMENT_SECRETS.includes(name)) {
      rest.push(part);
      continue;
    }
    // decodeURIComponent, not URLSearchParams: a "+" in a token stays a "+".
    try { found[name] = decodeURIComponent(part.slice(eq + 1)); } catch { found[name] = ""; }
  }
  if (Object.keys(found).length) {
    // replaceState: the secret leaves the address bar and never enters the history.
    history.replaceState(history.state, "", location.pathname + location.search +
                         (rest.length ? `#${rest.join("&")}` : ""));
  }
  return { token: found.token || null, password: found.password || null,
           gateway: found.gateway || found.gatewayUrl || null };
}

function sameOriginGateway() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

function safeSession(op) {
  try { return op(sessionStorage); } catch { return null; } // storage disabled: memory only
}

const fragment = takeFragment();
if (fragment.gateway) safeSession((s) => s.setItem(GATEWAY_KEY, fragment.gateway));
const gatewayUrl = fragment.gateway || safeSession((s) => s.getItem(GATEWAY_KEY)) ||
  sameOriginGateway();

// The token is kept per tab (sessionStorage) for reconnects and reloads, as the reference
// UI does; a password only in memory.
const secrets = {
  token: fragment.token || safeSession((s) => s.getItem(TOKEN_PREFIX + gatewayUrl)),
  password: fragment.password,
};
if (fragment.token) safeSession((s) => s.setItem(TOKEN_PREFIX + gatewayUrl, fragment.token));

function credential() {
  if (secrets.password) return { password: secrets.password };
  if (secrets.token) return { token: secrets.token };
  return null;
}

function forgetSecrets() {
  secrets.token = secrets.password = null;
  safeSession((s) => s.removeItem(TOKEN_PREFIX + gatewayUrl));
}

function setSecret(kind, value) {
  forgetSecrets();
  if (kind === "password") {
    secrets.password = value;
  } else {
    secrets.token = value;
    safeSession((s) => s.setItem(TOKEN_PREFIX + gatewayUrl, value));
  }
}

// -- view state ----------------------------------------------------------------------------

const view = {
  gw: null,
  mainKey: "agent:main:main",
  currentKey: null,
  sessions: [],
  runs: new Map(), // runId -> Bubble, for the session on screen
  activeRuns: new Map(), // sessionKey -> runId still streaming (any session)
  historyLoad: 0, // ignores a stale history answer after a quick session switch
  // Sending waits for the session's history: drawing it replaces the list, and would
  // take a message sent meanwhile with it.
  historyReady: false,
  reloadWhenIdle: false, // a history reload put off until our reply has finished
};

function textOf(message) {
  if (!message) return "";
  const { content } = message;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.filter((p) => p && p.type === "text" && typeof p.text === "string")
      .map((p) => p.text).join("");
  }
  return "";
}

/** One message on screen. `state`: sending, sent, failed, pending, streaming, done, stopped, error. */
class Bubble {
  constructor(role, text, state) {
    this.el = document.createElement("li");
    this.el.className = "msg";
    this.el.dataset.role = role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = { user: "You", assistant: "Assistant", system: "System" }[role] || role;
    this.body = document.createElement("div");
    this.body.className = "body";
    this.note = document.createElement("div");
    this.note.className = "note";
    this.note.hidden = true;
    this.el.append(who, this.body, this.note);
    this.text = "";
    this.setText(text);
    this.setState(state);
    const list = $("messages");
    const stick = nearBottom(list);
    list.append(this.el);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  setText(text) {
    this.text = text;
    this.body.textContent = text; // never HTML: model output is untrusted
    scrollIfFollowing();
  }

  setState(state, note = "") {
    this.el.dataset.state = state;
    this.note.textContent = note;
    this.note.hidden = !note;
    scrollIfFollowing();
  }

  remove() {
    this.el.remove();
  }
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

// Follow the reply as it streams, unless the person scrolled up to read something.
let following = true;
$("messages").addEventListener("scroll", () => { following = nearBottom($("messages")); });
function scrollIfFollowing() {
  const list = $("messages");
  if (following) list.scrollTop = list.scrollHeight;
}

// -- status and notices --------------------------------------------------------------------

const PILL = {
  idle: "Starting…",
  connecting: "Connecting…",
  connected: "Connected",
  retrying: "Offline",
  pairing: "Waiting for approval",
  "needs-credential": "Sign-in needed",
  blocked: "Can't connect",
};

let countdown = null;

function showStatus(status) {
  const box = $("status");
  box.dataset.state = status.state;
  clearInterval(countdown);
  updateComposer();
  const pill = () => {
    let text = PILL[status.state] || status.state;
    if (status.retryAt && status.state === "retrying") {
      const secs = Math.max(0, Math.ceil((status.retryAt - Date.now()) / 1000));
      text = secs ? `Offline — retrying in ${secs} s` : "Offline — retrying…";
    }
    $("status-text").textContent = text;
  };
  pill();
  if (status.retryAt) countdown = setInterval(pill, 500);
  // While (re)connecting, the notice keeps saying why the last attempt failed.
  if (status.state === "connecting") return;

  const noticeShown = ["retrying", "pairing", "needs-credential", "blocked"].includes(status.state)
    && status.text;
  $("notice").hidden = !noticeShown;
  $("notice").dataset.state = status.state;
  $("notice-text").textContent = noticeShown ? status.text : "";
  // The raw code in small print, for a bug report: a close code is a number.
  const code = !noticeShown || !status.code ? ""
    : typeof status.code === "number" ? `(connection closed with code ${status.code})`
    : `(gateway code: ${status.code})`;
  $("notice-code").textContent = code;
  const form = $("credential-form");
  form.hidden = status.state !== "needs-credential";
  if (!form.hidden) {
    const isPassword = status.credential === "password";
    $("credential-label").textContent = isPassword ? "Gateway password" : "Gateway token";
    form.dataset.kind = isPassword ? "password" : "token";
    forgetSecrets(); // refused or missing: keeping it would only fail again
    $("credential-input").focus();
  }
  $("retry-button").hidden = !["retrying", "blocked", "pairing"].includes(status.state);
}

function showProblem(text) {
  // A failed action while connected (the status line stays "Connected").
  $("notice").hidden = false;
  $("notice").dataset.state = "problem";
  $("notice-text").textContent = text;
  $("notice-code").textContent = "";
  $("credential-form").hidden = true;
  $("retry-button").hidden = true;
}

function updateComposer() {
  const connected = Boolean(view.gw && view.gw.connected);
  const on = connected && view.historyReady;
  $("input").disabled = !on;
  $("send").disabled = !on;
  $("new-chat").disabled = !on;
  $("input").placeholder = on ? "Message — Enter sends, Shift+Enter starts a new line"
    : connected ? "Loading this chat…"
    : "Not connected — messages can be sent once WebChat is connected";
  updateStop();
}

function updateStop() {
  const active = view.activeRuns.has(view.currentKey);
  $("stop").disabled = !(active && view.gw && view.gw.connected);
  $("messages").dataset.busy = active ? "true" : "false";
}

// -- sessions ------------------------------------------------------------------------------

const TITLE_CHARS = 48;
const dateFormat = new Intl.DateTimeFormat(undefined,
                                           { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

function sessionTitle(row) {
  if (row.label) return row.label;
  if (row.displayName) return row.displayName;
  if (row.derivedTitle) return row.derivedTitle;
  if (row.key === view.mainKey) return "Main chat";
  if (row.placeholder) return "New chat";
  return row.updatedAt ? `Chat of ${dateFormat.format(new Date(row.updatedAt))}` : row.key;
}

/** A chat's first message names it (a label every client sees), unless it has a name. */
function labelNewChat(key, text) {
  if (key === view.mainKey || $("messages").querySelector('.msg[data-role="user"]')) return;
  const row = view.sessions.find((r) => r.key === key);
  if (row && (row.label || row.displayName)) return;
  const words = text.trim().replace(/\s+/g, " ");
  const label = words.length > TITLE_CHARS ? `${words.slice(0, TITLE_CHARS - 1)}…` : words;
  view.gw.request("sessions.patch", { key, label })
    .then(() => refreshSessionsSoon())
    .catch((err) => console.warn("webchat: could not name the chat", err));
}

function renderSessions() {
  const list = $("session-list");
  list.replaceChildren();
  const rows = [...view.sessions];
  // The main session and the one on screen are listed before they have any messages.
  for (const key of [view.mainKey, view.currentKey]) {
    if (key && !rows.some((r) => r.key === key)) rows.unshift({ key, placeholder: true });
  }
  for (const row of rows) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.key = row.key;
    if (row.key === view.currentKey) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = sessionTitle(row);
    button.append(title);
    if (row.lastMessagePreview) {
      const preview = document.createElement("span");
      preview.className = "preview";
      preview.textContent = row.lastMessagePreview;
      button.append(preview);
    }
    if (view.activeRuns.has(row.key)) button.dataset.busy = "true";
    button.addEventListener("click", () => selectSession(row.key));
    li.append(button);
    list.append(li);
  }
  const current = rows.find((r) => r.key === view.currentKey);
  $("chat-title").textContent = current ? sessionTitle(current) : "Chat";
}

async function refreshSessions() {
  try {
    const res = await view.gw.request("sessions.list",
                                      { limit: 50, includeDerivedTitles: true, includeLastMessage: true });
    view.sessions = res.sessions || [];
  } catch (err) {
    if (err.reason !== "DISCONNECTED") showProblem(`Could not list the chats. ${explainRequestError(err)}`);
  }
  renderSessions();
}

let refreshTimer = null;
function refreshSessionsSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { if (view.gw.connected) refreshSessions(); }, 250);
}

async function selectSession(key) {
  if (key === view.currentKey) return;
  view.currentKey = key;
  safeSession((s) => s.setItem(SESSION_PREFIX + gatewayUrl, key));
  renderSessions();
  updateStop();
  await loadHistory();
}

async function newChat() {
  // Nothing typed now may go to the chat on screen: it is about to be replaced.
  view.historyReady = false;
  updateComposer();
  try {
    const res = await view.gw.request("sessions.create", {});
    view.sessions = [{ key: res.key, placeholder: true, ...(res.entry || {}) }, ...view.sessions];
    await selectSession(res.key);
  } catch (err) {
    showProblem(`Could not start a new chat. ${explainRequestError(err)}`);
    view.historyReady = true;
    updateComposer();
  }
}

// -- history and streaming -----------------------------------------------------------------

async function loadHistory() {
  const key = view.currentKey;
  const load = ++view.historyLoad;
  view.historyReady = false;
  view.reloadWhenIdle = false;
  updateComposer();
  let res;
  try {
    res = await view.gw.request("chat.history", { sessionKey: key, limit: HISTORY_LIMIT });
  } catch (err) {
    if (load === view.historyLoad && err.reason !== "DISCONNECTED") {
      showProblem(`Could not load this chat's history. ${explainRequestError(err)}`);
      view.historyReady = true; // the chat still works without its past
      updateComposer();
    }
    return;
  }
  if (load !== view.historyLoad) return;
  $("messages").replaceChildren();
  view.runs.clear();
  following = true;
  for (const message of res.messages || []) {
    if (!["user", "assistant", "system"].includes(message.role)) continue;
    const bubble = new Bubble(message.role, textOf(message), "done");
    if (["aborted", "rpc"].includes(message.stopReason)) bubble.setState("stopped", "Stopped.");
    else if (message.stopReason === "error") bubble.setState("error"); // a failed turn, kept
  }
  if (res.hasMore) {
    const more = document.createElement("li");
    more.className = "history-note";
    more.textContent = `Earlier messages are not shown (the newest ${HISTORY_LIMIT} are).`;
    $("messages").prepend(more);
  }
  const inFlight = res.inFlightRun;
  if (inFlight && inFlight.runId) {
    // A reply still streaming when we (re)connected: pick it up where it is.
    const bubble = new Bubble("assistant", inFlight.text || "", "streaming");
    bubble.mine = false;
    view.runs.set(inFlight.runId, bubble);
    view.activeRuns.set(key, inFlight.runId);
  } else if (view.activeRuns.has(key)) {
    view.activeRuns.delete(key); // it ended while we were away
  }
  view.historyReady = true;
  updateComposer();
  renderSessions();
  // Ready to type, unless the person is busy with something else on the page.
  if (!document.activeElement || document.activeElement === document.body) $("input").focus();
}

let reloadTimer = null;
function reloadHistorySoon() {
  if (view.activeRuns.has(view.currentKey)) {
    view.reloadWhenIdle = true; // redrawing now would drop the reply being streamed
    return;
  }
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => { if (view.gw.connected) loadHistory(); }, 150);
}

function onChatEvent(p) {
  if (!p || !p.sessionKey || !p.runId) return;
  const ended = ["final", "aborted", "error"].includes(p.state);
  const wasActive = view.activeRuns.has(p.sessionKey);
  if (ended) {
    if (view.activeRuns.get(p.sessionKey) === p.runId) view.activeRuns.delete(p.sessionKey);
  } else {
    view.activeRuns.set(p.sessionKey, p.runId);
  }
  updateStop();
  if (wasActive !== view.activeRuns.has(p.sessionKey)) renderSessions(); // its busy mark
  if (p.sessionKey !== view.currentKey) {
    if (ended) refreshSessionsSoon();
    return;
  }
  let bubble = view.runs.get(p.runId);
  if (!bubble) {
    if (ended) {
      // Someone else's turn (another tab, the CLI): history has their message and this reply.
      reloadHistorySoon();
      return;
    }
    bubble = new Bubble("assistant", "", "streaming");
    bubble.mine = false;
    view.runs.set(p.runId, bubble);
  }
  switch (p.state) {
    case "status":
      bubble.setState("pending", "Getting ready…");
      break;
    case "delta":
      // message carries the text so far: a dropped delta (slow socket) costs nothing.
      bubble.setText(textOf(p.message) || bubble.text + (p.deltaText || ""));
      bubble.setState("streaming");
      break;
    case "final":
      bubble.setText(textOf(p.message) || bubble.text);
      bubble.setState("done");
      break;
    case "aborted":
      if (p.message) bubble.setText(textOf(p.message));
      bubble.setState("stopped", "Stopped.");
      break;
    case "error":
      if (p.message) bubble.setText(textOf(p.message));
      bubble.setState("error", explainRunError(p));
      break;
  }
  if (ended) {
    view.runs.delete(p.runId);
    if (!bubble.mine || view.reloadWhenIdle) reloadHistorySoon();
    refreshSessionsSoon();
  }
}

// -- sending and stopping ------------------------------------------------------------------

async function send(text, key = view.currentKey, idempotencyKey = crypto.randomUUID(),
                    userBubble = null) {
  if (!userBubble) labelNewChat(key, text);
  const user = userBubble || new Bubble("user", text, "sending");
  user.setState("sending");
  // The reply's bubble waits under the message; runId = idempotencyKey on the gateway, so
  // deltas that arrive before the chat.send answer find it.
  const reply = new Bubble("assistant", "", "pending");
  reply.mine = true;
  view.runs.set(idempotencyKey, reply);
  view.activeRuns.set(key, idempotencyKey);
  updateStop();
  try {
    const res = await view.gw.request("chat.send",
                                      { sessionKey: key, message: text, idempotencyKey });
    user.setState("sent");
    if (res.runId && res.runId !== idempotencyKey) {
      view.runs.delete(idempotencyKey);
      if (view.runs.has(res.runId)) reply.remove();
      else view.runs.set(res.runId, reply);
      if (view.activeRuns.get(key) === idempotencyKey) view.activeRuns.set(key, res.runId);
    }
  } catch (err) {
    reply.remove();
    view.runs.delete(idempotencyKey);
    if (view.activeRuns.get(key) === idempotencyKey) view.activeRuns.delete(key);
    updateStop();
    user.setState("failed", explainRequestError(err));
    // Sending again reuses the key: if the first attempt did reach the gateway, it answers
    // with that run instead of starting a second one.
    const again = document.createElement("button");
    again.type = "button";
    again.className = "again";
    again.textContent = "Send again";
    again.addEventListener("click", () => {
      again.remove();
      if (key === view.currentKey) send(text, key, idempotencyKey, user);
    });
    user.note.append(" ", again);
  }
  refreshSessionsSoon();
}

async function stop() {
  const key = view.currentKey;
  const runId = view.activeRuns.get(key);
  if (!runId) return;
  $("stop").disabled = true;
  try {
    const res = await view.gw.request("chat.abort", { sessionKey: key, runId });
    // Nothing to abort: the run ended while we were not looking (its final went by).
    if (!res.aborted && view.activeRuns.get(key) === runId) view.activeRuns.delete(key);
    updateStop();
  } catch (err) {
    showProblem(`Could not stop the reply. ${explainRequestError(err)}`);
    updateStop();
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("input");
  const text = input.value;
  if (!text.trim() || input.disabled) return;
  input.value = "";
  if (!$("notice").hidden && $("notice").dataset.state === "problem") $("notice").hidden = true;
  send(text);
});

$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  } else if (ev.key === "Escape" && !$("stop").disabled) {
    stop();
  }
});

$("stop").addEventListener("click", stop);
$("new-chat").addEventListener("click", newChat);
$("retry-button").addEventListener("click", () => view.gw && view.gw.retryNow());
$("credential-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("credential-input").value.trim();
  if (!value) return;
  setSecret($("credential-form").dataset.kind, value);
  $("credential-input").value = "";
  view.gw.retryNow();
});

// -- start ---------------------------------------------------------------------------------

function onHello(hello) {
  const defaults = (hello.snapshot && hello.snapshot.sessionDefaults) || {};
  view.mainKey = defaults.mainSessionKey || view.mainKey;
  if (!view.currentKey) {
    view.currentKey = safeSession((s) => s.getItem(SESSION_PREFIX + gatewayUrl)) || view.mainKey;
  }
  const note = $("model-note");
  note.hidden = defaults.modelConfigured !== false;
  note.textContent = "No model is configured on this gateway, so its built-in offline model " +
    "answers (it does not use a language model).";
  // Sessions and history again after every (re)connect: events missed while away are in them.
  refreshSessions();
  loadHistory();
  view.gw.request("sessions.subscribe", {}).catch(() => {}); // live list; optional
}

function onGatewayEvent({ event, payload }) {
  if (event === "chat") onChatEvent(payload);
  else if (event === "sessions.changed") refreshSessionsSoon();
}

async function main() {
  let identity;
  try {
    identity = await loadOrCreateIdentity();
  } catch (err) {
    const text = err instanceof IdentityUnavailable ? err.message
      : `This browser could not set up its identity: ${err.message}`;
    showStatus({ state: "blocked", text });
    $("retry-button").hidden = true;
    return;
  }
  $("device-line").textContent = `This browser is device ${identity.deviceId.slice(0, 12)}… ` +
    `· gateway ${gatewayUrl}` +
    (identity.persisted ? "" : " · its key is not saved (private window?), so it pairs again next time");
  $("device-line").dataset.deviceId = identity.deviceId;
  if (!/^wss?:\/\//i.test(gatewayUrl)) {
    showStatus({ state: "blocked", text: `"${gatewayUrl}" is not a gateway address (ws:// or wss://).` });
    return;
  }
  const gw = new Gateway({ url: gatewayUrl, identity, credential });
  view.gw = gw;
  gw.addEventListener("status", (ev) => showStatus(ev.detail));
  gw.addEventListener("hello", (ev) => onHello(ev.detail));
  gw.addEventListener("gateway-event", (ev) => onGatewayEvent(ev.detail));
  gw.addEventListener("disconnected", () => {
    // Events will have been missed: the history is re-read on reconnect, and a run still
    // going is known again by its next delta.
    view.historyReady = false;
    view.activeRuns.clear();
    updateComposer();
    renderSessions();
  });
  // Back online or back in view: do not wait for the backoff timer.
  window.addEventListener("online", () => { if (!gw.connected) gw.retryNow(); });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && gw.status.state === "retrying") gw.retryNow();
  });
  gw.start();
}

main();
