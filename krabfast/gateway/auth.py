"""Shared-secret connect authentication (token / password) with rate limiting.

Returns the failure as a GatewayError carrying the reference's `details.code`, so the
connection state machine only has to send it and close.
"""

from __future__ import annotations

import hmac

from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.ratelimit import AuthRateLimiter
from krabfast.protocol.errors import CLOSE_POLICY, DetailCode, ErrorCode, GatewayError
from krabfast.protocol.handshake import ConnectAuth


# authReason -> (details.code, recommendedNextStep), as the reference reports them.
_REASONS = {
    "token_missing": (DetailCode.AUTH_TOKEN_MISSING, "update_auth_configuration"),
    "token_mismatch": (DetailCode.AUTH_TOKEN_MISMATCH, "update_auth_credentials"),
    "password_missing": (DetailCode.AUTH_PASSWORD_MISSING, "update_auth_configuration"),
    "password_mismatch": (DetailCode.AUTH_PASSWORD_MISMATCH, "update_auth_credentials"),
    "rate_limited": (DetailCode.AUTH_RATE_LIMITED, "wait_then_retry"),
    "device_token_mismatch": (DetailCode.AUTH_DEVICE_TOKEN_MISMATCH, "update_auth_credentials"),
    "scope_mismatch": (DetailCode.AUTH_SCOPE_MISMATCH, "review_auth_configuration"),
}

_MESSAGES = {
    "rate_limited": "unauthorized: too many failed authentication attempts (retry later)",
    "device_token_mismatch": "unauthorized: device token mismatch (rotate/reissue device token)",
    "scope_mismatch": "unauthorized: device token scope mismatch (re-pair or approve scope upgrade)",
}


def _hint(reason: str, client_id: str, is_local: bool) -> str:
    secret = "password" if reason.startswith("password") else "token"
    if client_id == "cli":
        if is_local:
            return (f"use this gateway's gateway.auth.{secret}" if secret == "password"
                    else "use this gateway's gateway.auth.token or pair the device")
        return f"set gateway.remote.{secret} to match gateway.auth.{secret}"
    if client_id in ("openclaw-control-ui", "webchat-ui", "webchat"):
        return f"open the dashboard URL and paste the {secret} in Control UI settings"
    return f"provide gateway auth {secret}"


def auth_error(reason: str, client_id: str, is_local: bool, retry_after_ms: int | None = None) -> GatewayError:
    code, next_step = _REASONS[reason]
    if reason in _MESSAGES:
        message = _MESSAGES[reason]
    else:
        what = reason.replace("_", " ")
        message = f"unauthorized: gateway {what} ({_hint(reason, client_id, is_local)})"
    details = {"code": code.value, "authReason": reason, "canRetryWithDeviceToken": False,
               "recommendedNextStep": next_step}
    if retry_after_ms is None:
        return GatewayError(ErrorCode.INVALID_REQUEST, message, details=details, close_code=CLOSE_POLICY)
    return GatewayError(ErrorCode.INVALID_REQUEST, message, details=details, close_code=CLOSE_POLICY,
                        retryable=True, retry_after_ms=retry_after_ms)


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check_shared_secret(cfg: GatewayConfig, limiter: AuthRateLimiter, auth: ConnectAuth | None,
                        peer_ip: str, is_local: bool, client_id: str) -> str:
    """Verify the connect credential for the configured mode.

    Returns the auth method used ("none", "token", "password"); raises GatewayError.
    The lockout is checked before the secret is compared, so a locked-out address learns
    nothing about the secret.
    """
    mode = cfg.auth_mode
    if mode == "none":
        return "none"
    key = ("shared-secret", peer_ip)
    wait = limiter.retry_after_ms(key, is_local)
    if wait:
        raise auth_error("rate_limited", client_id, is_local, wait)
    given = None
    if auth is not None:
        given = (auth.token if mode == "token" else auth.password) or None
        if given is None and (auth.token or auth.password):
            given = ""  # the other kind of secret was sent: a mismatch, not a missing one
    if given is None:
        raise auth_error(f"{mode}_missing", client_id, is_local)
    expected = cfg.token if mode == "token" else cfg.password
    if _equal(given, expected or ""):
        limiter.record_success(key)
        return mode
    # This failure may start a lockout; it is still reported as a mismatch, and the
    # next attempt gets AUTH_RATE_LIMITED.
    limiter.record_failure(key, is_local)
    raise auth_error(f"{mode}_mismatch", client_id, is_local)
