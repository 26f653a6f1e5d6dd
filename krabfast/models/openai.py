"""api "openai-completions": streaming `POST {baseUrl}/chat/completions` (SSE).

Sends `stream: true` and `stream_options.include_usage`, `Authorization: Bearer <apiKey>`
(omitted without a key) and the provider's `headers`. `data: [DONE]` ends the stream.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from orjson import loads

from krabfast.models._http import HttpBackend, drain, sse_events
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
        if request.max_tokens is not None:  # the reference's field for this api
            body["max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        provider = self.provider_id
        finish: str | None = None
        usage: Usage | None = None
        done = False
        async with self.post_stream(f"{self.base_url}/chat/completions", self.body(request)) as resp:
            events = sse_events(resp, provider)
            async for sse in events:
                data = sse.data
                if data == "[DONE]" or data.strip() == "[DONE]":
                    done = True
                    break
                if not data or not data.strip():
                    continue
                try:
                    chunk = loads(data)
                except ValueError:
                    raise malformed(f"not JSON: {data[:80]!r}", provider) from None
                if type(chunk) is not dict:
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
                if type(choices) is not list:
                    raise malformed("choices is not a list", provider)
                for choice in choices[:1]:
                    if type(choice) is not dict:
                        raise malformed("choice is not an object", provider)
                    delta = choice.get("delta") or {}
                    text = delta.get("content") if type(delta) is dict else None
                    if text:
                        if type(text) is not str:
                            raise malformed("delta.content is not a string", provider)
                        yield TextDelta(text)
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = FINISH_REASONS.get(reason, str(reason))
            if done:
                # The answer is complete: report it, then read the stream's tail so the
                # connection is reused (a consumer that stops here closes it instead).
                if usage is not None:
                    yield usage
                yield Finish(finish or "stop")
                await drain(events)
                return
        if finish is None:
            raise invalid_stream("stream ended before [DONE]", provider)
        if usage is not None:
            yield usage
        yield Finish(finish)
