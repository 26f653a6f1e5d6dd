"""What each model api receives, on krabfast and on the reference gateway configured alike:
one probe, two gateways (the reference's requests are the spec).

Three fake providers (tests/fakes), one per api: openai-completions, anthropic-messages and ollama, each
with a model that reasons (`reasoning: true`) and one that does not, one with `maxTokens`
and one without. For each model and thinking level a session is patched, one chat turn
runs, and the request body the fake received is compared, without what only the
reference's agent runtime adds (its system prompt and tools, and `tool_choice` with them).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fakes import start_fake_anthropic, start_fake_ollama, start_fake_openai
from tests.integration.helpers import run
from tests.integration.node_helpers import admin_ws

from .helpers import BOTH_GATEWAYS, krabfast_gateway, reference_gateway

pytestmark = pytest.mark.interop

AGENT_RUNTIME_ONLY = ("messages", "system", "tools", "tool_choice")
# What a session row says about thinking (the levels its model offers, the default, the
# level a run would use).
ROW_THINKING = ("thinkingLevel", "thinkingLevels", "thinkingOptions", "thinkingDefault",
                "effectiveThinkingLevel")
LEVELS = (None, "off", "minimal", "low", "medium", "high")
# Provider ids of no bundled reference plugin: the reference's own plugins for "openai",
# "anthropic", "ollama", ... give their models other thinking levels (differences.md).
PROVIDERS = {"oa": "openai-completions", "an": "anthropic-messages", "ol": "ollama",
             "ollama": "ollama"}
CASES = [  # (provider, model, levels)
    ("oa", "oa/plain", (None, "off")),
    ("oa", "oa/capped", (None,)),
    ("oa", "oa/thinker", LEVELS),
    ("an", "an/plain", (None, "off")),
    ("an", "an/capped", (None,)),
    ("an", "an/thinker", LEVELS),
    ("ol", "ol/plain", (None, "off")),
    ("ol", "ol/capped", (None,)),
    ("ol", "ol/thinker", LEVELS),
    # The reference's bundled Ollama provider: its own levels, default "off".
    ("ollama", "ollama/plain", (None,)),
    ("ollama", "ollama/thinker", (None, "off", "low", "medium", "high", "max")),
]


@pytest.fixture(scope="module")
def fakes():
    started = {"oa": start_fake_openai(text="hello there", chunks=2, delay=0.01),
               "an": start_fake_anthropic(text="hello there", chunks=2, delay=0.01),
               "ol": start_fake_ollama(text="hello there", chunks=2, delay=0.01),
               "ollama": start_fake_ollama(text="hello there", chunks=2, delay=0.01)}
    yield started
    for fake in started.values():
        fake.stop()


def config(fakes) -> dict:
    models = [{"id": "plain", "name": "plain"},
              {"id": "capped", "name": "capped", "maxTokens": 1234, "contextWindow": 50000},
              {"id": "thinker", "name": "thinker", "reasoning": True}]
    return {"models": {"providers": {
        name: {"baseUrl": fake.base_url, "apiKey": "fake-key", "api": PROVIDERS[name], "models": models}
        for name, fake in fakes.items()}},
        "agents": {"defaults": {"model": {"primary": "oa/plain"}}}}


@pytest.fixture(scope="module")
def reference_gw(reference, fakes, tmp_path_factory):
    yield from reference_gateway(reference, tmp_path_factory.mktemp("refrequests"), config(fakes))


@pytest.fixture(scope="module")
def krabfast_gw(gateway_server_module, fakes, tmp_path_factory):
    return krabfast_gateway(gateway_server_module, tmp_path_factory.mktemp("kfrequests"),
                            config(fakes))


async def requests_probe(url: str, fakes) -> dict:
    ws = await admin_ws(url)
    out = {}
    try:
        for fake_name, model, levels in CASES:
            for level in levels:
                key = "agent:main:req-" + uuid.uuid4().hex[:8]
                patch = {"key": key, "model": model}
                if level is not None:
                    patch["thinkingLevel"] = level
                patched = await ws.call("sessions.patch", patch, timeout=30)
                assert patched["ok"], patched
                fake = fakes[fake_name]
                before = len(fake.requests)
                sent = await ws.call("chat.send", {"sessionKey": key, "message": "hi",
                                                   "idempotencyKey": uuid.uuid4().hex}, timeout=30)
                run_id = sent["payload"]["runId"]
                end = await ws.event("chat", 60, pred=lambda f: f["payload"].get("runId") == run_id
                                     and f["payload"]["state"] in ("final", "error", "aborted"))
                bodies = [{k: v for k, v in r.body.items() if k not in AGENT_RUNTIME_ONLY}
                          for r in fake.requests[before:] if r.method == "POST"]
                row = (await ws.call("sessions.describe", {"key": key}, timeout=30))["payload"]["session"]
                out[f"{model} {level}"] = {"state": end["payload"]["state"], "bodies": bodies,
                                           "row": {f: row.get(f) for f in ROW_THINKING}}
        return out
    finally:
        await ws.close()


PROBES: dict[str, dict] = {}


def _probe(request, target: str, probe, *args) -> tuple[dict, dict | None]:
    """Run `probe(url, *args)` on `target`'s gateway; (its answers, the reference's answers
    to compare them with, when this is krabfast's run and the reference ran first)."""
    gw = request.getfixturevalue("reference_gw" if target == "reference" else "krabfast_gw")
    got = run(probe(gw.url, *args), timeout=300)
    PROBES[probe.__name__, target] = got
    return got, (PROBES.get((probe.__name__, "reference")) if target == "krabfast" else None)


