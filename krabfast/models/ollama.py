"""api "ollama": Ollama's native streaming `POST {baseUrl}/api/chat` (NDJSON).

Default base URL http://127.0.0.1:11434; a trailing "/v1" (the OpenAI-compatible path,
which the reference warns against) is dropped. The last line has `done: true`,
`done_reason` and the `prompt_eval_count` / `eval_count` token counts.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from orjson import loads

from krabfast.models._http import HttpBackend, drain, ndjson_lines
from krabfast.models.base import (
    Finish,
    ModelRequest,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
    invalid_stream,
    malformed,
)

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
# Thinking levels as Ollama names them (it has no "minimal" or "max").
_OLLAMA_THINK = {"minimal": "low", "max": "high"}


class OllamaBackend(HttpBackend):
    """A local (or remote) Ollama server."""

    api = "ollama"
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, provider_id: str, config: dict[str, Any]) -> None:
        super().__init__(provider_id, config)
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]

    def request_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/x-ndjson"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, request: ModelRequest) -> dict[str, Any]:
        # As the reference sends it: no output cap (max_tokens is not passed on), the
        # prompt never truncated or shifted, and `think` from the thinking level.
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        level = request.thinking
        return {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "options": options,
            "truncate": False,
            "shift": False,
            "think": False if level in (None, "off") else _OLLAMA_THINK.get(level, level),
        }

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        provider = self.provider_id
        async with self.post_stream(f"{self.base_url}/api/chat", self.body(request)) as resp:
            lines = ndjson_lines(resp)
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    data = loads(line)
                except ValueError:
                    raise malformed(f"not JSON: {line[:80]!r}", provider) from None
                if not isinstance(data, dict):
                    raise malformed(f"not an object: {line[:80]!r}", provider)
                if data.get("error"):
                    text = str(data["error"])
                    raise ProviderError(
                        f"LLM request rejected: {text}", kind="provider", provider=provider, detail=text
                    )
                message = data.get("message") or {}
                if not isinstance(message, dict):
                    raise malformed("message is not an object", provider)
                text = message.get("content")
                if text:
                    yield TextDelta(str(text))
                if data.get("done"):
                    inp = int(data.get("prompt_eval_count") or 0)
                    out = int(data.get("eval_count") or 0)
                    reason = data.get("done_reason") or "stop"
                    yield Usage(inp, out, inp + out)
                    yield Finish("length" if reason == "length" else str(reason))
                    await drain(lines)  # the tail, so the connection is reused
                    return
        raise invalid_stream("stream ended before done", provider)
