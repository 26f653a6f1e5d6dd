"""Conversations across implementations: the reference's client library and CLI chatting with
krabfast, and a chat probe run against both krabfast and the reference gateway.

1. `@openclaw/gateway-client` (chat_driver.mjs, Node 24) against krabfast on its offline
   model: `chat.send` on `agent:main:main`, the `chat` events up to `final`, `chat.history`,
   then an `agent` request with `expectFinal` (the `accepted` answer is an interim ack).
2. `openclaw agent --message M --session-key agent:main:<k>` (no --url: it reads
   OPENCLAW_GATEWAY_URL / OPENCLAW_GATEWAY_TOKEN, and needs a ~/.openclaw/openclaw.json)
   prints krabfast's reply.
3. The same probe against krabfast (`--config FILE`) and the reference (`openclaw gateway run`
   with `~/.openclaw/openclaw.json` in its fresh HOME), both on the fake OpenAI-compatible
   provider (tests/fakes/openai_server.py): final text, the chat state sequence, idempotent
   retries (counted at the fake), and an unknown session's empty history. The reference run
   proves the expectations; the krabfast run is compared with them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.fakes import start_fake_openai
from tests.integration.helpers import TOKEN, run
from tests.integration.node_helpers import admin_ws

from .helpers import (BOTH_GATEWAYS, json_lines, krabfast_gateway, reference_gateway,
                      run_node, session_turns, text_of)

pytestmark = pytest.mark.interop

DRIVER = Path(__file__).with_name("chat_driver.mjs")
CHAT_MESSAGE = "krabfast interop chat turn from GatewayClient"
AGENT_MESSAGE = "krabfast interop agent run with expectFinal"
OFFLINE_PREFIX = "krabfast offline model (no network, no LLM):"


def offline_reply(message: str) -> str:
    """What krabfast's offline model answers to `message` (krabfast/models/offline.py)."""
    said = " ".join(message.split())
    return f'{OFFLINE_PREFIX} you said "{said}". Your words reversed: {" ".join(reversed(said.split()))}'


# -- 1. @openclaw/gateway-client on krabfast ----------------------------------------------------

class DriverRun:
    def __init__(self, proc, gateway) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.lines = json_lines(proc.stdout)
        self.gateway = gateway

    def kind(self, kind: str) -> list[dict]:
        return [line for line in self.lines if line["kind"] == kind]

    def result(self, method: str) -> dict:
        for line in self.kind("result"):
            if line["method"] == method:
                return line
        raise AssertionError(f"no result for {method}: {self.describe()}")

    def chat_events(self, run_id: str) -> list[dict]:
        return [line["frame"]["payload"] for line in self.kind("event")
                if line["frame"]["event"] == "chat" and line["frame"]["payload"].get("runId") == run_id]

    def describe(self) -> str:
        lines = "\n".join(str(line)[:600] for line in self.lines)
        return (f"exit {self.returncode}\n--- stdout (json lines)\n{lines}\n--- stderr\n"
                f"{self.stderr[-3000:]}\n--- gateway log\n{self.gateway.output()[-3000:]}")


@pytest.fixture(scope="module")
def chat_run(reference, gateway_server_module, tmp_path_factory) -> DriverRun:
    gw = gateway_server_module("--token", TOKEN)
    tmp = tmp_path_factory.mktemp("chatclient")
    script = tmp / "chat_driver.mjs"
    shutil.copyfile(DRIVER, script)
    home = tmp / "home"
    home.mkdir()
    proc = run_node(reference, [str(script), str(reference.gateway_client_entry), gw.url, TOKEN,
                                "agent:main:main", CHAT_MESSAGE, AGENT_MESSAGE],
                    cwd=tmp, home=home, timeout=90)
    return DriverRun(proc, gw)


def test_client_run_completes(chat_run):
    assert chat_run.returncode == 0, chat_run.describe()
    assert chat_run.kind("done"), chat_run.describe()
    assert not chat_run.kind("connect-error"), chat_run.describe()
    assert not chat_run.kind("gap"), chat_run.describe()
    assert len(chat_run.kind("hello")) == 1, chat_run.describe()