@BOTH_GATEWAYS
def test_model_requests_match_reference(target, request, fakes):
    got, reference = _probe(request, target, requests_probe, fakes)
    if reference is None:
        # What the reference was seen to send (so a krabfast-only run still checks it).
        assert got["oa/capped None"]["bodies"][0]["max_completion_tokens"] == 1234
        assert got["an/thinker low"]["bodies"][0]["thinking"] == {
            "type": "enabled", "budget_tokens": 2048}
        assert got["an/thinker None"]["bodies"][0]["thinking"]["budget_tokens"] == 7168
        assert got["ol/thinker minimal"]["bodies"][0]["think"] == "low"
        assert got["ol/plain None"]["bodies"][0]["think"] is False
    if reference is not None:
        diff = {case: {"reference": reference[case], "krabfast": got[case]}
                for case in got if got[case] != reference[case]}
        assert not diff, json.dumps(diff, indent=1)


async def models_probe(url: str) -> dict:
    ws = await admin_ws(url)
    try:
        out = {}
        for name, params in (("plain", {}), ("details", {"view": "default", "includeDetails": True}),
                             ("configured", {"view": "configured"}), ("all", {"view": "all"})):
            listed = await ws.call("models.list", params, timeout=30)
            assert listed["ok"], listed
            payload = dict(listed["payload"])
            payload["models"] = sorted(payload["models"], key=lambda m: (m["provider"], m["id"]))
            out[name] = payload
        return out
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_models_list_matches_reference(target, request):
    """models.list rows as the reference shows configured models: their own ids, the
    context window only when configured, whether they reason and the thinking levels they
    offer; `includeDetails` adds `local` and `input`; view "configured" `defaultModels`."""
    got, reference = _probe(request, target, models_probe)
    if reference is None:
        rows = {(m["provider"], m["id"]): m for m in got["details"]["models"]}
        assert rows["oa", "capped"]["contextWindow"] == 50000 and rows["oa", "capped"]["local"]
        assert "contextWindow" not in rows["oa", "thinker"]
        assert rows["ollama", "thinker"]["thinkingDefault"] == "off"
        assert got["configured"]["defaultModels"] == {"automaticUtilityModel": None}
    if reference is not None:
        assert got == reference, json.dumps({"krabfast": got, "reference": reference})


# chat.send's `thinking`: (model, the session's level, the request's level).
REQUEST_THINKING = [
    ("an/thinker", None, "low"),
    ("an/thinker", "high", "minimal"),   # this run only: the session keeps "high"
    ("an/thinker", None, "  HIGH "),
    ("an/thinker", None, "think-hard"),
    ("an/thinker", None, "bogus"),       # not a level: the session's (the default) is used
    ("an/thinker", None, "off"),
    ("ol/thinker", None, ""),
    ("ol/thinker", None, "xhigh"),       # a level the model lacks: answered without the model
    ("an/plain", None, "low"),
    ("an/plain", None, "off"),
]


async def _thinking_cases(ws, fakes):
    """For each REQUEST_THINKING case, a new session on its model with its level: yields
    (case name, session key, the model's fake, its request count so far)."""
    for model, session_level, thinking in REQUEST_THINKING:
        key = "agent:main:rt-" + uuid.uuid4().hex[:8]
        patch = {"key": key, "model": model}
        if session_level:
            patch["thinkingLevel"] = session_level
        assert (await ws.call("sessions.patch", patch, timeout=30))["ok"]
        fake = fakes[model.split("/")[0]]
        yield f"{model} {session_level} {thinking!r}", key, thinking, fake, len(fake.requests)


