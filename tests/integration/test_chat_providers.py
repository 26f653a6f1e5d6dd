"""Chat through a configured provider (a fake OpenAI-compatible server on loopback), with
the gateway configured from a reference-format openclaw.json: the request the provider
gets, provider errors ending the run cleanly, abort closing the model stream, one model
request per idempotency key, other sessions unaffected, and a completed turn surviving
`kill -9`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import pytest

from tests.fakes import start_fake_openai
from tests.integration.helpers import TOKEN, RawWS, run


@pytest.fixture
def fake():
    server = start_fake_openai(text="the fake model says hello", chunks=5, delay=0.01)
    yield server
    server.stop()


def _config(tmp_path, base_url: str) -> str:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({
        "gateway": {"auth": {"mode": "token", "token": TOKEN}},
        "models": {"providers": {"fake": {
            "baseUrl": base_url, "apiKey": "sk-test", "api": "openai-completions",
            "models": [{"id": "fake-1", "name": "Fake One"}]}}},
        "agents": {"defaults": {"model": {"primary": "fake/fake-1"}}},
    }))
    return str(path)


def _key() -> str:
    return f"agent:main:p-{uuid.uuid4().hex[:8]}"


async def _op(url):
    return await RawWS.connected(url, scopes=["operator.admin"], client_id="cli", mode="cli")


async def _final_or_error(ws, run_id, timeout=10):
    return await ws.event("chat", timeout, lambda f: f["payload"]["runId"] == run_id
                          and f["payload"]["state"] in ("final", "error", "aborted"))


def test_a_turn_through_the_configured_provider(gateway_server, tmp_path, fake):
    gw = gateway_server("--config", _config(tmp_path, fake.base_url))

    async def main():
        ws = await _op(gw.url)
        assert ws.hello["snapshot"]["sessionDefaults"]["modelConfigured"] is True
        key = _key()
        await ws.call("chat.send", {"sessionKey": key, "message": "first", "idempotencyKey": "a1"})
        final = await _final_or_error(ws, "a1")
        assert final["payload"]["state"] == "final"
        assert final["payload"]["message"]["content"][0]["text"] == "the fake model says hello"
        await ws.call("chat.send", {"sessionKey": key, "message": "second", "idempotencyKey": "a2"})
        await _final_or_error(ws, "a2")
        first, second = fake.requests[0], fake.requests[1]
        assert first.path == "/v1/chat/completions"
        assert first.headers["authorization"] == "Bearer sk-test"
        body = second.body
        assert body["model"] == "fake-1" and body["stream"] is True
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][1]["content"] == "the fake model says hello"
        models = (await ws.call("models.list", {}))["payload"]["models"]
        assert [(m["provider"], m["id"]) for m in models] == [("fake", "fake-1")]
        await ws.close()
    run(main())


@pytest.mark.parametrize("behaviour, words", [
    # (the reference's words for each, models/failure_copy.py)
    ({"mode": "status", "status": 401}, "authentication failed"),
    ({"mode": "status", "status": 429}, "rate limit reached"),
    ({"mode": "malformed"}, "agent run failed (model: fake/fake-1)"),
    ({"mode": "close_mid_stream"}, "interrupted"),
])
def test_provider_errors_end_the_run_with_an_error_event(gateway_server, tmp_path, fake,
                                                         behaviour, words):
    gw = gateway_server("--config", _config(tmp_path, fake.base_url))

    async def main():
        ws = await _op(gw.url)
        fake.enqueue(**behaviour)
        bad, good = _key(), _key()
        req = ws.request("agent", {"message": "x", "sessionKey": bad, "idempotencyKey": "e1"})
        # The enqueued failure is for the next request the fake reads: the agent's must be
        # that one (two connections to the fake are read in either order).
        for _ in range(200):
            if fake.requests:
                break
            await asyncio.sleep(0.01)
        await ws.call("chat.send", {"sessionKey": good, "message": "y", "idempotencyKey": "ok1"})
        err = await _final_or_error(ws, "e1")
        assert err["payload"]["state"] == "error"
        assert words in err["payload"]["errorMessage"].lower()
        await ws.response(req, 10)  # accepted
        final = await ws.response(req, 10)
        said = err["payload"]["errorMessage"]
        if behaviour["mode"] == "malformed":  # as the reference: an answer with an error
            assert final["ok"] and final["payload"]["status"] == "error"
            assert final["payload"]["result"]["payloads"][0] == {
                "text": said, "isError": True, "mediaUrl": None}
        else:  # as the reference: a failed answer, with a payload
            assert not final["ok"] and final["error"] == {"code": "UNAVAILABLE", "message": said}
            assert final["payload"] == {"runId": "e1", "status": "error", "summary": said}
        # The other session is unaffected.
        assert (await _final_or_error(ws, "ok1"))["payload"]["state"] == "final"
        await ws.close()
    run(main())


def test_connection_refused_is_an_error_not_a_hang(gateway_server, tmp_path):
    gw = gateway_server("--config", _config(tmp_path, "http://127.0.0.1:9/v1"))

    async def main():
        ws = await _op(gw.url)
        await ws.call("chat.send", {"sessionKey": _key(), "message": "x", "idempotencyKey": "r1"})
        err = await _final_or_error(ws, "r1")
        assert err["payload"]["state"] == "error" and "refused" in err["payload"]["errorMessage"]
        await ws.close()
    run(main())


def test_abort_closes_the_model_stream_and_one_key_is_one_request(gateway_server, tmp_path,
                                                                 fake):
    gw = gateway_server("--config", _config(tmp_path, fake.base_url))

    async def main():
        ws = await _op(gw.url)
        fake.set_behaviour(mode="hang")
        key = _key()
        await ws.call("chat.send", {"sessionKey": key, "message": "x", "idempotencyKey": "h1"})
        for _ in range(50):
            if fake.active_streams:
                break
            await asyncio.sleep(0.05)
        retry = await ws.call("chat.send", {"sessionKey": key, "message": "x",
                                            "idempotencyKey": "h1"})
        assert retry["payload"]["status"] == "in_flight"
        assert len(fake.requests) == 1
        res = await ws.call("chat.abort", {"sessionKey": key, "runId": "h1"})
        assert res["payload"]["runIds"] == ["h1"]
        assert (await _final_or_error(ws, "h1"))["payload"]["state"] == "aborted"
        assert await asyncio.to_thread(fake.wait_disconnect, 1, 3.0)
        assert len(fake.requests) == 1
        await ws.close()
    run(main())


def test_a_completed_turn_survives_kill_9(gateway_server, tmp_path, fake):
    state = tmp_path / "state"
    cfg = _config(tmp_path, fake.base_url)
    gw = gateway_server("--config", cfg, "--state-dir", str(state))
    key = _key()

    async def turn():
        ws = await _op(gw.url)
        await ws.call("chat.send", {"sessionKey": key, "message": "keep me", "idempotencyKey": "k1"})
        assert (await _final_or_error(ws, "k1"))["payload"]["state"] == "final"
        await ws.close()
    run(turn())
    os.kill(gw.process.pid, signal.SIGKILL)
    gw.process.wait(5)
    gw2 = gateway_server("--config", cfg, "--state-dir", str(state))

    async def after():
        ws = await _op(gw2.url)
        history = (await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[1]["content"][0]["text"] == "the fake model says hello"
        await ws.close()
    run(after())


def test_a_run_cut_by_a_crash_says_so_after_restart(gateway_server, tmp_path, fake):
    state = tmp_path / "state"
    cfg = _config(tmp_path, fake.base_url)
    gw = gateway_server("--config", cfg, "--state-dir", str(state))
    key = _key()
    fake.set_behaviour(mode="hang")

    async def start():
        ws = await _op(gw.url)
        await ws.call("chat.send", {"sessionKey": key, "message": "cut", "idempotencyKey": "c1"})
        for _ in range(50):
            if fake.active_streams:
                break
            await asyncio.sleep(0.05)
        await ws.call("health")  # the run is streaming; its start is queued for the disk
        await asyncio.sleep(0.3)  # let the writer thread commit it
        await ws.close()
    run(start())
    os.kill(gw.process.pid, signal.SIGKILL)
    gw.process.wait(5)
    fake.set_behaviour(mode="ok")
    gw2 = gateway_server("--config", cfg, "--state-dir", str(state))

    async def after():
        ws = await _op(gw2.url)
        history = (await ws.call("chat.history", {"sessionKey": key}))["payload"]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[1]["stopReason"] == "interrupted"
        assert "interrupted" in history[1]["content"][0]["text"]
        await ws.close()
    run(after())
