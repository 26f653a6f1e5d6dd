"""The gateway's HTTP side, wired: the route list (probes, WebChat, the Control UI), who a
request is from (trusted proxies), and the open HTTP connections (closed at shutdown).
The protocol and routes live in krabfast/web/ and know nothing of the gateway."""

from __future__ import annotations

import hmac
import logging
import weakref

import msgspec

from krabfast import __version__
from krabfast.gateway import proxies
from krabfast.methods.agents import DEFAULT_IDENTITY
from krabfast.web.app import WEBCHAT_ROOT, Readiness, WebApp, probe_routes
from krabfast.web.control_ui import control_ui_routes
from krabfast.web.http import HttpProtocol
from krabfast.web.request import Response
from krabfast.web.static import static_routes

log = logging.getLogger("krabfast.gateway")

_LIVENESS = ("/healthz", "/health")
# The page's own meta CSP, as a header too: only a header can forbid framing.
WEBCHAT_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "
     "img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
     "object-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
]


class WebSide:
    def __init__(self, server) -> None:
        self.server = server
        config = server.config
        self.trusted = proxies.parse_trusted(config.trusted_proxies)
        self.real_ip_fallback = config.allow_real_ip_fallback
        self.tls = False
        self.connections: weakref.WeakSet = weakref.WeakSet()
        self._warned_unattributable = False
        ready = Readiness(state=server.readiness, uptime_ms=self._uptime_ms,
                          version=__version__, token_check=self.token_check,
                          event_loop=self._event_loop)
        self.app = WebApp(self._routes(ready))

    def _routes(self, ready: Readiness) -> list:
        routes = [probe_routes(ready)]
        if WEBCHAT_ROOT.is_dir():
            routes.extend(static_routes(WEBCHAT_ROOT, "/webchat/", headers=WEBCHAT_HEADERS))
        routes.extend(control_ui_routes(self.server.config, token_check=self.token_check,
                                        device_token_check=self.device_token_check,
                                        assistant_name=DEFAULT_IDENTITY["name"]))
        return routes

    # -- what the routes ask ---------------------------------------------------------------------
    def token_check(self, credential: str) -> bool:
        """`credential` is this gateway's token or password (a bearer on HTTP)."""
        config = self.server.config
        ok = False
        for secret in (config.token, config.password):
            if secret:
                ok |= hmac.compare_digest(credential.encode(), secret.encode())
        return ok

    def device_token_check(self, credential: str) -> bool:
        """`credential` is a paired device's live operator token (the Control UI sends its
        device token as a bearer once it has one)."""
        held = self.server.hub.pairing.store.token_holder(credential)
        return held is not None and held.role == "operator"

    def _uptime_ms(self) -> int:
        hub = self.server.hub
        return int((hub.monotonic() - hub.started) * 1000)

    def _event_loop(self) -> dict:
        snapshot = self.server.hub.health_snapshot()
        loop = getattr(snapshot, "event_loop", None)
        if loop is None:
            return {"degraded": False}
        return msgspec.to_builtins(loop)

    # -- the protocol ------------------------------------------------------------------------------
    def attribute(self, peer_ip: str, headers: dict, path: str):
        got = proxies.attribute(peer_ip, headers, self.trusted, self.real_ip_fallback)
        if got is not None:
            return got
        if path in _LIVENESS:
            return peer_ip, False  # liveness answers anyone (as the reference)
        self.warn_unattributable(peer_ip)
        return Response.json(403, proxies.REFUSAL_BODY, headers=[("Cache-Control", "no-store")])

    def warn_unattributable(self, peer_ip: str) -> None:
        if not self._warned_unattributable:
            self._warned_unattributable = True
            log.warning("refusing forwarded requests from %s: it is not in gateway.trustedProxies "
                        "(set it to the proxy's address to accept them)", peer_ip)

    def protocol(self) -> HttpProtocol:
        """A new HTTP connection's protocol (the pre-connect gate calls this)."""
        proto = HttpProtocol(self.app, self.attribute, tls=self.tls,
                             header_timeout=self.server.config.http_header_timeout_ms / 1000)
        self.connections.add(proto)
        return proto

    def close_all(self) -> None:
        for proto in list(self.connections):
            proto.close()
