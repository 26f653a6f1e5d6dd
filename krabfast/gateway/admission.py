"""The admission policies a connection's handshake applies, injected into the Sans-I/O
`Connection` through the hub (`hub.admission`): shared-secret auth (with its rate limit),
device-signature proof and the browser-origin rule. The state machine decides when to
ask; these decide the answer."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from krabfast.gateway.auth import check_shared_secret
from krabfast.gateway.config import GatewayConfig, is_loopback
from krabfast.gateway.device_auth import verify_device
from krabfast.gateway.ratelimit import AuthRateLimiter


class Admission:
    __slots__ = ("config", "rate_limiter")

    def __init__(self, config: GatewayConfig, rate_limiter: AuthRateLimiter) -> None:
        self.config = config
        self.rate_limiter = rate_limiter

    def shared_secret(self, auth, peer_ip: str, is_local: bool, client_id: str) -> str:
        """The auth method ("token", "password", "none") or raises GatewayError."""
        return check_shared_secret(self.config, self.rate_limiter, auth, peer_ip, is_local,
                                   client_id)

    @staticmethod
    def verify_device(params, device, *, role: str, scopes: list[str], token: str, nonce: str,
                      now_ms: int) -> None:
        verify_device(params, device, role=role, scopes=scopes, token=token, nonce=nonce,
                      now_ms=now_ms)

    def origin_refusal(self, browser: tuple[str, str] | None, is_local: bool) -> str | None:
        """None when the browser origin is allowed (`origin_allowed`), else the reference's
        reason: "origin missing or invalid" (none, `null`, unparsable) or "origin not
        allowed"."""
        if self.origin_allowed(browser, is_local):
            return None
        try:
            valid = browser is not None and bool(urlsplit(browser[0]).hostname)
        except ValueError:
            valid = False
        return "origin not allowed" if valid else "origin missing or invalid"

    def origin_allowed(self, browser: tuple[str, str] | None, is_local: bool) -> bool:
        """The reference's browser-origin rule (docs/reference/web-facts.md section 7): an
        origin listed in gateway.controlUi.allowedOrigins (or "*"); else the gateway's own
        host (the one connected to) when that is a private or loopback address, `*.local` or
        `*.ts.net` (`localhost` only for a local client); else, for a local client, a page on
        any loopback host and port."""
        if browser is None:
            return False
        origin, host = browser
        try:
            origin_host = urlsplit(origin).hostname
            own_host = urlsplit(f"//{host}").hostname or ""
        except ValueError:  # an unparsable origin (or Host) is refused like a missing one
            return False
        if not origin_host:
            return False
        allowed = self.config.control_ui_allowed_origins
        if allowed and ("*" in allowed or origin.strip().lower().rstrip("/") in allowed):
            return True
        if origin_host == own_host and (_private_literal(own_host) or own_host.endswith(
                (".local", ".ts.net")) or (is_local and own_host == "localhost")):
            return True
        return is_local and (origin_host == "localhost" or is_loopback(origin_host))


def _private_literal(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_private or addr.is_loopback
