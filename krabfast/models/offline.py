"""The built-in offline model `krabfast/offline` (no network, no LLM).

Selected when no model is configured, so a fresh install can chat. The reply is
deterministic: it says what it is, quotes the last user message and gives its words in
reverse order, streamed word by word (`delay` seconds per word), then Usage (word counts)
and Finish("stop"), or Finish("length") when `max_tokens` words were sent first.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from krabfast.models.base import Finish, ModelRequest, StreamEvent, TextDelta, Usage

PROVIDER_ID = "krabfast"
MODEL_ID = "offline"
MODEL_REF = f"{PROVIDER_ID}/{MODEL_ID}"
MODEL_NAME = "krabfast offline model (no network)"
API = "krabfast-offline"
DEFAULT_DELAY = 0.02
PREFIX = "krabfast offline model (no network, no LLM):"
QUOTE_LIMIT = 2000
"""Characters of the user message quoted back (longer ones end with "...")."""


def reply_text(request: ModelRequest) -> str:
    """The whole reply for `request` (what stream() sends)."""
    last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    said = " ".join(last.split())
    if not said:
        return f"{PREFIX} you sent an empty message."
    quoted = said if len(said) <= QUOTE_LIMIT else said[:QUOTE_LIMIT] + "..."
    reversed_words = " ".join(reversed(quoted.split()))
    return f'{PREFIX} you said "{quoted}". Your words reversed: {reversed_words}'


def count_words(request: ModelRequest) -> int:
    return sum(len(m.content.split()) for m in request.messages)


class OfflineBackend:
    """Deterministic local echo model; `delay` is the pause before each word (0: none,
    though every word still yields to the loop, so cancellation is immediate)."""

    api = API

    def __init__(self, delay: float = DEFAULT_DELAY) -> None:
        self.delay = max(0.0, float(delay))

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        words = reply_text(request).split(" ")
        limit = request.max_tokens if request.max_tokens and request.max_tokens > 0 else None
        sent = 0
        for i, word in enumerate(words):
            if limit is not None and sent >= limit:
                break
            await asyncio.sleep(self.delay)
            yield TextDelta(word if i == 0 else " " + word)
            sent += 1
        inp = count_words(request)
        yield Usage(inp, sent, inp + sent)
        yield Finish("length" if sent < len(words) else "stop")

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"OfflineBackend(delay={self.delay})"