def test_client_chat_send_streams_to_a_final(chat_run, ref_schema):
    sent = chat_run.result("chat.send")
    assert sent["ok"], chat_run.describe()
    assert sent["payload"]["status"] == "started", sent
    run_id = sent["payload"]["runId"]
    events = chat_run.chat_events(run_id)
    for payload in events:
        assert ref_schema("ChatEvent", payload) == [], payload
    states = [p["state"] for p in events]
    assert "final" in states, chat_run.describe()
    final = events[states.index("final")]
    deltas = events[:states.index("final")]
    assert deltas and all(p["state"] == "delta" for p in deltas), states
    assert all(p["sessionKey"] == "agent:main:main" for p in events), events
    reply = offline_reply(CHAT_MESSAGE)
    assert final["message"]["role"] == "assistant"
    assert text_of(final["message"]) == reply, final
    assert CHAT_MESSAGE in text_of(final["message"])
    # Each delta's message is the text so far: a prefix of the final text.
    for p in deltas:
        assert reply.startswith(text_of(p["message"])), p
    seqs = [p["seq"] for p in events]
    assert seqs == sorted(seqs), seqs


def test_client_chat_history_has_the_turn(chat_run):
    history = chat_run.result("chat.history")
    assert history["ok"], chat_run.describe()
    payload = history["payload"]
    assert payload["sessionKey"] == "agent:main:main"
    turn = [(m["role"], m["content"] if m["role"] == "user" else text_of(m))
            for m in payload["messages"] if m["role"] in ("user", "assistant")]
    assert turn[:2] == [("user", CHAT_MESSAGE), ("assistant", offline_reply(CHAT_MESSAGE))], payload
    # The user's content is the raw string, the assistant's a list of text parts.
    user, assistant = payload["messages"][:2]
    assert isinstance(user["content"], str)
    assert assistant["content"] == [{"type": "text", "text": offline_reply(CHAT_MESSAGE)}]


def test_client_agent_expect_final(chat_run):
    accepted = chat_run.kind("accepted")
    assert len(accepted) == 1, chat_run.describe()
    ack = accepted[0]["payload"]
    assert ack["status"] == "accepted"
    assert ack["sessionKey"] == "agent:main:main"
    assert ack["runId"] and isinstance(ack["acceptedAt"], int), ack
    result = chat_run.result("agent")
    assert result["ok"], chat_run.describe()
    final = result["payload"]
    # The promise resolved with the second answer on the same id, not the interim ack.
    assert final["status"] == "ok", final
    assert final["runId"] == ack["runId"]
    assert final["result"]["payloads"][0]["text"] == offline_reply(AGENT_MESSAGE), final


# -- 2. `openclaw agent` on krabfast ----------------------------------------------------------

def test_cli_agent_prints_the_reply(reference, gateway_server, tmp_path):
    gw = gateway_server("--token", TOKEN)
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    (home / ".openclaw" / "openclaw.json").write_text("{}")
    message = "hello from the reference cli " + uuid.uuid4().hex[:8]
    session_key = "agent:main:cli-" + uuid.uuid4().hex[:8]
    env = {"OPENCLAW_GATEWAY_URL": gw.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN}
    proc = run_node(reference, [str(reference.openclaw_mjs), "agent", "--message", message,
                                "--session-key", session_key], cwd=home, home=home, timeout=120,
                    env=env)
    describe = (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                f"{proc.stderr[-3000:]}\n--- gateway log\n{gw.output()[-3000:]}")
    assert proc.returncode == 0, describe
    assert offline_reply(message) in proc.stdout, describe
    assert message in proc.stdout, describe

    turns = session_turns(gw.url, session_key)
    assert turns == [("user", message), ("assistant", offline_reply(message))], turns


# -- 3. the same chat probe on krabfast and on the reference ----------------------------------

PROBE_TEXT = "The fake provider streams this exact sentence, in four pieces."
FAKE_MODEL = "fake-model"     # the default model; `reasoning: true`
PLAIN_MODEL = "plain-model"   # `reasoning: false`: thinking level "off" only


