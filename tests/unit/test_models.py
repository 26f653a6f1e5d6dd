"""krabfast.models: the offline model, the catalog (config shape, validation, resolution)
and backend plugins through the `krabfast.model_backends` entry point group."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
import time

import pytest

from krabfast.models import (
    OFFLINE_MODEL,
    ChatMessage,
    Finish,
    ModelCatalog,
    ModelRequest,
    OfflineBackend,
    ProviderError,
    TextDelta,
    Usage,
)
from krabfast.models.base import error_for_status
from krabfast.models.offline import reply_text


def collect(backend, request):
    async def run():
        return [ev async for ev in backend.stream(request)]

    return asyncio.run(run())


def req(*texts, model="m", **kw):
    roles = ["user", "assistant"]
    return ModelRequest(model, [ChatMessage(roles[i % 2], t) for i, t in enumerate(texts)], **kw)


# -- offline model ------------------------------------------------------------------------


def test_offline_reply_says_what_it_is_and_transforms_the_prompt():
    events = collect(OfflineBackend(delay=0), req("first turn", "an answer", "hello big world"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    text = "".join(d.text for d in deltas)
    assert text == (
        'krabfast offline model (no network, no LLM): you said "hello big world". '
        "Your words reversed: world big hello"
    )
    assert len(deltas) == len(text.split(" "))  # word by word
    assert events[-2:] == [Usage(7, len(deltas), 7 + len(deltas)), Finish("stop")]


def test_offline_is_deterministic_and_handles_empty_prompt():
    r = req("  same   words ")
    assert collect(OfflineBackend(0), r) == collect(OfflineBackend(0), r)
    assert "you said \"same words\"" in reply_text(r)
    assert reply_text(ModelRequest("m", [])).endswith("you sent an empty message.")


def test_offline_max_tokens_stops_with_length():
    events = collect(OfflineBackend(0), req("a b c d e f", max_tokens=3))
    assert sum(isinstance(e, TextDelta) for e in events) == 3
    assert events[-1] == Finish("length")
    assert events[-2].output_tokens == 3


def test_offline_delay_per_word():
    r = req("x")
    n = len(reply_text(r).split(" "))
    t = time.monotonic()
    collect(OfflineBackend(delay=0.01), r)
    assert time.monotonic() - t >= n * 0.01 * 0.9


def test_offline_cancel_is_immediate():
    async def run():
        got = []

        async def consume():
            async for ev in OfflineBackend(delay=10).stream(req("hi")):
                got.append(ev)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        t = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got, time.monotonic() - t

    got, elapsed = asyncio.run(run())
    assert got == [] and elapsed < 0.5


# -- catalog ----------------------------------------------------------------------------------

LOCAL = {
    "providers": {
        "local": {
            "baseUrl": "http://127.0.0.1:9/v1",
            "apiKey": "sk-local",
            "models": [
                {"id": "gpt-fake", "name": "Fake GPT", "contextWindow": 32000, "maxTokens": 2048,
                 "input": ["text", "image"], "cost": {"input": 0, "output": 0}},
                {"id": "other"},
            ],
        },
        "cloud": {
            "baseUrl": "https://llm.example.com/v1",
            "api": "anthropic-messages",
            "models": [{"id": "big"}, {"id": "vendor/nested-id"}],
        },
    }
}


def test_nothing_configured_uses_offline_model():
    for cat in (ModelCatalog.from_config(None), ModelCatalog.from_config({}),
                ModelCatalog.from_config({"providers": {}})):
        assert not cat.configured
        assert cat.default.id == "krabfast/offline"
        assert cat.default.name == "krabfast offline model (no network)"
        assert [m.id for m in cat.list()] == ["krabfast/offline"]
        backend, info = cat.resolve(None)
        assert isinstance(backend, OfflineBackend) and info.id == "krabfast/offline"
        assert "default" in info.tags


def test_configured_models_and_primary():
    cat = ModelCatalog.from_config(LOCAL, "cloud/big")
    assert cat.configured
    assert [m.id for m in cat.list()] == ["local/gpt-fake", "local/other", "cloud/big", "cloud/vendor/nested-id"]
    assert cat.default.id == "cloud/big" and "default" in cat.default.tags
    fake = cat.list()[0]
    assert (fake.provider, fake.name, fake.context_window, fake.max_tokens, fake.input, fake.local) == (
        "local", "Fake GPT", 32000, 2048, ["text", "image"], True)
    assert fake.model_id == "gpt-fake" and fake.api == "openai-completions"
    assert fake.as_dict() == {
        "id": "gpt-fake", "name": "Fake GPT", "provider": "local", "contextWindow": 32000,
        "reasoning": False, "thinkingLevels": [{"id": "off", "label": "off"}],
        "thinkingDefault": "off", "available": True}
    assert fake.as_dict(details=True)["local"] is True
    other = cat.list()[1]
    assert other.name == "other" and other.context_window is None and other.input == ["text"]
    assert "contextWindow" not in other.as_dict()  # shown only when configured
    assert cat.list()[2].local is False
    backend, info = cat.resolve(None)
    assert backend.api == "anthropic-messages" and info.id == "cloud/big"
    assert cat.resolve("cloud/vendor/nested-id")[1].model_id == "vendor/nested-id"
    assert cat.resolve("gpt-fake")[1].id == "local/gpt-fake"  # unique bare model id
    b1, _ = cat.resolve("local/gpt-fake")
    b2, _ = cat.resolve("local/other")
    assert b1 is b2 and b1.api == "openai-completions"  # one backend per provider
    assert "krabfast/offline" not in [m.id for m in cat.list()]
    assert cat.resolve("krabfast/offline")[1] == OFFLINE_MODEL  # still reachable by name
    asyncio.run(cat.aclose())


def test_default_is_first_model_without_primary_and_stale_primary_falls_back():
    assert ModelCatalog.from_config(LOCAL).default.id == "local/gpt-fake"
    cat = ModelCatalog.from_config(LOCAL, "gone/model")
    assert cat.default.id == "local/gpt-fake"
    assert cat.warnings and "Unknown model: gone/model" in cat.warnings[0]


def test_unknown_ref_raises_provider_error():
    cat = ModelCatalog.from_config(LOCAL)
    for ref in ("local/nope", "nobody/x", "nope"):
        with pytest.raises(ProviderError) as e:
            cat.resolve(ref)
        assert e.value.kind == "provider"
        assert f"Unknown model: {ref}." in str(e.value) and "local/gpt-fake" in str(e.value)
    with pytest.raises(ProviderError, match="No models are configured"):
        ModelCatalog.from_config(None).resolve("local/gpt-fake")


def test_provider_without_model_list_accepts_any_model():
    cat = ModelCatalog.from_config({"providers": {"lm": {"baseUrl": "http://localhost:1234/v1"}}}, "lm/qwen")
    assert cat.configured and cat.default.id == "lm/qwen" and cat.default.model_id == "qwen"
    assert cat.resolve("lm/anything")[1].model_id == "anything"


def test_api_defaults():
    cat = ModelCatalog.from_config({"providers": {
        "ollama": {"models": [{"id": "llama3"}]},
        "anthropic": {"apiKey": "k", "models": [{"id": "claude"}]},
        "openai": {"apiKey": "k", "models": [{"id": "gpt"}]},
    }})
    apis = {m.provider: m.api for m in cat.list()}
    assert apis == {"ollama": "ollama", "anthropic": "anthropic-messages", "openai": "openai-completions"}
    assert cat.resolve("ollama/llama3")[0].base_url == "http://127.0.0.1:11434"
    assert cat.resolve("ollama/llama3")[1].local
    assert cat.resolve("anthropic/claude")[0].base_url == "https://api.anthropic.com"
    assert cat.resolve("openai/gpt")[0].base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize("models, message", [
    ({"providers": {"local": {"baseUrl": "http://h/v1", "api": "foo"}}},
     'models.providers.local.api: unknown api "foo" (use openai-completions, anthropic-messages, ollama)'),
    ("x", "models: expected an object"),
    ({"providers": []}, "models.providers: expected an object"),
    ({"providers": {"p": 3}}, "models.providers.p: expected an object"),
    ({"providers": {"p": {"baseUrl": "ftp://h"}}}, "models.providers.p.baseUrl: expected an http(s) URL"),
    ({"providers": {"p": {}}}, "models.providers.p.baseUrl: required for api openai-completions"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": {}}}}, "models.providers.p.models: expected a list"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"name": "n"}]}}}, "models.providers.p.models[0].id: required"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"id": "a"}, {"id": "a"}]}}},
     'models.providers.p.models[1].id: duplicate model id "a"'),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"id": "a", "contextWindow": -1}]}}},
     "models.providers.p.models[0].contextWindow: expected a positive integer"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"id": "a", "maxTokens": "big"}]}}},
     "models.providers.p.models[0].maxTokens: expected a positive integer"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"id": "a", "input": "text"}]}}},
     "models.providers.p.models[0].input: expected a list of strings"),
    ({"providers": {"p": {"baseUrl": "http://h", "models": [{"id": "a", "reasoning": "yes"}]}}},
     "models.providers.p.models[0].reasoning: expected true or false"),
    ({"providers": {"p": {"baseUrl": "http://h", "headers": {"x": None}}}}, "models.providers.p.headers: expected an object"),
    ({"providers": {"p": {"baseUrl": "http://h", "timeoutSeconds": 0}}}, "models.providers.p.timeoutSeconds: expected a positive number"),
    ({"providers": {"p": {"baseUrl": "http://h", "apiKey": 5}}}, "models.providers.p.apiKey: expected a string"),
    ({"providers": {"a/b": {"baseUrl": "http://h"}}}, "models.providers.a/b: a provider id must be non-empty"),
])
def test_config_validation_names_the_key_path(models, message):
    with pytest.raises(ValueError) as e:
        ModelCatalog.from_config(models)
    assert str(e.value).startswith(message), str(e.value)


def test_a_model_says_whether_it_reasons_and_info_names_it_without_a_backend():
    cat = ModelCatalog.from_config({"providers": {"p": {"baseUrl": "http://127.0.0.1:9/v1", "models": [
        {"id": "thinker", "reasoning": True}, {"id": "plain", "reasoning": False}, {"id": "quiet"}]}}})
    assert [cat.info(f"p/{m}").reasoning for m in ("thinker", "plain", "quiet")] == [True, False, False]
    assert cat.info(None) is cat.default and cat.info("plain").id == "p/plain"
    assert ModelCatalog.from_config(None).info(None).reasoning is False  # the offline model
    assert not cat._backends  # looked up, nothing started


def test_primary_must_be_a_string():
    with pytest.raises(ValueError, match="agents.defaults.model.primary"):
        ModelCatalog.from_config(LOCAL, 42)


def test_api_key_from_env(monkeypatch):
    monkeypatch.setenv("KRABFAST_TEST_KEY", "sk-env")
    cat = ModelCatalog.from_config({"providers": {
        "a": {"baseUrl": "http://h/v1", "apiKey": "${KRABFAST_TEST_KEY}", "models": [{"id": "m"}]},
        "b": {"baseUrl": "http://h/v1", "apiKey": {"source": "env", "id": "KRABFAST_TEST_KEY"}, "models": [{"id": "n"}]},
    }})
    assert cat.resolve("a/m")[0].api_key == "sk-env"
    assert cat.resolve("b/n")[0].api_key == "sk-env"


@pytest.mark.parametrize("status, kind", [
    (401, "auth"), (403, "auth"), (429, "rate_limit"), (408, "timeout"), (500, "provider"),
    (503, "provider"), (400, "provider"), (404, "provider"),
])
def test_error_for_status(status, kind):
    err = error_for_status(status, '  detail text ', "p")
    assert (err.kind, err.status, err.provider) == (kind, status, "p")
    assert f"HTTP {status}" in err.message and "detail text" in err.message


def test_error_messages_follow_the_reference():
    assert error_for_status(401).message.startswith("LLM request unauthorized.")
    assert error_for_status(429).message.startswith("LLM request rate limited.")
    assert error_for_status(502).message.startswith("LLM request failed: provider returned an internal error.")
    assert error_for_status(400, "bad field").message.startswith("LLM request rejected: bad field")
    with pytest.raises(ValueError):
        ProviderError("x", kind="nonsense")


def test_importing_models_does_not_import_httpx():
    code = textwrap.dedent("""
        import sys
        from krabfast.models import ModelCatalog
        cat = ModelCatalog.from_config({"providers": {
            "a": {"baseUrl": "http://127.0.0.1:9/v1", "models": [{"id": "m"}]},
            "b": {"api": "anthropic-messages", "models": [{"id": "m"}]},
            "c": {"api": "ollama", "models": [{"id": "m"}]}}})
        for ref in ("a/m", "b/m", "c/m"):
            cat.resolve(ref)
        assert "httpx" not in sys.modules and "httpx_sse" not in sys.modules, "httpx imported"
        assert "aiohttp" not in sys.modules, "aiohttp imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# -- plugins ----------------------------------------------------------------------------------

