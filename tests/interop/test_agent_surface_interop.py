"""The agent surface a client sees, on krabfast and on the reference (one fake provider):
`agents.list` and `agent.identity.get` for the one default agent, and the `agent` events of a
chat turn (the lifecycle start and end, the assistant text) with the fields krabfast sends.

The reference also sends `run_status` events, lifecycle `model` and `finishing` phases, a
`usage` stream and more end fields (its agent runtime's; docs/reference/differences.md);
those are left out of the comparison.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.node_helpers import admin_ws

from .helpers import (BOTH_GATEWAYS, assert_same_answers, gateway_fixtures, one_model_config,
                      probe_both)

pytestmark = pytest.mark.interop

SHOWN = {"runId", "seq", "stream", "ts", "data", "isHeartbeat", "sessionKey", "agentId",
         "sessionId"}
DATA = {"start": {"phase", "startedAt"},
        "end": {"phase", "stopReason", "aborted", "startedAt", "endedAt"},
        None: {"text", "delta"}}


agents_fake, ref_agents_gateway, krabfast_agents_gateway = gateway_fixtures(
    "agents", one_model_config, text="Four word answer here.", chunks=2, delay=0.05)


def _event_shape(event: dict) -> dict:
    data = event["data"]
    phase = data.get("phase") if event["stream"] == "lifecycle" else None
    return {"stream": event["stream"], "phase": phase,
            "fields": sorted(set(event) & SHOWN),
            "data": sorted(set(data) & DATA[phase]),
            "isHeartbeat": event.get("isHeartbeat")}


async def agents_probe(url: str) -> dict:
    ws = await admin_ws(url)
    try:
        listed = (await ws.call("agents.list", {}, timeout=30))["payload"]
        agents = [{k: a.get(k, "-") for k in ("id", "name", "thinkingLevels", "thinkingOptions",
                                               "thinkingDefault", "model")}
                  for a in listed["agents"]]
        out = {"agents.list": {**{k: listed.get(k, "-") for k in (
                   "defaultId", "ownership", "selectionRequired", "mainKey", "scope")},
                   "agents": agents},
               "agent.identity.get": (await ws.call("agent.identity.get", {}, timeout=30))["payload"]}
        key = "agent:main:agents-" + uuid.uuid4().hex[:6]
        sent = await ws.call("chat.send", {"sessionKey": key, "message": "hello there",
                                           "idempotencyKey": uuid.uuid4().hex}, timeout=30)
        run_id = sent["payload"]["runId"]
        await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id
                       and f["payload"]["state"] in ("final", "error", "aborted"))
        await asyncio.sleep(1.0)  # the reference's end event follows its final
        events = [f["payload"] for f in ws.events("agent") if f["payload"].get("runId") == run_id]
        out["agent events"] = [_event_shape(e) for e in events
                               if e["stream"] == "assistant" or (e["stream"] == "lifecycle"
                               and e["data"].get("phase") in ("start", "end"))]
        return out
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_agent_surface_matches_reference(target, request):
    got, reference = probe_both(request, "agents", target, agents_probe)
    if reference is None:
        assert got["agent.identity.get"] == {"agentId": "main", "name": "Assistant",
                                             "nameSource": "default", "avatar": "A"}, got
        assert got["agents.list"]["ownership"] == "sole", got
        assert {e["isHeartbeat"] for e in got["agent events"]} == {False}, got
    else:
        assert_same_answers(reference, got)