def provider_config(fake) -> dict:
    """openclaw.json for both gateways: one openai-completions provider, the fake."""
    return {
        "models": {"providers": {"fake": {
            "baseUrl": fake.base_url, "apiKey": "fake-local-key", "api": "openai-completions",
            "models": [{"id": model, "name": name, "contextWindow": 131072, "maxTokens": 8192,
                        "input": ["text"], "reasoning": reasoning,
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}}
                       for model, name, reasoning in ((FAKE_MODEL, "Fake Model", True),
                                                      (PLAIN_MODEL, "Plain Model", False))],
        }}},
        "agents": {"defaults": {"model": {"primary": f"fake/{FAKE_MODEL}"}}},
    }


def model_requests(fake) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/chat/completions")]


@pytest.fixture(scope="module")
def probe_fake():
    # Pieces paced 150 ms apart (the reference paces deltas ~75 ms), so a run takes ~0.6 s
    # of streaming: long enough for a retry to land while it is in flight.
    fake = start_fake_openai(text=PROBE_TEXT, chunks=4, delay=0.15)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def ref_chat_gateway(reference, probe_fake, tmp_path_factory):
    yield from reference_gateway(reference, tmp_path_factory.mktemp("refchat"),
                                 provider_config(probe_fake))


@pytest.fixture(scope="module")
def krabfast_chat_gateway(gateway_server_module, probe_fake, tmp_path_factory):
    return krabfast_gateway(gateway_server_module, tmp_path_factory.mktemp("kfchat"),
                            provider_config(probe_fake))




@pytest.fixture
def gw(target, request):
    """The chat-configured gateway of `target` (BOTH_GATEWAYS)."""
    return request.getfixturevalue("ref_chat_gateway" if target == "reference"
                                   else "krabfast_chat_gateway")


async def chat_probe(url: str, fake) -> dict:
    """One chat turn on a fresh session of `url`, a retry during it and one after it."""
    ws = await admin_ws(url)
    try:
        session_key = "agent:main:probe-" + uuid.uuid4().hex[:10]
        key = "probe-" + uuid.uuid4().hex
        params = {"sessionKey": session_key, "message": "say the probe sentence",
                  "idempotencyKey": key}
        before = len(model_requests(fake))
        sent = await ws.call("chat.send", params, timeout=30)
        assert sent["ok"], sent
        run_id = sent["payload"]["runId"]
        during = await ws.call("chat.send", params, timeout=30)
        events = []
        while not events or events[-1]["state"] not in ("final", "error", "aborted"):
            frame = await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id)
            events.append(frame["payload"])
        turn_requests = model_requests(fake)[before:]
        after = await ws.call("chat.send", params, timeout=30)
        await asyncio.sleep(1.5)  # time for a (wrong) second model request to reach the fake
        retry_requests = len(model_requests(fake)) - before - len(turn_requests)
        history = await ws.call("chat.history", {"sessionKey": session_key}, timeout=30)
        unknown_key = "agent:main:never-used-" + uuid.uuid4().hex[:10]
        unknown = await ws.call("chat.history", {"sessionKey": unknown_key}, timeout=30)
        return {"session_key": session_key, "key": key, "sent": sent, "during": during,
                "after": after, "events": events, "turn_requests": turn_requests,
                "retry_requests": retry_requests, "history": history, "unknown": unknown,
                "unknown_key": unknown_key}
    finally:
        await ws.close()


def collapse(states: list[str]) -> list[str]:
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


def probe_outcome(got: dict) -> dict:
    """The parts of a probe both gateways must agree on."""
    events = got["events"]
    states = [p["state"] for p in events]
    final = events[-1]
    deltas = [p for p in events if p["state"] == "delta"]
    history = got["history"]
    unknown = got["unknown"]
    return {
        "chat.send statuses": [got["sent"]["payload"].get("status"),
                               got["during"]["ok"] and got["during"]["payload"].get("status"),
                               got["after"]["ok"] and got["after"]["payload"].get("status")],
        "runId is the idempotencyKey": got["sent"]["payload"]["runId"] == got["key"],
        # status events (the reference's preparing_* / starting_model) may come first.
        "state shape": collapse([s for s in states if s != "status"]),
        "final text": text_of(final.get("message") or {}),
        "final role": (final.get("message") or {}).get("role"),
        "deltas are prefixes of the final": all(
            PROBE_TEXT.startswith(text_of(p.get("message") or {})) for p in deltas),
        "delta payload seq non-decreasing": [p["seq"] for p in events] == sorted(p["seq"] for p in events),
        "model requests for the turn": len(got["turn_requests"]),
        "model requests for the retries": got["retry_requests"],
        "model named without the provider": [r.body.get("model") for r in got["turn_requests"]],
        "history": history["ok"] and [
            (m["role"], m["content"] if m["role"] == "user" else text_of(m))
            for m in history["payload"]["messages"]],
        "what answered, in history": history["ok"] and [
            {k: m.get(k) for k in ("api", "provider", "model", "stopReason")}
            for m in history["payload"]["messages"] if m["role"] == "assistant"],
        "unknown session history": {"ok": unknown["ok"],
                                    "sessionKey": unknown.get("payload", {}).get("sessionKey"),
                                    "messages": unknown.get("payload", {}).get("messages")},
    }


