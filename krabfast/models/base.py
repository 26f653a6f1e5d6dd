"""Model backend interface: request, stream events, errors and the `Backend` protocol.

A backend turns a `ModelRequest` into an async stream of `TextDelta` / `Usage` / `Finish`
events and reports failures as `ProviderError` (kinds follow the reference's failover
buckets; messages follow its user-facing wording, e.g. "LLM request unauthorized.").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Protocol, Union, runtime_checkable

Role = Literal["system", "user", "assistant"]
ROLES = ("system", "user", "assistant")

ErrorKind = Literal["connection", "auth", "rate_limit", "timeout", "bad_response", "provider"]
ERROR_KINDS = ("connection", "auth", "rate_limit", "timeout", "bad_response", "provider")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(slots=True)
class ModelRequest:
    """`model` is the provider's own model id (no "provider/" prefix)."""

    model: str
    messages: list[ChatMessage] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    # The thinking level of a model that reasons ("off", "minimal", "low", "medium",
    # "high"); None for one that does not (configured `reasoning` not true).
    thinking: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    """`stop_reason`: "stop", "length", "tool_calls", "content_filter", "error", or the
    provider's own value when it has no equivalent."""

    stop_reason: str


StreamEvent = Union[TextDelta, Usage, Finish]


class ProviderError(Exception):
    """A failed model call. `kind` is one of ERROR_KINDS, `status` the HTTP status or None,
    `provider` the provider id when known, `detail` the provider's own text (if any)."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = "provider",
        status: int | None = None,
        provider: str | None = None,
        detail: str | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status
        self.provider = provider
        self.detail = detail

    def __repr__(self) -> str:
        return f"ProviderError({self.message!r}, kind={self.kind!r}, status={self.status!r})"


# Reference wording (embedded agent runner / user-facing error formatter).
MSG_AUTH = "LLM request unauthorized."
MSG_RATE_LIMIT = "LLM request rate limited."
MSG_TIMEOUT = "LLM request timed out."
MSG_REFUSED = "LLM request failed: connection refused by the provider endpoint."
MSG_DNS = "LLM request failed: DNS lookup for the provider endpoint failed."
MSG_INTERRUPTED = "LLM request failed: network connection was interrupted."
MSG_NETWORK = "LLM request failed: network connection error."
MSG_MALFORMED = "LLM streaming response contained a malformed fragment. Please try again."
MSG_INVALID_STREAM = (
    "LLM request failed: provider returned an invalid streaming response. Please try again."
)
MSG_INTERNAL = "LLM request failed: provider returned an internal error."
MSG_FAILED = "LLM request failed."


def _with_detail(message: str, detail: str | None, status: int | None) -> str:
    parts = []
    if status is not None:
        parts.append(f"HTTP {status}")
    if detail:
        parts.append(detail)
    return f"{message} ({': '.join(parts)})" if parts else message


def error_for_status(status: int, detail: str | None = None, provider: str | None = None) -> ProviderError:
    """The ProviderError for an HTTP error status (401/403 auth, 429 rate limit, 408/504
    timeout, 5xx internal error, other 4xx "LLM request rejected: ...")."""
    detail = (detail or "").strip()[:500] or None
    if status in (401, 403):
        kind, message = "auth", MSG_AUTH
    elif status == 429:
        kind, message = "rate_limit", MSG_RATE_LIMIT
    elif status in (408, 504):
        kind, message = "timeout", MSG_TIMEOUT
    elif status >= 500:
        kind, message = "provider", MSG_INTERNAL
    else:
        kind = "provider"
        message = f"LLM request rejected: {detail}" if detail else MSG_FAILED
        return ProviderError(
            _with_detail(message, None, status), kind=kind, status=status, provider=provider, detail=detail
        )
    return ProviderError(
        _with_detail(message, detail, status), kind=kind, status=status, provider=provider, detail=detail
    )


def malformed(detail: str, provider: str | None = None) -> ProviderError:
    """A stream fragment that does not parse or has the wrong shape."""
    return ProviderError(
        _with_detail(MSG_MALFORMED, detail, None), kind="bad_response", provider=provider, detail=detail
    )


def invalid_stream(detail: str, provider: str | None = None) -> ProviderError:
    """A stream that ended early or is not a stream at all."""
    return ProviderError(
        _with_detail(MSG_INVALID_STREAM, detail, None),
        kind="bad_response",
        provider=provider,
        detail=detail,
    )


@runtime_checkable
class Backend(Protocol):
    """One configured provider. `stream()` yields events and ends with exactly one `Finish`,
    or raises ProviderError. Cancelling the consuming task closes the HTTP stream at once;
    a consumer that stops early should use `contextlib.aclosing(backend.stream(req))`."""

    api: str

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
