"""api "openai-completions": streaming `POST {baseUrl}/chat/completions` (SSE).

Sends `stream: true` and `stream_options.include_usage`, `Authorization: Bearer <apiKey>`
(omitted without a key) and the provider's `headers`. `data: [DONE]` ends the stream.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from krabfast.models._http import HttpBackend
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

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    inp = int(data.get("prompt_tokens") or 0)
    out = int(data.get("completion_tokens") or 0)
    return Usage(inp, out, int(data.get("total_tokens") or inp + out))


class OpenAIBackend(HttpBackend):
    """An OpenAI-compatible chat completions endpoint."""

    api = "openai-completions"

    def request_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        from httpx_sse import EventSource, SSEError

        provider = self.provider_id
        finish: str | None = None
        usage: Usage | None = None
        done = False
        async with self.post_stream(f"{self.base_url}/chat/completions", self.body(request)) as resp:
            try:
                async for sse in EventSource(resp).aiter_sse():
                    data = sse.data
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    if not data.strip():
                        continue
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise malformed(f"not JSON: {data[:80]!r}", provider) from None
                    if not isinstance(chunk, dict):
                        raise malformed(f"not an object: {data[:80]!r}", provider)
                    if "error" in chunk:
                        err = chunk["error"]
                        text = err.get("message") if isinstance(err, dict) else str(err)
                        raise ProviderError(
                            f"LLM request rejected: {text}", kind="provider", provider=provider, detail=text
                        )
                    if chunk.get("usage"):
                        usage = usage_from(chunk["usage"]) or usage
                    choices = chunk.get("choices") or []
                    if not isinstance(choices, list):
                        raise malformed("choices is not a list", provider)
                    for choice in choices[:1]:
                        if not isinstance(choice, dict):
                            raise malformed("choice is not an object", provider)
                        delta = choice.get("delta") or {}
                        text = delta.get("content") if isinstance(delta, dict) else None
                        if text:
                            if not isinstance(text, str):
                                raise malformed("delta.content is not a string", provider)
                            yield TextDelta(text)
                        reason = choice.get("finish_reason")
                        if reason:
                            finish = FINISH_REASONS.get(reason, str(reason))
            except SSEError as exc:
                raise invalid_stream(str(exc), provider) from exc
        if not done and finish is None:
            raise invalid_stream("stream ended before [DONE]", provider)
        if usage is not None:
            yield usage
        yield Finish(finish or "stop")