def expected_outcome(got: dict) -> dict:
    return {
        "chat.send statuses": ["started", "in_flight", "ok"],
        "runId is the idempotencyKey": True,
        "state shape": ["delta", "final"],
        "final text": PROBE_TEXT,
        "final role": "assistant",
        "deltas are prefixes of the final": True,
        "delta payload seq non-decreasing": True,
        "model requests for the turn": 1,
        "model requests for the retries": 0,
        "model named without the provider": [FAKE_MODEL],
        "history": [("user", "say the probe sentence"), ("assistant", PROBE_TEXT)],
        "what answered, in history": [{"api": "openai-completions", "provider": "fake",
                                       "model": FAKE_MODEL, "stopReason": "stop"}],
        "unknown session history": {"ok": True, "sessionKey": got["unknown_key"], "messages": []},
    }


PROBES: dict[str, dict] = {}


@BOTH_GATEWAYS
def test_chat_probe_matches_reference(target, gw, probe_fake, ref_schema):
    got = run(chat_probe(gw.url, probe_fake), timeout=150)
    PROBES[target] = got
    for payload in got["events"]:
        assert ref_schema("ChatEvent", payload) == [], payload
    outcome, expected = probe_outcome(got), expected_outcome(got)
    diff = {k: {"got": outcome.get(k), "expected": v} for k, v in expected.items()
            if outcome.get(k) != v}
    assert not diff, (json.dumps(diff, indent=1, default=str) + "\n--- chat events\n"
                      + "\n".join(json.dumps(p) for p in got["events"]))


BURST_TEXT = "Three quick pieces, sent back to back."


@BOTH_GATEWAYS
def test_burst_deltas_add_up_to_the_final(gw, probe_fake):
    # The whole reply arrives at once (no pacing at the fake): the deltas are coalesced, yet
    # on the reference their deltaText still adds up to the final text and the last delta
    # carries the whole text.
    probe_fake.set_behaviour(text=BURST_TEXT, chunks=3, delay=0.0)
    try:
        got = run(chat_probe(gw.url, probe_fake), timeout=150)
    finally:
        probe_fake.set_behaviour(text=PROBE_TEXT, chunks=4, delay=0.15)
    events = got["events"]
    describe = "\n".join(json.dumps(p) for p in events)
    assert events[-1]["state"] == "final", describe
    assert text_of(events[-1]["message"]) == BURST_TEXT, describe
    deltas = [p for p in events if p["state"] == "delta"]
    assert deltas, describe
    assert "".join(p["deltaText"] for p in deltas) == BURST_TEXT, describe
    assert text_of(deltas[-1]["message"]) == BURST_TEXT, describe


