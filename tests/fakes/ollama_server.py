"""Fake Ollama server: native `POST {base_url}/api/chat` streaming NDJSON (last line
`done: true` with prompt_eval_count / eval_count). `start_fake_ollama(**behaviour)`;
also `python -m tests.fakes.ollama_server --port P`."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Behaviour, FakeServer, Flavour, main


def _line(data: dict) -> bytes:
    return json.dumps(data).encode() + b"\n"


class OllamaFlavour(Flavour):
    name = "ollama"
    stream_path = "/api/chat"
    content_type = "application/x-ndjson"

    def piece(self, text: str, body: Any) -> bytes:
        model = body.get("model") if isinstance(body, dict) else None
        return _line({"model": model, "created_at": "2026-01-01T00:00:00Z",
                      "message": {"role": "assistant", "content": text}, "done": False})

    def end(self, b: Behaviour, body: Any) -> list[bytes]:
        p, c = b.token_counts(body)
        model = body.get("model") if isinstance(body, dict) else None
        return [_line({"model": model, "created_at": "2026-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": ""}, "done": True,
                       "done_reason": b.finish_reason, "prompt_eval_count": p, "eval_count": c})]

    def malformed(self) -> bytes:
        return b'{"message": {"role": "assistant", "content": "trunc\n'

    def error_body(self, b: Behaviour) -> dict:
        return {"error": b.error_message}


def start_fake_ollama(host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> FakeServer:
    """base_url has no path (the backend appends /api/chat)."""
    return FakeServer(OllamaFlavour(), "", host, port, **behaviour).start()


if __name__ == "__main__":
    main("ollama", start_fake_ollama)
