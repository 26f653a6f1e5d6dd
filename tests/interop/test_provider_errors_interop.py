"""A failed model call on krabfast and on the reference (both on one fake OpenAI-compatible
provider): a stream that breaks off with a fragment that is not JSON, and a 401. What the
`chat` error event says, the session row's outcome, the failed turn in the transcript, and
`agent`'s second answer.

Only the two failures the reference gives up on at once are probed: it retries a 429, a 5xx
and a dropped connection for a minute or more (krabfast does not retry; their wording is in
tests/unit/test_failure_copy.py). After a 401 the reference sets the key aside for a minute,
so the 401 goes last and only once.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.node_helpers import admin_ws

from .helpers import (BOTH_GATEWAYS, assert_same_answers, gateway_fixtures, one_model_config,
                      probe_both)

pytestmark = pytest.mark.interop


errors_fake, ref_errors_gateway, krabfast_errors_gateway = gateway_fixtures(
    "errors", one_model_config, text="Four word answer here.", chunks=2, delay=0.05)


def _agent_answer(res: dict, run_id: str) -> dict:
    payload = dict(res.get("payload") or {})
    if payload.get("runId") == run_id:
        payload["runId"] = "<run id>"
    result = payload.pop("result", None)
    if result is not None:  # (the reference's result also has its run's meta)
        payload["result payloads"] = result.get("payloads")
    return {"ok": res["ok"], "error": res.get("error"), "payload": payload}


async def errors_probe(url: str, fake) -> dict:
    ws = await admin_ws(url)
    out: dict = {}

    async def chat_turn(case: str) -> None:
        key = f"agent:main:error-{case}-" + uuid.uuid4().hex[:6]
        sent = await ws.call("chat.send", {"sessionKey": key, "message": "hello there",
                                           "idempotencyKey": uuid.uuid4().hex}, timeout=30)
        assert sent["ok"], sent
        run_id = sent["payload"]["runId"]
        events = []
        while not events or events[-1]["state"] not in ("final", "error", "aborted"):
            frame = await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id)
            events.append(frame["payload"])
        last = events[-1]
        out[f"{case}: chat"] = {
            "states": sorted({e["state"] for e in events} - {"status"}),
            **{k: last.get(k, "-") for k in ("state", "errorMessage", "errorKind", "errorDetail")}}
        await asyncio.sleep(1.0)  # the reference records the outcome after the event
        row = (await ws.call("sessions.describe", {"key": key}, timeout=30))["payload"]["session"]
        out[f"{case}: row"] = {k: row.get(k, "-") for k in ("status", "lastRunError")}
        history = (await ws.call("chat.history", {"sessionKey": key}, timeout=30))["payload"]
        out[f"{case}: transcript"] = [
            {k: m.get(k) for k in ("role", "content", "stopReason", "usage", "api", "provider",
                                   "model")}
            for m in history["messages"]]

    try:
        fake.set_behaviour(mode="malformed")
        await chat_turn("malformed")
        run_id = uuid.uuid4().hex
        req = ws.request("agent", {"sessionKey": "agent:main:error-agent-" + run_id[:6],
                                   "message": "hi", "idempotencyKey": run_id})
        first = await ws.response(req, 30)
        assert first["ok"] and first["payload"]["status"] == "accepted", first
        out["malformed: agent"] = _agent_answer(await ws.response(req, 120), run_id)
        fake.set_behaviour(mode="status", status=401, error_message="Incorrect API key provided")
        await chat_turn("401")
        return out
    finally:
        fake.set_behaviour(mode="ok")
        await ws.close()


@BOTH_GATEWAYS
def test_provider_errors_match_reference(target, request, errors_fake):
    got, reference = probe_both(request, "errors", target, errors_probe, errors_fake)
    if reference is None:
        # What the reference was seen to answer (so a krabfast-only run still checks it).
        assert got["401: chat"]["errorMessage"].startswith(
            "Authentication failed (provider returned HTTP 401)."), got
        assert got["malformed: chat"]["errorMessage"] == "⚠️ Agent run failed (model: fake/m).", got
        assert got["401: transcript"][-1]["stopReason"] == "error", got
    else:
        assert_same_answers(reference, got)
