"""Conversations against a real gateway on the built-in offline model: chat.send and its
streamed `chat` events, history, abort, idempotent retries, `agent` with its two answers,
agent.wait, sessions and their topic events. Every frame is checked against the
reference's schema (tests/refschema.py: ChatEvent, AgentEvent, and the result
definitions it names)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.helpers import TOKEN, RawWS, run

MAIN = "agent:main:main"


@pytest.fixture(scope="module")
def gateway(gateway_server_module):
    return gateway_server_module("--token", TOKEN)


def _key() -> str:
    return f"agent:main:t-{uuid.uuid4().hex[:8]}"


async def _operator(url, scopes=("operator.admin",)):
    return await RawWS.connected(url, scopes=list(scopes), client_id="cli", mode="cli")


def test_hello_carries_session_defaults(gateway):
    async def main():
        ws = await _operator(gateway.url)
        defaults = ws.hello["snapshot"]["sessionDefaults"]
        assert defaults["mainSessionKey"] == MAIN and defaults["defaultAgentId"] == "main"
        assert defaults["modelConfigured"] is False  # only the offline model
        for name in ("chat.send", "chat.history", "chat.abort", "agent", "agent.wait",
                     "sessions.list", "models.list", "commands.list"):
            assert name in ws.hello["features"]["methods"], name
        assert "chat" in ws.hello["features"]["events"]
        await ws.close()
    run(main())


def test_a_chat_turn_streams_and_lands_in_history(gateway):
    async def main():
        ws = await _operator(gateway.url)
        watcher = await _operator(gateway.url, scopes=("operator.read",))
        key = _key()
        res = await ws.call("chat.send", {"sessionKey": key, "message": "hello there krab",
                                          "idempotencyKey": "run-1"})
        assert res["ok"] and res["payload"] == {"runId": "run-1", "status": "started"}
        final = await ws.event("chat", 10, lambda f: f["payload"]["state"] == "final"
                               and f["payload"]["runId"] == "run-1")
        text = final["payload"]["message"]["content"][0]["text"]
        assert "offline" in text and "hello there krab" in text
        deltas = [f["payload"] for f in ws.events("chat") if f["payload"]["state"] == "delta"
                  and f["payload"]["runId"] == "run-1"]
        assert deltas and "".join(d["deltaText"] for d in deltas) == text[:len(
            "".join(d["deltaText"] for d in deltas))]
        # Every operator.read socket gets chat events, not only the sender.
        await watcher.event("chat", 5, lambda f: f["payload"]["state"] == "final")
        history = (await ws.call("chat.history", {"sessionKey": key}))["payload"]
        roles = [m["role"] for m in history["messages"]]
        assert roles == ["user", "assistant"]
        assert history["messages"][0]["content"] == "hello there krab"
        assert history["messages"][1]["content"][0]["text"] == text
        # The reference's transcript position and the user turn's idempotencyKey (what its
        # Control UI merges history, events and its pending message by).
        user, reply = history["messages"]
        assert user["__openclaw"] == {"id": user["messageId"], "seq": 1}
        assert reply["__openclaw"] == {"id": reply["messageId"], "seq": 2}
        assert user["idempotencyKey"] == "run-1:user" and "idempotencyKey" not in reply
        assert final["payload"]["message"]["__openclaw"] == reply["__openclaw"]  # one reply
        # A retry after the run answers ok and starts nothing.
        again = await ws.call("chat.send", {"sessionKey": key, "message": "hello there krab",
                                            "idempotencyKey": "run-1"})
        assert again["payload"] == {"runId": "run-1", "status": "ok"}
        await ws.barrier()
        assert len((await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"]) == 2
        await ws.close()
        await watcher.close()
    run(main())


def test_an_unknown_session_has_an_empty_history(gateway):
    async def main():
        ws = await _operator(gateway.url)
        res = await ws.call("chat.history", {"sessionKey": _key()})
        assert res["ok"] and res["payload"]["messages"] == []
        await ws.close()
    run(main())


def test_chat_needs_write_and_read_scopes(gateway):
    async def main():
        reader = await _operator(gateway.url, scopes=("operator.read",))
        res = await reader.call("chat.send", {"sessionKey": _key(), "message": "x",
                                              "idempotencyKey": "nope"})
        assert res["error"]["details"]["missingScope"] == "operator.write"
        await reader.close()
    run(main())


def test_agent_answers_twice_on_one_id_and_agent_wait_sees_the_outcome(gateway):
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        req = ws.request("agent", {"message": "count the krabs", "sessionKey": key,
                                   "idempotencyKey": "agent-1"})
        first = await ws.response(req, 5)
        assert first["payload"]["status"] == "accepted" and first["payload"]["runId"] == "agent-1"
        final = await ws.response(req, 10)
        assert final["payload"]["status"] == "ok"
        assert "count the krabs" in final["payload"]["result"]["payloads"][0]["text"]
        streams = {f["payload"]["stream"] for f in ws.events("agent")
                   if f["payload"]["runId"] == "agent-1"}
        assert {"lifecycle", "assistant"} <= streams
        waited = await ws.call("agent.wait", {"runId": "agent-1", "timeoutMs": 1000})
        assert waited["payload"]["status"] == "ok"
        unknown = await ws.call("agent.wait", {"runId": "no-such-run", "timeoutMs": 50})
        assert unknown["payload"]["status"] == "timeout"
        await ws.close()
    run(main())


def test_a_thinking_level_the_model_lacks_is_refused_or_answered_without_the_model(gateway):
    """The offline model offers "off" only: agent refuses "high" in its second answer,
    chat.send answers it with a final naming the levels; "off" runs as usual."""
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        lacks = 'Thinking level "high" is not supported for krabfast/offline. Use one of: off.'
        req = ws.request("agent", {"message": "hi", "sessionKey": key, "thinking": "high",
                                   "idempotencyKey": "agent-think"})
        assert (await ws.response(req, 5))["payload"]["status"] == "accepted"
        refused = await ws.response(req, 10)
        assert not refused["ok"] and refused["error"]["code"] == "UNAVAILABLE"
        assert refused["error"]["message"] == lacks
        assert refused["payload"] == {"runId": "agent-think", "status": "error", "summary": lacks}
        sent = await ws.call("chat.send", {"sessionKey": key, "message": "hi", "thinking": "HIGH",
                                           "idempotencyKey": "chat-think"})
        assert sent["ok"]
        final = await ws.event("chat", 10, lambda f: f["payload"]["runId"] == "chat-think"
                               and f["payload"]["state"] == "final")
        assert final["payload"]["message"]["content"][0]["text"] == lacks
        assert not [f for f in ws.events("chat") if f["payload"]["runId"] == "chat-think"
                    and f["payload"]["state"] == "delta"]
        req = ws.request("agent", {"message": "hi", "sessionKey": key, "thinking": "off",
                                   "idempotencyKey": "agent-off"})
        await ws.response(req, 5)
        assert (await ws.response(req, 10))["payload"]["status"] == "ok"
        await ws.close()
    run(main())


def test_sessions_list_and_topic_events(gateway):
    async def main():
        ws = await _operator(gateway.url)
        sub = await _operator(gateway.url, scopes=("operator.read",))
        other = await _operator(gateway.url, scopes=("operator.read",))
        key = _key()
        assert (await sub.call("sessions.subscribe", {}))["payload"]["subscribed"] is True
        assert (await sub.call("sessions.messages.subscribe", {"key": key}))["ok"]
        await ws.call("chat.send", {"sessionKey": key, "message": "topic test",
                                    "idempotencyKey": "topic-1"})
        await sub.event("session.message", 10, lambda f: f["payload"]["sessionKey"] == key
                        and f["payload"]["message"]["role"] == "assistant")
        await sub.event("sessions.changed", 5, lambda f: f["payload"]["sessionKey"] == key)
        await other.barrier()
        # Topic events reach only their subscribers.
        assert not other.events("session.message") and not other.events("sessions.changed")
        result = (await ws.call("sessions.list", {}))["payload"]
        assert key in [row["key"] for row in result["sessions"]]
        # The reference's Control UI stops rendering its chat without `defaults`.
        assert result["defaults"]["modelProvider"] == "krabfast"
        assert isinstance(result["defaults"]["model"], str)
        await ws.close()
        await sub.close()
        await other.close()
    run(main())


def test_models_and_commands(gateway):
    async def main():
        ws = await _operator(gateway.url, scopes=("operator.read",))
        models = (await ws.call("models.list", {}))["payload"]["models"]
        assert [m["provider"] for m in models] == ["krabfast"]
        names = [c["name"] for c in (await ws.call("commands.list", {}))["payload"]["commands"]]
        assert {"new", "reset", "stop"} <= set(names)
        await ws.close()
    run(main())


def test_slash_new_starts_the_session_over(gateway):
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        await ws.call("chat.send", {"sessionKey": key, "message": "remember me",
                                    "idempotencyKey": "n-1"})
        await ws.event("chat", 10, lambda f: f["payload"]["state"] == "final"
                       and f["payload"]["runId"] == "n-1")
        before = (await ws.call("chat.history", {"sessionKey": key}))["payload"]
        await ws.call("chat.send", {"sessionKey": key, "message": "/new", "idempotencyKey": "n-2"})
        after = (await ws.call("chat.history", {"sessionKey": key}))["payload"]
        assert after["messages"] == [] and after["sessionId"] != before["sessionId"]
        await ws.close()
    run(main())


def test_abort_stops_a_run_at_once(gateway):
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        long_message = " ".join(["word"] * 400)  # the offline model streams word by word
        await ws.call("chat.send", {"sessionKey": key, "message": long_message,
                                    "idempotencyKey": "ab-1"})
        await ws.event("chat", 10, lambda f: f["payload"]["state"] == "delta"
                       and f["payload"]["runId"] == "ab-1")
        res = await ws.call("chat.abort", {"sessionKey": key})
        assert res["payload"]["runIds"] == ["ab-1"] and res["payload"]["aborted"] is True
        aborted = await ws.event("chat", 5, lambda f: f["payload"]["runId"] == "ab-1"
                                 and f["payload"]["state"] == "aborted")
        assert aborted["payload"]["stopReason"] == "rpc"
        await asyncio.sleep(0.2)
        assert not [f for f in ws.events("chat") if f["payload"]["runId"] == "ab-1"
                    and f["payload"]["state"] == "final"]
        await ws.close()
    run(main())


def test_the_chat_command_prints_the_streamed_reply(gateway):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "krabfast", "chat", "hi from the cli",
                          "--session", _key(), "--url", gateway.url, "--token", TOKEN],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'you said "hi from the cli"' in out.stdout and "offline model" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "krabfast", "chat", "x", "--url", gateway.url,
                          "--token", "wrong"], cwd=REPO, capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 1 and bad.stderr.startswith("krabfast chat: ")


async def _turn(ws, key, text, run_id):
    await ws.call("chat.send", {"sessionKey": key, "message": text, "idempotencyKey": run_id})
    return await ws.event("chat", 10, lambda f: f["payload"]["runId"] == run_id
                          and f["payload"]["state"] == "final")


def test_history_pages_back_from_the_newest(gateway):
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        for i in range(3):
            await _turn(ws, key, f"m{i}", f"pg-{i}")
        first = (await ws.call("chat.history", {"sessionKey": key, "limit": 4}))["payload"]
        assert first["totalMessages"] == 6 and first["hasMore"] is True
        assert [m.get("content") for m in first["messages"] if m["role"] == "user"] == ["m1", "m2"]
        rest = (await ws.call("chat.history", {"sessionKey": key, "limit": 4,
                                               "offset": first["nextOffset"]}))["payload"]
        assert [m["content"] for m in rest["messages"] if m["role"] == "user"] == ["m0"]
        assert rest["hasMore"] is False and len(rest["messages"]) == 2
        await ws.close()
    run(main())


def test_startup_message_get_and_inject(gateway):
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        startup = (await ws.call("chat.startup", {"sessionKey": key}))["payload"]
        assert startup["sessionKey"] == key and startup["modelConfigured"] is False
        assert startup["messages"] == [] and startup["totalMessages"] == 0
        await _turn(ws, key, "find me", "mg-1")
        # Once there is a transcript, chat.startup opens the chat with chat.history's page.
        startup = (await ws.call("chat.startup", {"sessionKey": key, "limit": 1}))["payload"]
        history = (await ws.call("chat.history", {"sessionKey": key, "limit": 1}))["payload"]
        assert startup["messages"] == history["messages"] and len(history["messages"]) == 1
        assert startup["totalMessages"] == 2 and startup["hasMore"] is True
        messages = (await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"]
        got = await ws.call("chat.message.get", {"sessionKey": key,
                                                 "messageId": messages[0]["messageId"]})
        assert got["payload"]["message"]["content"] == "find me"
        missing = await ws.call("chat.message.get", {"sessionKey": key, "messageId": "nope"})
        assert missing["error"]["code"] == "INVALID_REQUEST"
        injected = (await ws.call("chat.inject", {"sessionKey": key, "message": "a note"}))["payload"]
        assert injected["ok"] is True
        final = await ws.event("chat", 5, lambda f: f["payload"]["state"] == "final"
                               and f["payload"]["message"]["content"][0]["text"] == "a note")
        assert final["payload"]["sessionKey"] == key
        after = (await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"]
        assert after[-1]["messageId"] == injected["messageId"]
        reader = await _operator(gateway.url, scopes=("operator.write",))
        denied = await reader.call("chat.inject", {"sessionKey": key, "message": "x"})
        assert denied["error"]["details"]["missingScope"] == "operator.admin"
        await ws.close()
        await reader.close()
    run(main())


def test_agents_identity_and_system_info(gateway):
    async def main():
        ws = await _operator(gateway.url, scopes=("operator.read",))
        agents = (await ws.call("agents.list", {}))["payload"]
        assert agents["defaultId"] == "main" and [a["id"] for a in agents["agents"]] == ["main"]
        assert agents["ownership"] == "sole" and agents["selectionRequired"] is False
        assert agents["agents"][0]["thinkingOptions"] == ["off"]  # the offline model's
        ident = (await ws.call("agent.identity.get", {}))["payload"]
        assert ident == {"agentId": "main", "name": "Assistant", "nameSource": "default",
                         "avatar": "A"}  # the reference's, for an agent named nowhere
        assert (await ws.call("agent.identity.get", {"agentId": "other"}))["ok"] is False
        info = (await ws.call("system.info", {}))["payload"]
        assert info["pid"] > 0 and info["cpuCount"] >= 1 and info["uptimeMs"] >= 0
        await ws.close()
    run(main())


def test_session_lifecycle(gateway):
    async def main():
        ws = await _operator(gateway.url)
        created = (await ws.call("sessions.create", {"label": "my chat"}))["payload"]
        key = created["key"]
        assert key.startswith("agent:main:") and created["entry"]["label"] == "my chat"
        described = (await ws.call("sessions.describe", {"key": key}))["payload"]["session"]
        assert described["sessionId"] == created["sessionId"]
        resolved = (await ws.call("sessions.resolve", {"label": "my chat"}))["payload"]
        assert resolved["key"] == key
        patched = (await ws.call("sessions.patch", {"key": key, "label": "renamed"}))["payload"]
        assert patched["entry"]["label"] == "renamed"
        bad_model = await ws.call("sessions.patch", {"key": key, "model": "nope/none"})
        assert bad_model["ok"] is False
        await _turn(ws, key, "before reset", "lc-1")
        reset = (await ws.call("sessions.reset", {"key": key}))["payload"]
        assert reset["entry"]["sessionId"] != created["sessionId"]
        assert (await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"] == []
        aborted = (await ws.call("sessions.abort", {"key": key}))["payload"]
        assert aborted["runIds"] == []
        deleted = (await ws.call("sessions.delete", {"key": key}))["payload"]
        assert deleted["deleted"] is True
        assert key not in [r["key"] for r in (await ws.call("sessions.list", {}))["payload"]["sessions"]]
        gone = await ws.call("sessions.describe", {"key": key})
        assert gone["ok"] is True and gone["payload"] == {"session": None}  # as the reference
        # A session row never carries a status outside the schema's (no "idle").
        rows = (await ws.call("sessions.list", {}))["payload"]["sessions"]
        assert all(r.get("status", "running") in ("queued", "running", "done", "failed",
                                                  "killed", "timeout") for r in rows), rows
        await ws.close()
    run(main())


def test_unsubscribed_sockets_get_no_session_messages(gateway):
    async def main():
        ws = await _operator(gateway.url)
        sub = await _operator(gateway.url, scopes=("operator.read",))
        key = _key()
        await sub.call("sessions.messages.subscribe", {"key": key})
        assert (await sub.call("sessions.messages.unsubscribe", {"key": key}))["ok"]
        await _turn(ws, key, "quiet", "us-1")
        await sub.barrier()
        assert not sub.events("session.message")
        await ws.close()
        await sub.close()
    run(main())


def test_a_run_outlives_the_socket_that_started_it(gateway):
    async def main():
        starter = await _operator(gateway.url)
        watcher = await _operator(gateway.url, scopes=("operator.read",))
        key = _key()
        await starter.call("chat.send", {"sessionKey": key, "message": " ".join(["w"] * 30),
                                         "idempotencyKey": "ol-1"})
        await watcher.event("chat", 10, lambda f: f["payload"]["runId"] == "ol-1")
        await starter.close()
        final = await watcher.event("chat", 15, lambda f: f["payload"]["runId"] == "ol-1"
                                    and f["payload"]["state"] in ("final", "aborted", "error"))
        assert final["payload"]["state"] == "final"
        await watcher.close()
    run(main())


def test_shutdown_aborts_runs_before_the_shutdown_event(gateway_server):
    gw = gateway_server("--token", TOKEN)

    async def main():
        ws = await _operator(gw.url)
        await ws.call("chat.send", {"sessionKey": _key(), "message": " ".join(["w"] * 300),
                                    "idempotencyKey": "sd-1"})
        await ws.event("chat", 10, lambda f: f["payload"]["runId"] == "sd-1")
        gw.process.send_signal(__import__("signal").SIGTERM)
        await ws.event("shutdown", 10)
        names = [(f["event"], f["payload"].get("state")) for f in ws.events()
                 if f["event"] in ("chat", "shutdown")]
        assert ("chat", "aborted") in names
        assert names.index(("chat", "aborted")) < names.index(("shutdown", None))
        await ws.wait_closed(5)
    run(main())


def test_a_turn_sets_the_sessions_token_counters(gateway):
    """The offline model reports its word counts: the row shows them (the reference's
    fields), its context window, no cost (it has none); the transcript message its usage."""
    async def main():
        ws = await _operator(gateway.url)
        key = _key()
        before = (await ws.call("sessions.create", {"key": key}))["payload"]["entry"]
        assert before["totalTokensFresh"] is False and before["contextTokens"] == 8192
        assert "inputTokens" not in before
        await _turn(ws, key, "count these four words", "usage-1")
        row = (await ws.call("sessions.describe", {"key": key}))["payload"]["session"]
        history = (await ws.call("chat.history", {"sessionKey": key}))["payload"]
        usage = history["messages"][-1]["usage"]
        assert usage["input"] == row["inputTokens"] > 0 and usage["output"] == row["outputTokens"]
        assert usage["totalTokens"] == usage["input"] + usage["output"]
        assert usage["cost"]["total"] == 0 and usage["cacheRead"] == 0
        answered = history["messages"][-1]
        assert (answered["provider"], answered["model"]) == ("krabfast", "offline")
        assert answered["api"]
        assert row["totalTokens"] == row["inputTokens"] and row["totalTokensFresh"] is True
        assert "estimatedCostUsd" not in row
        await ws.call("sessions.reset", {"key": key})
        row = (await ws.call("sessions.describe", {"key": key}))["payload"]["session"]
        assert (row["inputTokens"], row["outputTokens"], row["totalTokens"]) == (0, 0, 0)
        await ws.close()
    run(main())
