"""A session's token counters and cost, as its row and its transcript show them, on krabfast
and on the reference (both on one fake OpenAI-compatible provider with a priced model and a
bare one): the row's inputTokens / outputTokens / totalTokens / totalTokensFresh /
estimatedCostUsd after a turn, contextTokens from the session's model, what a label patch,
a model patch and a reset do to them, and the `usage` of the assistant's transcript message.

The reference's prompt carries its system prompt and tools (thousands of tokens), krabfast's
the transcript only, so the counts differ; what is compared is which fields there are and how
they follow from the counts the provider reported (`_shape`).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.node_helpers import admin_ws

from .helpers import BOTH_GATEWAYS, assert_same_answers, gateway_fixtures, probe_both

pytestmark = pytest.mark.interop

PRICE = {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}
CONTEXT = 64000
FIELDS = ("inputTokens", "outputTokens", "totalTokens", "totalTokensFresh", "contextTokens",
          "estimatedCostUsd", "model", "modelProvider")


def _config(fake) -> dict:
    return {"models": {"providers": {"fake": {
        "baseUrl": fake.base_url, "apiKey": "fake-local-key", "api": "openai-completions",
        "models": [{"id": "priced", "name": "Priced", "contextWindow": CONTEXT,
                    "maxTokens": 4096, "cost": PRICE},
                   {"id": "bare", "name": "Bare"}]}}},
        "agents": {"defaults": {"model": {"primary": "fake/priced"}}}}


usage_fake, ref_usage_gateway, krabfast_usage_gateway = gateway_fixtures(
    "usage", _config, text="Four word answer here.", chunks=2, delay=0.05)


def _cost(tokens: int, part: str) -> float:
    return tokens * PRICE[part] / 1e6


def _shape(row: dict) -> dict:
    """The row's usage fields, counts replaced by how they follow from inputTokens."""
    out = {k: row.get(k, "-") for k in FIELDS}
    inp, outp = row.get("inputTokens"), row.get("outputTokens")
    if isinstance(inp, int) and inp > 0:
        out["inputTokens"] = "n > 0"
        if row.get("totalTokens") == inp:
            out["totalTokens"] = "= inputTokens"
        if row.get("estimatedCostUsd") == _cost(inp, "input") + _cost(outp, "output"):
            out["estimatedCostUsd"] = "= the turn's cost"
    return out


def _message_shape(usage: dict | None) -> dict | None:
    if usage is None:
        return None
    out = dict(usage)
    inp, outp = usage.get("input", 0), usage.get("output", 0)
    out["input"] = "n > 0" if inp > 0 else inp
    if usage.get("totalTokens") == inp + outp:
        out["totalTokens"] = "= input + output"
    cost = dict(usage.get("cost") or {})
    priced = {"input": _cost(inp, "input"), "output": _cost(outp, "output")}
    if cost and all(cost.get(k) == v for k, v in priced.items()) and any(priced.values()):
        cost.update({"input": "= input x price", "output": "= output x price"})
        if usage["cost"].get("total") == priced["input"] + priced["output"]:
            cost["total"] = "= input + output"
    out["cost"] = cost
    return out


async def usage_probe(url: str) -> dict:
    ws = await admin_ws(url)
    out: dict = {}
    key = "agent:main:usage-" + uuid.uuid4().hex[:8]

    async def describe(tag: str) -> None:
        res = await ws.call("sessions.describe", {"key": key}, timeout=30)
        out[tag] = _shape(res["payload"]["session"])

    async def turn(tag: str) -> None:
        sent = await ws.call("chat.send", {"sessionKey": key, "message": "hello there",
                                           "idempotencyKey": uuid.uuid4().hex}, timeout=30)
        assert sent["ok"], sent
        run_id = sent["payload"]["runId"]
        end = await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id
                             and f["payload"]["state"] in ("final", "error", "aborted"))
        assert end["payload"]["state"] == "final", end
        await asyncio.sleep(1.0)  # the reference records the usage after the final
        await describe(tag)

    try:
        created = await ws.call("sessions.create", {"key": key}, timeout=30)
        assert created["ok"], created
        await describe("created")
        await turn("after a turn")
        await ws.call("sessions.patch", {"key": key, "label": "usage " + key[-8:]}, timeout=30)
        await describe("after a label patch")
        await ws.call("sessions.patch", {"key": key, "model": "fake/bare"}, timeout=30)
        await describe("after a model patch (no context window, no cost)")
        await turn("after a turn on the bare model")
        history = await ws.call("chat.history", {"sessionKey": key}, timeout=30)
        out["transcript usage"] = [_message_shape(m.get("usage"))
                                   for m in history["payload"]["messages"]
                                   if m["role"] == "assistant"]
        await ws.call("sessions.patch", {"key": key, "model": "fake/priced"}, timeout=30)
        await describe("after the model patch back")
        reset = await ws.call("sessions.reset", {"key": key}, timeout=30)
        assert reset["ok"], reset
        await describe("after a reset")
        return out
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_session_usage_matches_reference(target, request):
    got, reference = probe_both(request, "usage", target, usage_probe)
    if reference is None:
        # What the reference was seen to answer (so a krabfast-only run still checks it).
        assert got["created"]["totalTokensFresh"] is False, got
        assert got["after a turn"] == {
            "inputTokens": "n > 0", "outputTokens": 2, "totalTokens": "= inputTokens",
            "totalTokensFresh": True, "contextTokens": CONTEXT,
            "estimatedCostUsd": "= the turn's cost", "model": "priced",
            "modelProvider": "fake"}, got
        assert got["after a reset"]["totalTokens"] == 0, got
    else:
        assert_same_answers(reference, got)