async def sessions_probe(url: str) -> dict:
    """Sessions made, paged, archived, pinned and refused on a gateway, as its answers."""
    ws = await admin_ws(url)
    try:
        tag = "sp" + uuid.uuid4().hex[:8]
        made = [await ws.call("sessions.create", {"label": f"{tag} {i}"}, timeout=30)
                for i in range(3)]
        assert all(m["ok"] for m in made), made
        keys = [m["payload"]["key"] for m in made]
        sid0 = made[0]["payload"].get("sessionId") or made[0]["payload"]["entry"]["sessionId"]

        async def call(method, params):
            return await ws.call(method, params, timeout=30)

        return {
            "keys": keys,
            "first": await call("sessions.list", {"search": tag, "limit": 2}),
            "second": await call("sessions.list", {"search": tag, "limit": 2, "offset": 2}),
            "no_expected": await call("sessions.patch", {"key": keys[0], "archived": True}),
            "archived": await call("sessions.patch", {"key": keys[0], "archived": True,
                                                      "expectedSessionId": sid0}),
            "pin_archived": await call("sessions.patch", {"key": keys[0], "pinned": True}),
            "default": await call("sessions.list", {"search": tag}),
            "only_archived": await call("sessions.list", {"search": tag, "archived": True}),
            "duplicate_label": await call("sessions.patch", {"key": keys[1],
                                                             "label": f"{tag} 2"}),
            "pinned": await call("sessions.patch", {"key": keys[1], "pinned": True}),
            "spawned": await call("sessions.list", {"spawnedBy": keys[1]}),
            "after_run": await _after_a_run(ws, keys[2]),
        }
    finally:
        await ws.close()


async def _after_a_run(ws, key: str) -> dict:
    """A chat turn on `key`, then the session's row as sessions.describe shows it."""
    run_id = "sp-run-" + uuid.uuid4().hex[:8]
    sent = await ws.call("chat.send", {"sessionKey": key, "message": "one turn",
                                       "idempotencyKey": run_id}, timeout=30)
    assert sent["ok"], sent
    await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id
                   and f["payload"].get("state") in ("final", "error", "aborted"))
    for _ in range(50):  # the row settles once the run's end is recorded
        row = (await ws.call("sessions.describe", {"key": key}, timeout=30))["payload"]["session"]
        if row.get("status") not in (None, "running"):
            break
        await asyncio.sleep(0.1)
    return {"runId": run_id, "row": row}


def sessions_outcome(got: dict) -> dict:
    def page(res):
        p = res["payload"]
        return {k: p.get(k, "absent") for k in ("count", "totalCount", "limitApplied", "offset",
                                                 "nextOffset", "hasMore")}

    def refused(res):
        return (res["ok"], (res.get("error") or {}).get("code"))

    keys = got["keys"]
    return {
        "first page": page(got["first"]),
        "first page order": [r["key"] for r in got["first"]["payload"]["sessions"]],
        "second page": page(got["second"]),
        "archive without expectedSessionId": refused(got["no_expected"]),
        # The reference's `entry` here is its stored entry (archivedAt, no `archived` flag).
        "archived entry": got["archived"]["ok"]
        and isinstance(got["archived"]["payload"]["entry"].get("archivedAt"), (int, float)),
        "resolved model": got["archived"]["payload"].get("resolved", {}).get("model"),
        "pin an archived session": refused(got["pin_archived"]),
        "default list": [r["key"] for r in got["default"]["payload"]["sessions"]],
        "archived list": [r["key"] for r in got["only_archived"]["payload"]["sessions"]],
        "label in use": refused(got["duplicate_label"]),
        "pinned entry": got["pinned"]["ok"]
        and isinstance(got["pinned"]["payload"]["entry"].get("pinnedAt"), (int, float)),
        "rows say whether a run is going": [
            (r.get("hasActiveRun"), r.get("activeRunIds"))
            for r in got["default"]["payload"]["sessions"]],
        "new session keys": all(k.startswith("agent:main:dashboard:") for k in keys),
        "spawnedBy a plain session": got["spawned"]["payload"]["count"],
        # (sessions.describe's row has no hasActiveRun on the reference)
        "row after a run": {k: got["after_run"]["row"].get(k) for k in (
            "status", "abortedLastRun", "unread", "chatType")},
        "run times after a run": all(isinstance(got["after_run"]["row"].get(k), (int, float))
                                     for k in ("startedAt", "endedAt", "runtimeMs",
                                               "lastInteractionAt")),
        "lastRunId after a run": got["after_run"]["row"].get("lastRunId")
        == got["after_run"]["runId"],
        "_keys": keys,
    }


