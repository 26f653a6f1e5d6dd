"""Fake OpenAI-compatible server: `POST {base_url}/chat/completions` streaming SSE.

    server = start_fake_openai(text="Hi there", chunks=2)   # base_url ends with /v1
    ...; server.requests[-1].body["model"]; server.set_behaviour(mode="status", status=429)
    server.stop()

Also `python -m tests.fakes.openai_server --port P --text ...` (prints the base URL).
See tests/fakes/_server.py `Behaviour` for the modes.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Behaviour, FakeServer, Flavour, main


def _sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


class OpenAIFlavour(Flavour):
    name = "openai"
    stream_path = "/chat/completions"

    def _chunk(self, body: Any, delta: dict, finish: str | None = None) -> bytes:
        model = body.get("model") if isinstance(body, dict) else None
        return _sse({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })

    def start(self, b: Behaviour, body: Any) -> list[bytes]:
        return [self._chunk(body, {"role": "assistant", "content": ""})]

    def piece(self, text: str, body: Any) -> bytes:
        return self._chunk(body, {"content": text})

    def end(self, b: Behaviour, body: Any) -> list[bytes]:
        out = [self._chunk(body, {}, b.finish_reason)]
        opts = body.get("stream_options") if isinstance(body, dict) else None
        if isinstance(opts, dict) and opts.get("include_usage"):
            p, c = b.token_counts(body)
            out.append(_sse({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }))
        out.append(_sse(b"[DONE]"))
        return out

    def error_body(self, b: Behaviour) -> dict:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(b.status, "server_error")
        return {"error": {"message": b.error_message, "type": kind, "code": b.status}}

    def non_stream(self, b: Behaviour, body: Any) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": b.text}, "finish_reason": "stop"}]}


def start_fake_openai(host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> FakeServer:
    """Start the fake on host:port (0: a free port); `behaviour`: fields of `Behaviour`."""
    return FakeServer(OpenAIFlavour(), "/v1", host, port, **behaviour).start()


if __name__ == "__main__":
    main("openai", start_fake_openai)
