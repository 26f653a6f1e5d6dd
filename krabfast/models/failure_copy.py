"""What a failed model call tells the user, in the reference's words (its failover
classification and user copy, read from `openclaw@2026.9.6` and probed live: see
docs/reference/conversation-facts.md).

A ProviderError's kind and HTTP status give the reference's failure reason; from it come the
`chat` error event's message, `errorKind` and `errorDetail`, and the text of the failed turn
kept in the transcript. Transport failures (refused, DNS, interrupted) and other refusals
keep the backend's own message. Pure functions.
"""

from __future__ import annotations

TEMPORARY = " This is usually temporary — try again shortly."
RATE_LIMIT_TEXT = "⚠️ API rate limit reached. Please try again later."
AUTH_401_TEXT = ("Authentication failed (provider returned HTTP 401). Your provider token may "
                 "have expired — try the request again in a moment. If the failure persists, "
                 "re-authenticate this provider.")
TIMEOUT_TEXT = "LLM request timed out."
_REASON_TEXT = {"auth": "authentication failed", "rate_limit": "rate limited",
                "server_error": "provider internal error", "timeout": "request timed out"}
# The reason -> (errorDetail.failoverReason, errorDetail.providerRuntimeFailureKind), as seen.
_DETAIL = {"auth": ("auth", "auth_invalid_token"), "rate_limit": ("rate_limit", "rate_limit"),
           "timeout": ("timeout", "timeout"), "server_error": ("server_error", None),
           "unclassified": (None, "unclassified")}
_ERROR_KINDS = ("rate_limit", "timeout")  # the reasons the event names in `errorKind`


def failure_reason(kind: str, status: int | None) -> str | None:
    """The reference's reason for a ProviderError kind and status; None for a failure it
    words by its transport (or the request's own refusal)."""
    if kind in ("auth", "rate_limit", "timeout"):
        return kind
    if kind == "provider" and status is not None and status >= 500:
        return "server_error"
    if kind == "bad_response":
        return "unclassified"
    return None


def request_failure_copy(reason: str | None, status: int | None,
                         target: str | None = None) -> str | None:
    """The reference's "⚠️ <target> request failed (<reason>, HTTP <status>)." sentence
    (`target`: "provider/model", or None for the transcript's wording)."""
    text = _REASON_TEXT.get(reason or "")
    http = f"HTTP {status}" if status is not None and 100 <= status <= 599 else None
    if not text and not http:
        return f"⚠️ Agent run failed (model: {target})." if target else None
    details = ", ".join(d for d in (text, http) if d)
    summary = f"⚠️ {target + ' request failed' if target else 'LLM request failed'} ({details})."
    if reason in ("server_error", "timeout", "rate_limit"):
        return summary + TEMPORARY
    if reason == "auth":
        return summary + " Re-authenticate the provider and try again."
    return summary


def live_message(message: str, kind: str, status: int | None, target: str | None) -> str:
    """The `chat` error event's `errorMessage` (and the run's error) for a failed call."""
    reason = failure_reason(kind, status)
    if reason == "rate_limit":
        return RATE_LIMIT_TEXT
    if reason == "auth" and status == 401:
        return AUTH_401_TEXT
    if reason == "timeout" and status is None:
        return TIMEOUT_TEXT
    if reason is not None and target:
        return request_failure_copy(reason, status, target) or message
    return message


def error_fields(kind: str, status: int | None, provider: str | None,
                 model: str | None) -> dict:
    """The event's `errorKind` (only the kinds the reference names) and `errorDetail`."""
    reason = failure_reason(kind, status)
    out: dict = {}
    if reason in _ERROR_KINDS:
        out["errorKind"] = reason
    if provider and model and reason is not None:
        failover, runtime = _DETAIL[reason]
        detail: dict = {"provider": provider, "model": model}
        if failover:
            detail["failoverReason"] = failover
        if runtime:
            detail["providerRuntimeFailureKind"] = runtime
        out["errorDetail"] = detail
    return out


def transcript_text(kind: str, status: int | None, partial: str) -> str | None:
    """The failed turn as the transcript keeps it: the reference's note, then what the model
    had said (either may be missing); None when there is neither."""
    note = request_failure_copy(failure_reason(kind, status), status)
    if note and partial:
        return f"{note}\n\n{partial}"
    return note or partial or None
