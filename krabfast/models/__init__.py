"""Pluggable model backends for conversations (issue 10).

`ModelCatalog.from_config(models, primary)` reads the reference's `models.providers`
config; `catalog.resolve(ref)` gives a `Backend` and its `ModelInfo`; `backend.stream(req)`
yields TextDelta / Usage / Finish or raises ProviderError. Built-in apis:
openai-completions, anthropic-messages, ollama; with nothing configured the offline model
`krabfast/offline` answers. The HTTP client (aiohttp, with httpx-sse's SSE decoder) is imported
only when an HTTP backend streams.
"""

from krabfast.models.base import (
    Backend,
    ChatMessage,
    Finish,
    ModelRequest,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
)
from krabfast.models.offline import OfflineBackend
from krabfast.models.registry import ENTRY_POINT_GROUP, OFFLINE_MODEL, ModelCatalog, ModelInfo

__all__ = [
    "Backend",
    "ChatMessage",
    "ENTRY_POINT_GROUP",
    "Finish",
    "ModelCatalog",
    "ModelInfo",
    "ModelRequest",
    "OFFLINE_MODEL",
    "OfflineBackend",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "Usage",
]
