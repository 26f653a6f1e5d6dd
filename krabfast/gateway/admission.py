"""The admission policies a connection's handshake applies, injected into the Sans-I/O
`Connection` through the hub (`hub.admission`): shared-secret auth (with its rate limit),
device-signature proof and the browser-origin rule. The state machine decides when to
ask; these decide the answer."""

from __future__ import annotations

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

    @staticmethod
    def origin_allowed(browser: tuple[str, str] | None, is_local: bool) -> bool:
        """Browser clients must come from the gateway's own origin (same host as the one
        they connected to), or from a loopback page when they are local themselves."""
        if browser is None:
            return False
        origin, host = browser
        origin_host = urlsplit(origin).hostname
        if not origin_host:
            return False
        if origin_host == (urlsplit(f"//{host}").hostname or ""):
            return True
        return is_local and (origin_host == "localhost" or is_loopback(origin_host))
