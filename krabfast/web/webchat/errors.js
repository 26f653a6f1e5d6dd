// Gateway failures in words a person can act on. The raw code stays available (shown in
// small print) for bug reports; the sentence says what happened and what to do.

export class GatewayError extends Error {
  /** `shape` is the wire ErrorShape {code, message, details?, retryable?, retryAfterMs?}. */
  constructor(shape) {
    super((shape && shape.message) || "request failed");
    this.code = (shape && shape.code) || "UNKNOWN";
    this.details = (shape && shape.details) || {};
    this.retryAfterMs = shape && shape.retryAfterMs;
  }

  /** The most specific code: details.code when the gateway gave one. */
  get reason() {
    return this.details.code || this.code;
  }
}

// What the connection does after a failed connect.
export const NEEDS_CREDENTIAL = "needs-credential"; // wait for the person to enter one
export const DROP_DEVICE_TOKEN = "drop-device-token"; // retry at once without it
export const WAIT_FOR_APPROVAL = "pairing"; // retry every few seconds
export const BLOCKED = "blocked"; // retrying cannot help
export const RETRY = "retry"; // back off and retry

/** {action, text, credential?} for a connect refusal. */
export function explainConnectError(err, { usedDeviceToken }) {
  const d = err.details;
  switch (err.reason) {
    case "AUTH_TOKEN_MISSING":
    case "AUTH_REQUIRED":
      return { action: NEEDS_CREDENTIAL, credential: "token",
               text: "This gateway needs its access token. Open WebChat with the link that " +
                     "includes it (…/webchat/#token=…) or paste the token below." };
    case "AUTH_TOKEN_MISMATCH":
      return { action: NEEDS_CREDENTIAL, credential: "token",
               text: "The gateway did not accept this token. Check it and paste it again." };
    case "AUTH_PASSWORD_MISSING":
      return { action: NEEDS_CREDENTIAL, credential: "password",
               text: "This gateway is protected by a password. Enter it below." };
    case "AUTH_PASSWORD_MISMATCH":
      return { action: NEEDS_CREDENTIAL, credential: "password",
               text: "The gateway did not accept this password. Try again." };
    case "AUTH_DEVICE_TOKEN_MISMATCH":
    case "AUTH_SCOPE_MISMATCH":
      if (usedDeviceToken) return { action: DROP_DEVICE_TOKEN, text: "Signing in again…" };
      return { action: NEEDS_CREDENTIAL, credential: "token",
               text: "The gateway no longer accepts this browser's saved sign-in. " +
                     "Paste the gateway token below." };
    case "AUTH_RATE_LIMITED":
      return { action: RETRY, retryAfterMs: err.retryAfterMs,
               text: "Too many failed sign-in attempts from this address. " +
                     "The gateway asks to wait before trying again." };
    case "PAIRING_REQUIRED":
      return { action: WAIT_FOR_APPROVAL, requestId: d.requestId,
               text: "This browser is waiting to be approved. On the gateway host, run " +
                     `\`krabfast devices approve ${d.requestId || "<request id>"}\`. ` +
                     "WebChat connects by itself once it is approved." };
    case "CONTROL_UI_ORIGIN_NOT_ALLOWED":
      return { action: BLOCKED,
               text: `The gateway refused connections from this page's address (${location.origin}). ` +
                     "Open WebChat from the gateway itself, at /webchat/ on the gateway's own " +
                     "address and port." };
    case "PROTOCOL_MISMATCH":
      return { action: BLOCKED,
               text: "This gateway speaks a different protocol version " +
                     `(it expects ${d.expectedProtocol ?? "another"}). Update the gateway or ` +
                     "open the WebChat page it serves." };
    case "DEVICE_AUTH_SIGNATURE_EXPIRED":
      return { action: RETRY,
               text: "The gateway rejected this browser's signature as out of date. " +
                     "Check that the clocks of this computer and the gateway host are right." };
    case "DEVICE_AUTH_DEVICE_ID_MISMATCH":
    case "DEVICE_AUTH_NONCE_REQUIRED":
    case "DEVICE_AUTH_NONCE_MISMATCH":
    case "DEVICE_AUTH_SIGNATURE_INVALID":
    case "DEVICE_AUTH_PUBLIC_KEY_INVALID":
    case "DEVICE_AUTH_INVALID":
      return { action: RETRY,
               text: `The gateway could not verify this browser's identity (${err.message}).` };
    default:
      return { action: RETRY, text: `The gateway refused the connection: ${err.message}.` };
  }
}

/** Why a socket closed, for the status line ("" when nothing useful can be said). */
export function explainClose({ code, reason, everOpened, shutdown, gatewayUrl }) {
  if (shutdown) {
    return shutdown.restartExpectedMs != null
      ? "The gateway is restarting."
      : `The gateway stopped${shutdown.reason ? `: ${shutdown.reason}` : ""}.`;
  }
  if (!everOpened) return `Can't reach the gateway at ${gatewayUrl}. Is it running?`;
  switch (code) {
    case 1012: return "The gateway is restarting.";
    case 1001: return "The gateway went away.";
    case 1009: return "A message was too large for the gateway.";
    case 4001: return "This browser was removed from the gateway's devices.";
    case 4000: return "The gateway stopped answering.";
    default:
      return reason ? `The gateway closed the connection: ${reason}.` :
        "Lost the connection to the gateway.";
  }
}

/** A failed method call, e.g. chat.send. */
export function explainRequestError(err) {
  switch (err.reason) {
    case "DISCONNECTED":
      return "Not connected to the gateway, so this was not sent. It reconnects by itself; " +
             "try again in a moment.";
    case "TIMEOUT":
      return "The gateway did not answer in time.";
    case "MISSING_SCOPE":
      return "This browser is not allowed to do that " +
             `(it lacks the permission ${err.details.missingScope || "needed"}).`;
    case "UNAVAILABLE":
      return `The gateway is busy right now: ${err.message}. Try again shortly.`;
    default:
      return `The gateway refused: ${err.message}.`;
  }
}

/** A run that ended with a `chat` error event. */
export function explainRunError(payload) {
  const text = payload.errorMessage || "unknown error";
  switch (payload.errorKind) {
    case "rate_limit":
      return `The model provider is limiting requests (${text}). Try again shortly.`;
    case "timeout":
      return `The model did not answer in time (${text}).`;
    case "context_length":
      return `The conversation is too long for the model (${text}). Start a new chat.`;
    default:
      return `The model could not answer: ${text}`;
  }
}
