"""The HTTP model backends against the fake provider servers (tests/fakes/): streamed text
and usage, the request each sends, error mapping to ProviderError kinds, timeouts, and that
cancelling a stream closes its connection at once."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from krabfast.models import ChatMessage, Finish, ModelCatalog, ModelRequest, ProviderError, TextDelta, Usage
from tests.fakes import start_fake_anthropic, start_fake_ollama, start_fake_openai

APIS = {
    "openai-completions": start_fake_openai,
    "anthropic-messages": start_fake_anthropic,
    "ollama": start_fake_ollama,
}
MESSAGES = [
    ChatMessage("system", "be brief"),
    ChatMessage("user", "first question"),
    ChatMessage("assistant", "first answer"),
    ChatMessage("user", "second question here"),
]


@pytest.fixture(params=list(APIS))
def api(request):
    return request.param


@pytest.fixture
def fake(api):
    server = APIS[api]()
    yield server
    server.stop()


def catalog(api, base_url, **provider):
    cfg = {"baseUrl": base_url, "api": api, "apiKey": "sk-test", "models": [{"id": "fake-model"}]}
    cfg.update(provider)
    return ModelCatalog.from_config({"providers": {"prov": cfg}}, "prov/fake-model")


async def collect(cat, request=None):
    backend, info = cat.resolve("prov/fake-model")
    try:
        return [ev async for ev in backend.stream(request or ModelRequest(info.model_id, list(MESSAGES)))]
    finally:
        await cat.aclose()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def provider_error(api, base_url, **provider) -> ProviderError:
    with pytest.raises(ProviderError) as e:
        run(collect(catalog(api, base_url, **provider)))
    return e.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- streaming --------------------------------------------------------------------------------


def test_streams_text_usage_and_finish(api, fake):
    fake.set_behaviour(text="Hello there, krabfast user!", chunks=4, usage=(11, 4))
    events = run(collect(catalog(api, fake.base_url)))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "Hello there, krabfast user!"
    assert len(deltas) == 4
    assert events[-2:] == [Usage(11, 4, 15), Finish("stop")]
    # The fake (its own thread) records the stream's end after its last write, which the
    # client may have read already: wait for that record.
    assert fake.wait_streams_done() and fake.streams[-1].completed


def test_length_finish_is_mapped(api, fake):
    fake.set_behaviour(finish_reason="length")
    events = run(collect(catalog(api, fake.base_url)))
    assert events[-1] == Finish("length")


def test_deltas_arrive_as_they_are_streamed(api, fake):
    fake.set_behaviour(chunks=3, delay=0.2)

    async def go():
        cat = catalog(api, fake.base_url)
        backend, _ = cat.resolve(None)
        times = []
        t0 = time.monotonic()
        async for ev in backend.stream(ModelRequest("fake-model", MESSAGES)):
            if isinstance(ev, TextDelta):
                times.append(time.monotonic() - t0)
        await cat.aclose()
        return times

    times = run(go())
    assert len(times) == 3
    assert times[0] < times[2] - 0.3  # not buffered until the end


def test_concurrent_streams(api, fake):
    fake.set_behaviour(chunks=3, delay=0.1)

    async def go():
        cat = catalog(api, fake.base_url)
        backend, _ = cat.resolve(None)

        async def one():
            return [ev async for ev in backend.stream(ModelRequest("fake-model", MESSAGES))]

        results = await asyncio.gather(one(), one(), one())
        await cat.aclose()
        return results

    results = run(go())
    assert all(r[-1] == Finish("stop") for r in results)
    assert fake.max_active_streams == 3


# -- request shape ---------------------------------------------------------------------------


def test_openai_request_shape():
    with start_fake_openai() as fake:
        run(collect(catalog("openai-completions", fake.base_url, headers={"X-Title": "krabfast"}),
                    ModelRequest("fake-model", MESSAGES, max_tokens=50, temperature=0.5)))
        r = fake.requests[-1]
        assert (r.method, r.path) == ("POST", "/v1/chat/completions")
        assert r.headers["authorization"] == "Bearer sk-test"
        assert r.headers["x-title"] == "krabfast"
        assert r.body == {
            "model": "fake-model",
            "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 50,  # the reference's field for this api
            "temperature": 0.5,
        }
        # No thinking field for a custom OpenAI-compatible server (nor on the reference).
        run(collect(catalog("openai-completions", fake.base_url, apiKey=None),
                    ModelRequest("fake-model", MESSAGES, thinking="high")))
        assert "authorization" not in fake.requests[-1].headers
        assert set(fake.requests[-1].body) == {"model", "messages", "stream", "stream_options"}


def test_anthropic_request_shape():
    with start_fake_anthropic() as fake:
        run(collect(catalog("anthropic-messages", fake.base_url, headers={"anthropic-beta": "x"}),
                    ModelRequest("fake-model", MESSAGES, max_tokens=77)))
        r = fake.requests[-1]
        assert (r.method, r.path) == ("POST", "/v1/messages")
        assert r.headers["x-api-key"] == "sk-test"
        assert r.headers["anthropic-version"] == "2023-06-01"
        assert r.headers["anthropic-beta"] == "x"
        assert "authorization" not in r.headers
        assert r.body == {
            "model": "fake-model",
            "max_tokens": 77,
            "system": "be brief",
            "messages": [{"role": m.role, "content": m.content} for m in MESSAGES[1:]],
            "stream": True,
        }
        run(collect(catalog("anthropic-messages", fake.base_url + "/v1")))
        assert fake.requests[-1].path == "/v1/messages"  # a baseUrl ending in /v1 is not doubled
        assert fake.requests[-1].body["max_tokens"] == 8192
        assert "thinking" not in fake.requests[-1].body  # a model that does not reason


@pytest.mark.parametrize("level, max_tokens, thinking", [
    ("off", 8192, {"type": "disabled"}),
    ("minimal", 8192, {"type": "enabled", "budget_tokens": 1024}),
    ("low", 2222, {"type": "enabled", "budget_tokens": 2048}),
    ("medium", 8192, {"type": "enabled", "budget_tokens": 7168}),  # cut to leave 1024
    ("high", 8192, {"type": "enabled", "budget_tokens": 7168}),
    ("high", 40000, {"type": "enabled", "budget_tokens": 16384}),
])
def test_anthropic_thinking_as_the_reference_sends_it(level, max_tokens, thinking):
    with start_fake_anthropic() as fake:
        run(collect(catalog("anthropic-messages", fake.base_url),
                    ModelRequest("fake-model", MESSAGES, max_tokens=max_tokens, thinking=level)))
        body = fake.requests[-1].body
        assert (body["max_tokens"], body["thinking"]) == (max_tokens, thinking)


def test_ollama_request_shape():
    with start_fake_ollama() as fake:
        run(collect(catalog("ollama", fake.base_url + "/v1", apiKey="ollama-local"),
                    ModelRequest("fake-model", MESSAGES, max_tokens=20, temperature=0.1)))
        r = fake.requests[-1]
        assert (r.method, r.path) == ("POST", "/api/chat")
        assert r.body == {
            "model": "fake-model",
            "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
            "stream": True,
            # As the reference: no output cap, no prompt truncation or shift, no thinking
            # for a model that does not reason.
            "options": {"temperature": 0.1},
            "truncate": False,
            "shift": False,
            "think": False,
        }
        thinks = []
        for level in ("off", "minimal", "low", "medium", "high"):
            run(collect(catalog("ollama", fake.base_url),
                        ModelRequest("fake-model", MESSAGES, thinking=level)))
            thinks.append(fake.requests[-1].body["think"])
        assert thinks == [False, "low", "low", "medium", "high"]
        assert fake.requests[-1].body["options"] == {}


# -- errors -------------------------------------------------------------------------------------


def test_401_is_auth(api, fake):
    fake.set_behaviour(mode="status", status=401, error_message="invalid key xyz")
    err = provider_error(api, fake.base_url)
    assert (err.kind, err.status, err.provider) == ("auth", 401, "prov")
    assert err.message.startswith("LLM request unauthorized.") and "invalid key xyz" in err.message


def test_429_is_rate_limit(api, fake):
    fake.set_behaviour(mode="status", status=429, error_message="slow down")
    err = provider_error(api, fake.base_url)
    assert (err.kind, err.status) == ("rate_limit", 429)
    assert err.message.startswith("LLM request rate limited.") and "slow down" in err.message


def test_500_is_provider(api, fake):
    fake.set_behaviour(mode="status", status=500, error_message="boom")
    err = provider_error(api, fake.base_url)
    assert (err.kind, err.status) == ("provider", 500)


def test_connection_refused(api):
    err = provider_error(api, f"http://127.0.0.1:{free_port()}")
    assert err.kind == "connection" and err.status is None
    assert err.message.startswith("LLM request failed: connection refused by the provider endpoint.")


def test_closed_mid_stream(api, fake):
    fake.set_behaviour(mode="close_mid_stream", chunks=4, chunks_before_close=2)
    err = provider_error(api, fake.base_url)
    assert err.kind == "connection"
    assert err.message.startswith("LLM request failed: network connection was interrupted.")


def test_malformed_stream(api, fake):
    fake.set_behaviour(mode="malformed")
    err = provider_error(api, fake.base_url)
    assert err.kind == "bad_response"
    assert err.message.startswith("LLM streaming response contained a malformed fragment.")
    assert fake.wait_disconnect(1, timeout=2)


def test_not_a_stream(api, fake):
    fake.set_behaviour(mode="not_stream")
    err = provider_error(api, fake.base_url)
    assert err.kind == "bad_response"


def test_idle_timeout(api, fake):
    fake.set_behaviour(mode="hang")
    t = time.monotonic()
    err = provider_error(api, fake.base_url, timeoutSeconds=0.3)
    assert err.kind == "timeout" and err.message.startswith("LLM request timed out.")
    assert time.monotonic() - t < 3
    assert fake.wait_disconnect(1, timeout=2)


def test_slow_headers_timeout(api, fake):
    fake.set_behaviour(mode="slow_headers", delay=2)
    err = provider_error(api, fake.base_url, timeoutSeconds=0.3)
    assert err.kind == "timeout"


# -- cancellation ---------------------------------------------------------------------------------


def test_cancel_closes_the_stream_at_once(api, fake):
    check_cancel(api, fake, run)


def test_cancel_under_uvloop():
    uvloop = pytest.importorskip("uvloop")
    with start_fake_openai() as fake:
        check_cancel("openai-completions", fake, lambda coro: uvloop.run(asyncio.wait_for(coro, 20)))


def check_cancel(api, fake, runner):
    fake.set_behaviour(mode="hang")

    async def go():
        cat = catalog(api, fake.base_url)
        backend, _ = cat.resolve(None)
        first = asyncio.Event()

        async def consume():
            async for ev in backend.stream(ModelRequest("fake-model", MESSAGES)):
                if isinstance(ev, TextDelta):
                    first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        assert fake.active_streams == 1
        t = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_in = time.monotonic() - t
        # the fake sees the disconnect while the backend (and its client) is still open
        seen = await asyncio.to_thread(fake.wait_disconnect, 1, 1.0)
        seen_in = time.monotonic() - t
        await cat.aclose()
        return cancelled_in, seen, seen_in

    cancelled_in, seen, seen_in = runner(go())
    assert cancelled_in < 0.5
    assert seen and seen_in < 1.0
    assert fake.streams[-1].disconnected and fake.active_streams == 0


def test_backend_reusable_after_cancel(api, fake):
    async def go():
        cat = catalog(api, fake.base_url)
        backend, _ = cat.resolve(None)
        fake.set_behaviour(mode="hang")
        task = asyncio.create_task(anext(aiter(backend.stream(ModelRequest("fake-model", MESSAGES)))))
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fake.set_behaviour(mode="ok")
        events = [ev async for ev in backend.stream(ModelRequest("fake-model", MESSAGES))]
        await cat.aclose()
        return events

    assert run(go())[-1] == Finish("stop")


# -- connection reuse ---------------------------------------------------------------------------


def test_finished_streams_reuse_their_connection():
    """A stream read to its end returns its keep-alive connection to the pool: the next
    request does not pay a TCP connect (the bench's fake model keeps connections alive)."""
    from krabfast.bench.fakemodel import Server

    async def go():
        fake = Server(chunks=3, delay=0.0)
        connections = []

        async def handle(reader, writer):
            connections.append(writer)
            await fake.handle(reader, writer)

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        cat = catalog("openai-completions", f"http://127.0.0.1:{port}/v1")
        backend, _ = cat.resolve(None)
        try:
            runs = []
            for _ in range(3):
                runs.append([ev async for ev in backend.stream(ModelRequest("fake-model", MESSAGES))])
        finally:
            await cat.aclose()
            srv.close()
            await srv.wait_closed()
        return runs, len(connections), fake.streams

    runs, connections, streams = run(go())
    assert streams == 3 and connections == 1
    for events in runs:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "tok00 tok01 tok02 "
        assert events[-1] == Finish("stop")
