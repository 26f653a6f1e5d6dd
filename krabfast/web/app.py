"""The routes of the gateway port's HTTP side, in order: the probes (`/healthz`, `/readyz`,
...), krabfast's WebChat page (`/webchat/`), the reference's Control UI; else 404. Every
answer carries the reference's baseline security headers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

from krabfast.web.request import Request, Response

BASELINE_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Permissions-Policy", "camera=(), microphone=(self), geolocation=()"),
)
WEBCHAT_ROOT = Path(__file__).resolve().parent / "webchat"
_NO_STORE = ("Cache-Control", "no-store")
_PROBE_ALLOW = [("Allow", "GET, HEAD"), _NO_STORE]

Route = Callable[[Request], "Response | None"]


@dataclass
class Readiness:
    """What the probes report: `state()` is "starting", "ready" or "draining"."""
    state: Callable[[], str]
    uptime_ms: Callable[[], int]
    version: str
    token_check: Callable[[str], bool]  # a bearer credential of this gateway
    event_loop: Callable[[], dict] | None = None  # loop health details (local callers)


def _bearer(request: Request) -> str:
    auth = request.header("authorization")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def probe_routes(ready: Readiness) -> Route:
    """`/healthz` `/health` (live), `/readyz` `/ready`, `/startupz` `/startup`, with the
    reference's bodies; details only for a local caller or a bearer of the credential."""

    def details_allowed(request: Request) -> bool:
        if request.is_local:
            return True
        token = _bearer(request)
        return bool(token) and ready.token_check(token)

    def route(request: Request) -> Response | None:
        path = request.path
        if path not in ("/healthz", "/health", "/readyz", "/ready", "/startupz", "/startup"):
            return None
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, headers=list(_PROBE_ALLOW))
        if path in ("/healthz", "/health"):
            return Response.json(200, b'{"ok":true,"status":"live"}', headers=[_NO_STORE])
        state = ready.state()
        detailed = details_allowed(request)
        if path in ("/readyz", "/ready"):
            failing = ([] if state == "ready" else
                       ["gateway-draining"] if state == "draining" else ["startup-sidecars"])
            body: dict = {"ready": not failing}
            if detailed:
                body["failing"] = failing
                body["uptimeMs"] = ready.uptime_ms()
                if ready.event_loop is not None:
                    body["eventLoop"] = ready.event_loop()
            return Response.json(200 if not failing else 503, orjson.dumps(body),
                                 headers=[_NO_STORE])
        status = {"ready": "started"}.get(state, state)
        body = {"ok": state == "ready", "status": status}
        if detailed:
            if state == "starting":
                body["pendingReason"] = "startup-sidecars"
            body["version"] = ready.version
            body["uptimeMs"] = ready.uptime_ms()
        return Response.json(200 if state == "ready" else 503, orjson.dumps(body),
                             headers=[_NO_STORE])

    return route


class WebApp:
    """`app(request) -> Response`: the first route that answers, else 404."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def __call__(self, request: Request) -> Response:
        for route in self.routes:
            response = route(request)
            if response is not None:
                break
        else:
            response = Response.text(404)
        have = {name.lower() for name, _ in response.headers}
        response.headers.extend(h for h in BASELINE_HEADERS if h[0].lower() not in have)
        return response