def _thinking_sent(fake, before: int) -> list:
    return [{k: v for k, v in r.body.items() if k in ("thinking", "think")}
            for r in fake.requests[before:] if r.method == "POST"]


async def request_thinking_probe(url: str, fakes) -> dict:
    ws = await admin_ws(url)
    out = {}
    try:
        async for case, key, thinking, fake, before in _thinking_cases(ws, fakes):
            sent = await ws.call("chat.send", {"sessionKey": key, "message": "hi",
                                               "thinking": thinking,
                                               "idempotencyKey": uuid.uuid4().hex}, timeout=30)
            assert sent["ok"], sent
            run_id = sent["payload"]["runId"]
            states = []
            while not states or states[-1] not in ("final", "error", "aborted"):
                frame = await ws.event("chat", 60, pred=lambda f: f["payload"].get("runId") == run_id)
                states.append(frame["payload"]["state"])
                final = frame["payload"]
            message = final.get("message") or {}
            row = (await ws.call("sessions.describe", {"key": key}, timeout=30))["payload"]["session"]
            out[f"chat.send {case}"] = {
                # (the reference's `status` events, preparing_* / starting_model, aside)
                "states": [s for i, s in enumerate(states)
                           if s != "status" and (i == 0 or states[i - 1] != s)],
                "text": "".join(p.get("text", "") for p in message.get("content") or []),
                "sent": _thinking_sent(fake, before),
                "session level": row.get("thinkingLevel")}
        return out
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_request_thinking_matches_reference(target, request, fakes):
    """A chat.send's `thinking` sets the level of that run only, normalized; not
    a level: ignored; a level the model lacks: the turn is answered, without the model,
    with the levels it offers."""
    got, reference = _probe(request, target, request_thinking_probe, fakes)
    if reference is None:
        lacks = got["chat.send ol/thinker None 'xhigh'"]
        assert lacks["sent"] == [] and lacks["text"] == (
            'Thinking level "xhigh" is not supported for ol/thinker. '
            "Use one of: off, minimal, low, medium, high.")
        assert got["chat.send an/thinker high 'minimal'"]["session level"] == "high"
    if reference is not None:
        diff = {case: {"reference": reference[case], "krabfast": got[case]}
                for case in got if got[case] != reference[case]}
        assert not diff, json.dumps(diff, indent=1)


async def agent_thinking_probe(url: str, fakes) -> dict:
    ws = await admin_ws(url)
    out = {}
    try:
        async for case, key, thinking, fake, before in _thinking_cases(ws, fakes):
            run_id = uuid.uuid4().hex
            first = await ws.call("agent", {"sessionKey": key, "message": "hi", "thinking": thinking,
                                            "idempotencyKey": run_id}, timeout=30)
            assert first["ok"] and first["payload"]["status"] == "accepted", first
            final = await ws.response(first["id"], 60)  # the second answer on that id
            error = final.get("error") or {}
            out[case] = {
                "ok": final["ok"], "error": (error.get("code"), error.get("message")),
                "status": (final.get("payload") or {}).get("status") if final["ok"] else None,
                # a refusal's payload, beside its error (the run id is this case's own)
                "failed payload": None if final["ok"] else {
                    k: ("<run id>" if k == "runId" and v == run_id else v)
                    for k, v in (final.get("payload") or {}).items()},
                "chat events": sum(1 for f in ws.frames if f.get("type") == "event"
                                   and f.get("event") == "chat"
                                   and f["payload"].get("runId") == run_id) > 0,
                "sent": _thinking_sent(fake, before)}
        return out
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_agent_thinking_matches_reference(target, request, fakes):
    """agent's `thinking`: a level the model offers is that run's; anything else is refused
    in the second answer (UNAVAILABLE, with a payload {runId, status: "error", summary}),
    with no run and no model request."""
    got, reference = _probe(request, target, agent_thinking_probe, fakes)
    if reference is None:
        assert got["an/thinker None 'low'"]["sent"] == [
            {"thinking": {"type": "enabled", "budget_tokens": 2048}}]
        assert got["an/thinker None 'bogus'"]["error"] == (
            "UNAVAILABLE", "Invalid thinking level. Use one of: off.")
        assert got["an/thinker None 'bogus'"]["failed payload"] == {
            "runId": "<run id>", "status": "error",
            "summary": "Invalid thinking level. Use one of: off."}
        assert got["an/plain None 'low'"]["sent"] == []
    if reference is not None:
        diff = {case: {"reference": reference[case], "krabfast": got[case]}
                for case in got if got[case] != reference[case]}
        assert not diff, json.dumps(diff, indent=1)
