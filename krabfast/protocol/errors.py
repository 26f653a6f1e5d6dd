"""Error codes and the exception that carries them.

One enum for the wire `error.code`; structured reasons travel in `details.code` so clients
can branch without parsing prose. Every failure inside the gateway is a `GatewayError`.
"""

from __future__ import annotations

import enum
from typing import Any


# Close codes the gateway sends besides the RFC 6455 ones.
CLOSE_POLICY = 1008          # policy violation: bad handshake, auth failure, slow consumer
CLOSE_DEVICE_REMOVED = 4001  # the device was removed or its token revoked/rotated


class ErrorCode(str, enum.Enum):
    INVALID_REQUEST = "INVALID_REQUEST"
    FORBIDDEN = "FORBIDDEN"
    UNAVAILABLE = "UNAVAILABLE"
    NOT_PAIRED = "NOT_PAIRED"
    APPROVAL_NOT_FOUND = "APPROVAL_NOT_FOUND"
    # Deprecated upstream, kept so clients that switch on them still compile.
    NOT_LINKED = "NOT_LINKED"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"


class DetailCode(str, enum.Enum):
    """Values of `error.details.code` (connect failures and method-level reasons)."""

    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_UNAUTHORIZED = "AUTH_UNAUTHORIZED"
    AUTH_TOKEN_MISSING = "AUTH_TOKEN_MISSING"
    AUTH_TOKEN_MISMATCH = "AUTH_TOKEN_MISMATCH"
    AUTH_TOKEN_NOT_CONFIGURED = "AUTH_TOKEN_NOT_CONFIGURED"
    AUTH_PASSWORD_MISSING = "AUTH_PASSWORD_MISSING"
    AUTH_PASSWORD_MISMATCH = "AUTH_PASSWORD_MISMATCH"
    AUTH_PASSWORD_NOT_CONFIGURED = "AUTH_PASSWORD_NOT_CONFIGURED"
    AUTH_DEVICE_TOKEN_MISMATCH = "AUTH_DEVICE_TOKEN_MISMATCH"
    AUTH_SCOPE_MISMATCH = "AUTH_SCOPE_MISMATCH"
    AUTH_RATE_LIMITED = "AUTH_RATE_LIMITED"
    PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"
    CONTROL_UI_ORIGIN_NOT_ALLOWED = "CONTROL_UI_ORIGIN_NOT_ALLOWED"
    DEVICE_IDENTITY_REQUIRED = "DEVICE_IDENTITY_REQUIRED"
    DEVICE_AUTH_INVALID = "DEVICE_AUTH_INVALID"
    DEVICE_AUTH_DEVICE_ID_MISMATCH = "DEVICE_AUTH_DEVICE_ID_MISMATCH"
    DEVICE_AUTH_SIGNATURE_EXPIRED = "DEVICE_AUTH_SIGNATURE_EXPIRED"
    DEVICE_AUTH_NONCE_REQUIRED = "DEVICE_AUTH_NONCE_REQUIRED"
    DEVICE_AUTH_NONCE_MISMATCH = "DEVICE_AUTH_NONCE_MISMATCH"
    DEVICE_AUTH_SIGNATURE_INVALID = "DEVICE_AUTH_SIGNATURE_INVALID"
    DEVICE_AUTH_PUBLIC_KEY_INVALID = "DEVICE_AUTH_PUBLIC_KEY_INVALID"
    PAIRING_REQUIRED = "PAIRING_REQUIRED"
    MISSING_SCOPE = "MISSING_SCOPE"


class GatewayError(Exception):
    """A failure that becomes a wire `ErrorShape`.

    `close_code` is set when the connection must be closed after the error is sent
    (handshake failures); `None` keeps the socket open.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        close_code: int | None = None,
        close_reason: str | None = None,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.close_code = close_code
        self.close_reason = close_reason  # when the close should say more than the message
        # A failed answer may carry a payload beside its error, as the reference's `agent`
        # does when it refuses a turn ({runId, status: "error", summary}).
        self.payload = payload

    def to_shape(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details is not None:
            shape["details"] = self.details
        if self.retryable is not None:
            shape["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            shape["retryAfterMs"] = self.retry_after_ms
        return shape

    def __repr__(self) -> str:
        return f"GatewayError({self.code.value}, {self.message!r}, details={self.details!r})"


def invalid_request(message: str, **kw: Any) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, **kw)


def missing_scope(method: str, scope: str, required: list[str]) -> GatewayError:
    return GatewayError(
        ErrorCode.FORBIDDEN,
        f"missing scope: {scope}",
        details={"code": DetailCode.MISSING_SCOPE.value, "missingScope": scope, "requiredScopes": required},
    )


def validation_message(what: str, err: Exception, prefix: str) -> str:
    """Turn a msgspec validation error into a message naming the JSON path.

    msgspec reports paths rooted at `$` of the decoded value; we re-root them at the
    frame (`$.params...`) so the client sees where in *its* frame the problem is.
    """
    text = str(err)
    if "- at `$" in text:
        text = text.replace("- at `$", f"- at `{prefix}", 1)
    elif prefix and "`$" not in text:
        text = f"{text} - at `{prefix}`"
    return f"invalid {what}: {text}"