def sessions_expected(keys: list[str]) -> dict:
    return {
        "first page": {"count": 2, "totalCount": 3, "limitApplied": 2, "offset": "absent",
                       "nextOffset": 2, "hasMore": True},
        "first page order": [keys[2], keys[1]],
        "second page": {"count": 1, "totalCount": 3, "limitApplied": 2, "offset": 2,
                        "nextOffset": None, "hasMore": False},
        "archive without expectedSessionId": (False, "INVALID_REQUEST"),
        "archived entry": True,
        "resolved model": FAKE_MODEL,
        "pin an archived session": (False, "INVALID_REQUEST"),
        "default list": [keys[2], keys[1]],
        "archived list": [keys[0]],
        "label in use": (False, "INVALID_REQUEST"),
        "pinned entry": True,
        "rows say whether a run is going": [(False, []), (False, [])],
        "new session keys": True,
        "spawnedBy a plain session": 0,
        "row after a run": {"status": "done", "abortedLastRun": False, "unread": True,
                            "chatType": "direct"},
        "run times after a run": True,
        "lastRunId after a run": True,
        "_keys": keys,
    }


@BOTH_GATEWAYS
def test_sessions_probe_matches_reference(gw, ref_schema):
    got = run(sessions_probe(gw.url), timeout=150)
    for name in ("first", "second", "default", "only_archived", "spawned"):
        for row in got[name]["payload"]["sessions"]:  # (no published list result)
            assert ref_schema("SessionRow", row) == [], row
    outcome = sessions_outcome(got)
    expected = sessions_expected(got["keys"])
    diff = {k: {"got": outcome.get(k), "expected": v} for k, v in expected.items()
            if outcome.get(k) != v}
    assert not diff, (json.dumps(diff, indent=1, default=str) + "\n--- answers\n"
                      + json.dumps(got, default=str))


async def titles_probe(url: str) -> dict:
    """A chat turn on a fresh session, then its row with includeDerivedTitles and
    includeLastMessage (the reference fills the preview in a moment later: asked again)."""
    ws = await admin_ws(url)
    try:
        key = "agent:main:titles-" + uuid.uuid4().hex[:10]
        run_id = "titles-" + uuid.uuid4().hex[:8]
        sent = await ws.call("chat.send", {"sessionKey": key, "idempotencyKey": run_id,
                                           "message": "Hi. fix the **flaky** test please"},
                             timeout=30)
        assert sent["ok"], sent
        await ws.event("chat", 120, pred=lambda f: f["payload"].get("runId") == run_id
                       and f["payload"].get("state") in ("final", "error", "aborted"))
        plain = row = None
        for _ in range(50):
            plain = (await ws.call("sessions.list", {"search": key[len("agent:main:"):]},
                                   timeout=30))["payload"]["sessions"]
            listed = (await ws.call("sessions.list", {
                "search": key[len("agent:main:"):], "includeDerivedTitles": True,
                "includeLastMessage": True}, timeout=30))["payload"]["sessions"]
            row = next((r for r in listed if r["key"] == key), None)
            if row is not None and "lastMessagePreview" in row:
                break
            await asyncio.sleep(0.2)
        plain_row = next((r for r in plain or [] if r["key"] == key), {})
        described = (await ws.call("sessions.describe", {
            "key": key, "includeDerivedTitles": True, "includeLastMessage": True},
            timeout=30))["payload"]["session"]
        label = "titled " + run_id
        patched = await ws.call("sessions.patch", {"key": key, "label": label}, timeout=30)
        assert patched["ok"], patched
        labelled = (await ws.call("sessions.describe", {"key": key, "includeDerivedTitles": True},
                                  timeout=30))["payload"]["session"]
        return {"row": row or {}, "plain": plain_row, "described": described, "label": label,
                "labelled": labelled}
    finally:
        await ws.close()


@BOTH_GATEWAYS
def test_session_titles_and_previews_match_reference(gw, ref_schema):
    got = run(titles_probe(gw.url), timeout=150)
    row, plain, described = got["row"], got["plain"], got["described"]
    for shown in (row, plain, described):
        assert ref_schema("SessionRow", shown) == [], shown
    outcome = {"list": (row.get("derivedTitle"), row.get("lastMessagePreview")),
               "labelled": got["labelled"].get("derivedTitle") == got["label"],
               "describe": (described.get("derivedTitle"), described.get("lastMessagePreview")),
               "plain row has them": ("derivedTitle" in plain, "lastMessagePreview" in plain)}
    # No title from the first message (no label, no display name), on the reference too.
    assert outcome == {"list": (None, PROBE_TEXT), "describe": (None, PROBE_TEXT),
                       "labelled": True,
                       "plain row has them": (False, False)}, json.dumps(got, indent=1)


