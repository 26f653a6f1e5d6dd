"""api "anthropic-messages": streaming `POST {baseUrl}/v1/messages` (SSE).

Auth is `x-api-key` plus `anthropic-version`; system messages go to the top-level
`system` field. Events: message_start, content_block_delta, message_delta, message_stop
(ping ignored, error mapped to ProviderError).
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

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 8192
"""`max_tokens` is required by the API; used when the request sets none."""

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

ERROR_TYPES = {
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
}


# The reference's thinking budgets (tokens) per level; a budget that would leave no room
# for the answer is cut to max_tokens - 1024.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384,
                    "xhigh": 16384, "max": 32768}
MIN_ANSWER_TOKENS = 1024


def thinking_budget(level: str, max_tokens: int) -> int:
    budget = THINKING_BUDGETS.get(level, THINKING_BUDGETS["medium"])
    return max(0, max_tokens - MIN_ANSWER_TOKENS) if max_tokens <= budget else budget


class AnthropicBackend(HttpBackend):
    """The Anthropic Messages API or a compatible proxy."""

    api = "anthropic-messages"
    default_base_url = "https://api.anthropic.com"

    def request_headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    @property
    def url(self) -> str:
        base = self.base_url
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def body(self, request: ModelRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
            ],
            "stream": True,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.thinking == "off":
            body["thinking"] = {"type": "disabled"}
        elif request.thinking is not None:
            body["thinking"] = {"type": "enabled",
                                "budget_tokens": thinking_budget(request.thinking, body["max_tokens"])}
        return body

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        provider = self.provider_id
        input_tokens = output_tokens = 0
        stop: str | None = None
        stopped = False
        async with self.post_stream(self.url, self.body(request)) as resp:
            events = sse_events(resp, provider)
            async for sse in events:
                if not sse.data.strip():
                    continue
                try:
                    data = loads(sse.data)
                except ValueError:
                    raise malformed(f"not JSON: {sse.data[:80]!r}", provider) from None
                if not isinstance(data, dict):
                    raise malformed(f"not an object: {sse.data[:80]!r}", provider)
                kind = data.get("type") or sse.event
                if kind == "message_start":
                    usage = (data.get("message") or {}).get("usage") or {}
                    input_tokens = int(usage.get("input_tokens") or 0)
                    output_tokens = int(usage.get("output_tokens") or 0)
                elif kind == "content_block_delta":
                    delta = data.get("delta")
                    if not isinstance(delta, dict):
                        raise malformed("content_block_delta without delta", provider)
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield TextDelta(str(delta["text"]))
                elif kind == "message_delta":
                    reason = (data.get("delta") or {}).get("stop_reason")
                    if reason:
                        stop = STOP_REASONS.get(reason, str(reason))
                    usage = data.get("usage") or {}
                    if "output_tokens" in usage:
                        output_tokens = int(usage["output_tokens"] or 0)
                    if usage.get("input_tokens"):
                        input_tokens = int(usage["input_tokens"])
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    err = data.get("error") or {}
                    text = err.get("message") or err.get("type") or "error"
                    raise ProviderError(
                        f"LLM request rejected: {text}",
                        kind=ERROR_TYPES.get(err.get("type"), "provider"),
                        provider=provider,
                        detail=text,
                    )
            if stopped:
                # Complete: report it, then read the tail so the connection is reused.
                yield Usage(input_tokens, output_tokens, input_tokens + output_tokens)
                yield Finish(stop or "stop")
                await drain(events)
                return
        if not stopped:
            raise invalid_stream("stream ended before message_stop", provider)
        yield Usage(input_tokens, output_tokens, input_tokens + output_tokens)
        yield Finish(stop or "stop")
