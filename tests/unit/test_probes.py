"""The probe routes' answers in every readiness state (the reference's shapes), and the
gateway server's readiness across start and stop."""

from __future__ import annotations

import asyncio
import json

from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.server import GatewayServer
from krabfast.web.app import Readiness, WebApp, probe_routes
from tests.unit.webreq import req


def _app(state: str) -> WebApp:
    ready = Readiness(state=lambda: state, uptime_ms=lambda: 1234, version="9.9.9",
                      token_check=lambda t: t == "T", event_loop=lambda: {"degraded": False})
    return WebApp([probe_routes(ready)])


def _local(path, **headers):
    r = req(path, **headers)
    r.is_local = True
    return r


def test_readyz_follows_the_state():
    ok = _app("ready")(_local("/readyz"))
    assert ok.status == 200 and json.loads(ok.body) == {
        "ready": True, "failing": [], "uptimeMs": 1234, "eventLoop": {"degraded": False}}
    starting = _app("starting")(_local("/readyz"))
    assert starting.status == 503
    assert json.loads(starting.body)["failing"] == ["startup-sidecars"]
    draining = _app("draining")(_local("/ready"))
    assert draining.status == 503
    assert json.loads(draining.body)["failing"] == ["gateway-draining"]
    # Liveness does not depend on readiness.
    assert _app("draining")(_local("/healthz")).status == 200


def test_startupz_follows_the_state():
    body = json.loads(_app("starting")(_local("/startupz")).body)
    assert body == {"ok": False, "status": "starting", "pendingReason": "startup-sidecars",
                    "version": "9.9.9", "uptimeMs": 1234}
    assert json.loads(_app("ready")(req("/startup")).body) == {"ok": True, "status": "started"}
    res = _app("draining")(req("/startupz"))
    assert res.status == 503 and json.loads(res.body) == {"ok": False, "status": "draining"}


def test_details_only_for_local_callers_or_a_bearer_of_the_credential():
    assert json.loads(_app("ready")(req("/readyz")).body) == {"ready": True}
    assert json.loads(_app("ready")(req("/readyz", authorization="Bearer nope")).body) == {
        "ready": True}
    assert "uptimeMs" in json.loads(_app("ready")(req("/readyz", authorization="Bearer T")).body)


def test_every_answer_has_the_baseline_headers_once():
    for res in (_app("ready")(req("/healthz")), _app("ready")(req("/nothing"))):
        names = [n.lower() for n, _ in res.headers]
        for name in ("x-content-type-options", "referrer-policy", "permissions-policy"):
            assert names.count(name) == 1


def test_the_server_is_starting_then_ready_then_draining():
    async def body():
        srv = GatewayServer(GatewayConfig(port=0, bind="127.0.0.1", state_dir=":memory:"))
        assert srv.readiness() == "starting"
        await srv.start()
        assert srv.readiness() == "ready"
        stopping = asyncio.ensure_future(srv.stop())
        await asyncio.sleep(0)
        assert srv.readiness() == "draining"
        await stopping
        assert srv.readiness() == "draining"
    asyncio.run(asyncio.wait_for(body(), 20))
