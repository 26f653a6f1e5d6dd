"""Fake Anthropic Messages server: `POST {base_url}/v1/messages` streaming SSE events
(message_start, content_block_*, message_delta, message_stop). `start_fake_anthropic(**behaviour)`;
also `python -m tests.fakes.anthropic_server --port P`."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Behaviour, FakeServer, Flavour, main

STOP = {"stop": "end_turn", "length": "max_tokens"}


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class AnthropicFlavour(Flavour):
    name = "anthropic"
    stream_path = "/v1/messages"

    def start(self, b: Behaviour, body: Any) -> list[bytes]:
        p, _ = b.token_counts(body)
        model = body.get("model") if isinstance(body, dict) else None
        return [
            _event("message_start", {"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "usage": {"input_tokens": p, "output_tokens": 1}}}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
            _event("ping", {"type": "ping"}),
        ]

    def piece(self, text: str, body: Any) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": text}})

    def end(self, b: Behaviour, body: Any) -> list[bytes]:
        _, c = b.token_counts(body)
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": STOP.get(b.finish_reason, b.finish_reason)},
                                     "usage": {"output_tokens": c}}),
            _event("message_stop", {"type": "message_stop"}),
        ]

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {\n\n'

    def error_body(self, b: Behaviour) -> dict:
        kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(b.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": b.error_message}}


def start_fake_anthropic(host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> FakeServer:
    """base_url has no path (the backend appends /v1/messages)."""
    return FakeServer(AnthropicFlavour(), "", host, port, **behaviour).start()


if __name__ == "__main__":
    main("anthropic", start_fake_anthropic)