PLUGIN = '''
from krabfast.models.base import Finish, TextDelta

class EchoBackend:
    api = "echo-test"
    closed = False

    def __init__(self, provider_id, config):
        self.provider_id, self.config = provider_id, config

    async def stream(self, request):
        yield TextDelta(f"{self.provider_id}:{request.model}:{self.config['greeting']}")
        yield Finish("stop")

    async def aclose(self):
        EchoBackend.closed = True


def make_backend(provider_id, config):
    return EchoBackend(provider_id, config)


def make_broken(provider_id, config):
    raise RuntimeError("no such device")
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    (tmp_path / "krabfast_echo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "krabfast_echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: krabfast-echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[krabfast.model_backends]\necho-test = krabfast_echo_plugin:make_backend\n"
        "broken-test = krabfast_echo_plugin:make_broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("krabfast_echo_plugin", None)


def test_plugin_backend_from_entry_point(plugin_dist):
    cat = ModelCatalog.from_config(
        {"providers": {"mine": {"api": "echo-test", "greeting": "hi", "models": [{"id": "e1"}]}}}
    )
    backend, info = cat.resolve("mine/e1")
    assert info.api == "echo-test" and backend.api == "echo-test"
    assert type(backend).__module__ == "krabfast_echo_plugin"
    events = collect(backend, ModelRequest("e1", [ChatMessage("user", "x")]))
    assert events == [TextDelta("mine:e1:hi"), Finish("stop")]
    asyncio.run(cat.aclose())
    assert type(backend).closed


def test_unknown_api_lists_plugins(plugin_dist):
    with pytest.raises(ValueError) as e:
        ModelCatalog.from_config({"providers": {"p": {"baseUrl": "http://h", "api": "nope"}}})
    assert str(e.value) == (
        'models.providers.p.api: unknown api "nope" (use openai-completions, anthropic-messages, ollama, broken-test, echo-test)'
    )


def test_builtin_backends_satisfy_the_protocol():
    from krabfast.models import Backend

    cat = ModelCatalog.from_config({"providers": {
        "a": {"baseUrl": "http://127.0.0.1:9/v1", "models": [{"id": "m"}]},
        "b": {"api": "anthropic-messages", "models": [{"id": "m"}]},
        "c": {"api": "ollama", "models": [{"id": "m"}]}}})
    backends = [cat.resolve(r)[0] for r in ("a/m", "b/m", "c/m", "krabfast/offline")]
    assert [b.api for b in backends] == ["openai-completions", "anthropic-messages", "ollama", "krabfast-offline"]
    assert all(isinstance(b, Backend) for b in backends)


def test_plugin_factory_failure_is_a_provider_error(plugin_dist):
    cat = ModelCatalog.from_config({"providers": {"mine": {"api": "broken-test", "models": [{"id": "e1"}]}}})
    with pytest.raises(ProviderError) as e:
        cat.resolve("mine/e1")
    assert e.value.kind == "provider" and e.value.provider == "mine"
    assert 'backend "broken-test" for provider mine failed to start (no such device)' in e.value.message


# -- stream parsing (krabfast/models/_http.py) ----------------------------------------------------


class _Body:
    def __init__(self, chunks):
        self.chunks = chunks

    async def iter_any(self):
        for chunk in self.chunks:
            yield chunk


class _Response:
    def __init__(self, chunks, content_type="text/event-stream; charset=utf-8"):
        self.headers = {"content-type": content_type}
        self.content = _Body(chunks)


def _sse(chunks, **kw):
    from krabfast.models._http import sse_events

    async def go():
        return [(e.event, e.data) async for e in sse_events(_Response(chunks, **kw), "p")]
    return asyncio.run(go())


def test_sse_events_across_chunk_boundaries_and_line_endings():
    body = ("event: a\r\ndata: h\u00e9llo\r\n\r\ndata: one\ndata: two\n\n: comment\n\n"
            "data: x\r\rdata: tail").encode()
    # the last event, unterminated, is not dispatched
    expected = [("a", "h\u00e9llo"), ("message", "one\ntwo"), ("message", "x")]
    assert _sse([body]) == expected
    assert _sse([body[i:i + 1] for i in range(len(body))]) == expected  # split everywhere, even inside "é"


def test_sse_events_need_an_event_stream():
    with pytest.raises(ProviderError) as e:
        _sse([b"{}"], content_type="application/json")
    assert e.value.kind == "bad_response"


def test_ndjson_lines_across_chunk_boundaries():
    from krabfast.models._http import ndjson_lines

    async def go(chunks):
        return [line async for line in ndjson_lines(_Response(chunks))]
    lines = asyncio.run(go([b'{"a":1}\n{"b"', b':2}\r\n\n{"c":3}']))
    assert lines == [b'{"a":1}', b'{"b":2}\r', b"", b'{"c":3}']
