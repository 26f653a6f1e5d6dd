"""Shared-secret connect authentication (token / password) with rate limiting.

Returns the failure as a GatewayError carrying the reference's `details.code`, so the
connection state machine only has to send it and close.
"""

from __future__ import annotations

import hmac

from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.ratelimit import AuthRateLimiter
from krabfast.protocol.errors import DetailCode, ErrorCode, GatewayError
from krabfast.protocol.handshake import ConnectAuth

CLOSE_POLICY = 1008


def _auth_error(message: str, code: DetailCode, **kw) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, details={"code": code.value},
                        close_code=CLOSE_POLICY, **kw)


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check_shared_secret(cfg: GatewayConfig, limiter: AuthRateLimiter, auth: ConnectAuth | None,
                        peer_ip: str, is_local: bool) -> str:
    """Verify the connect credential for the configured mode.

    Returns the auth method used ("none", "token", "password"); raises GatewayError.
    """
    mode = cfg.auth_mode
    if mode == "none":
        return "none"
    key = (peer_ip, mode)
    wait = limiter.retry_after_ms(key, is_local)
    if wait:
        raise _rate_limited(wait)
    given = None
    if auth is not None:
        given = auth.token if mode == "token" else auth.password
        if not isinstance(given, str) or not given:
            given = None
    if given is None:
        if mode == "token":
            raise _auth_error("unauthorized: gateway token missing (set gateway token in client)",
                              DetailCode.AUTH_TOKEN_MISSING)
        raise _auth_error("unauthorized: gateway password missing", DetailCode.AUTH_PASSWORD_MISSING)
    expected = cfg.token if mode == "token" else cfg.password
    if _equal(given, expected or ""):
        limiter.record_success(key)
        return mode
    locked = limiter.record_failure(key, is_local)
    if locked:
        raise _rate_limited(locked)
    if mode == "token":
        raise _auth_error("unauthorized: gateway token mismatch", DetailCode.AUTH_TOKEN_MISMATCH)
    raise _auth_error("unauthorized: gateway password mismatch", DetailCode.AUTH_PASSWORD_MISMATCH)


def _rate_limited(retry_after_ms: int) -> GatewayError:
    return _auth_error("unauthorized: too many failed authentication attempts (retry later)",
                       DetailCode.AUTH_RATE_LIMITED, retryable=True, retry_after_ms=retry_after_ms)