# sessions.patch level settings: (params, the row fields to show after it). Each step runs
# on the session as the steps before it left it.
LEVEL_STEPS = [
    ({"thinkingLevel": "HIGH"}, ("thinkingLevel",)),
    ({"thinkingLevel": "think-hard"}, ("thinkingLevel",)),
    ({"thinkingLevel": "on"}, ("thinkingLevel",)),
    ({"thinkingLevel": "extra high"}, ("thinkingLevel",)),
    ({"thinkingLevel": "bogus"}, ("thinkingLevel",)),
    ({"verboseLevel": "FULL"}, ("verboseLevel",)),
    ({"verboseLevel": "yes"}, ("verboseLevel",)),
    ({"verboseLevel": "loud"}, ("verboseLevel",)),
    ({"traceLevel": "unfiltered"}, ("traceLevel",)),
    ({"traceLevel": "maybe"}, ("traceLevel",)),
    ({"reasoningLevel": "live"}, ("reasoningLevel",)),
    ({"reasoningLevel": "sometimes"}, ("reasoningLevel",)),
    ({"responseUsage": "on"}, ("responseUsage",)),
    ({"elevatedLevel": "prompt"}, ("elevatedLevel",)),
    ({"elevatedLevel": "sudo"}, ("elevatedLevel",)),
    ({"execHost": "GATEWAY"}, ("execHost",)),
    ({"execHost": "cloud"}, ("execHost",)),
    ({"execHost": "node", "execNode": "  node-1 "}, ("execHost", "execNode")),
    ({"execNode": None}, ("execHost", "execNode")),
    ({"thinkingLevel": "medium"}, ("thinkingLevel",)),
    ({"model": f"fake/{PLAIN_MODEL}"}, ("thinkingLevel",)),   # the level follows the model
    ({"thinkingLevel": "low"}, ("thinkingLevel",)),
    ({"thinkingLevel": "whatever"}, ("thinkingLevel",)),
    ({"thinkingLevel": None}, ("thinkingLevel",)),
]


async def levels_probe(url: str) -> list:
    ws = await admin_ws(url)
    try:
        key = "agent:main:levels-" + uuid.uuid4().hex[:8]
        created = await ws.call("sessions.create", {"key": key}, timeout=30)
        assert created["ok"], created
        out = []
        for params, fields in LEVEL_STEPS:
            answer = await ws.call("sessions.patch", {"key": key, **params}, timeout=30)
            row = (await ws.call("sessions.describe", {"key": key}, timeout=30))["payload"]["session"]
            error = answer.get("error") or {}
            out.append({"params": params, "ok": answer["ok"],
                        "error": (error.get("code"), error.get("message")) if error else None,
                        "row": {f: row.get(f) for f in fields}})
        return out
    finally:
        await ws.close()


LEVELS: dict[str, list] = {}


@BOTH_GATEWAYS
def test_session_level_settings_match_reference(target, gw):
    """Level settings are normalized (case, aliases) as the reference stores them, unknown
    ones refused with its messages, and the thinking level must be one the session's model
    offers (a model with `reasoning: false`: "off" only; a model change moves it)."""
    got = run(levels_probe(gw.url), timeout=150)
    LEVELS[target] = got
    if target == "reference" or "reference" not in LEVELS:
        off_only = f'thinkingLevel "low" is not supported for fake/{PLAIN_MODEL} (use off)'
        steps = {json.dumps(s["params"]): s for s in got}
        assert steps['{"thinkingLevel": "bogus"}']["error"] == (
            "INVALID_REQUEST", "invalid thinkingLevel (use off|minimal|low|medium|high)")
        assert steps['{"thinkingLevel": "low"}']["error"] == ("INVALID_REQUEST", off_only)
        assert steps['{"model": "fake/plain-model"}']["row"] == {"thinkingLevel": "off"}
        assert steps['{"verboseLevel": "FULL"}']["row"] == {"verboseLevel": "full"}
    if "reference" in LEVELS and target == "krabfast":
        diff = [{"reference": r, "krabfast": k} for r, k in zip(LEVELS["reference"], got)
                if r != k]
        assert not diff, json.dumps(diff)
