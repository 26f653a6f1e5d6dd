"""Shared HTTP plumbing for the built-in backends (httpx, imported on first use).

`HttpBackend` owns one `httpx.AsyncClient` per provider, opens streaming POSTs, turns
error statuses into ProviderError and maps httpx exceptions to error kinds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from typing import Any, AsyncIterator

from krabfast.models.base import (
    MSG_DNS,
    MSG_INTERRUPTED,
    MSG_NETWORK,
    MSG_REFUSED,
    MSG_TIMEOUT,
    ProviderError,
    error_for_status,
)

DEFAULT_TIMEOUT_SECONDS = 600.0
"""Idle (per read) timeout when `timeoutSeconds` is not set (the reference's agent default)."""
CONNECT_TIMEOUT_SECONDS = 30.0
ERROR_BODY_LIMIT = 64 * 1024

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def resolve_secret(value: Any) -> str | None:
    """A config secret: "${VAR}" reads the environment (unset: None), "" is None."""
    if not isinstance(value, str) or not value:
        return None
    m = _ENV_REF.match(value)
    if m:
        return os.environ.get(m.group(1)) or None
    return value


def error_detail(body: bytes) -> str | None:
    """The provider's message from an error body: {"error": {"message"}} / {"error": "..."}
    / {"message"} / plain text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type")
            if isinstance(msg, str):
                return msg
        elif isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return text[:500]


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes/contexts (httpx wraps the OSError of a failed connect)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def map_transport_error(exc: BaseException, provider: str | None) -> ProviderError:
    """ProviderError for an httpx transport exception (timeouts, refused, reset, ...)."""
    import httpx

    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"{MSG_TIMEOUT} ({text})", kind="timeout", provider=provider, detail=text)
    if isinstance(exc, httpx.ConnectError):
        causes = _causes(exc)
        lowered = " ".join(str(c) for c in causes).lower()
        if any(isinstance(c, socket.gaierror) for c in causes) or "name or service" in lowered:
            message = MSG_DNS
        elif any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in lowered:
            message = MSG_REFUSED
        else:
            message = MSG_NETWORK
        return ProviderError(f"{message} ({text})", kind="connection", provider=provider, detail=text)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return ProviderError(
            f"{MSG_INTERRUPTED} ({text})", kind="connection", provider=provider, detail=text
        )
    return ProviderError(f"{MSG_NETWORK} ({text})", kind="connection", provider=provider, detail=text)


class HttpBackend:
    """Base of the HTTP backends: `(provider_id, provider_config)` as in the config file.
    The client honours the usual proxy/CA environment variables (httpx `trust_env`)."""

    api = ""
    default_base_url: str | None = None

    def __init__(self, provider_id: str, config: dict[str, Any]) -> None:
        self.provider_id = provider_id
        base = config.get("baseUrl") or config.get("baseURL") or self.default_base_url
        if not base:
            raise ValueError(f"models.providers.{provider_id}.baseUrl: required for api {self.api}")
        self.base_url = str(base).rstrip("/")
        self.api_key = resolve_secret(config.get("apiKey"))
        self.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        timeout = config.get("timeoutSeconds")
        self.timeout_seconds = float(timeout) if timeout else DEFAULT_TIMEOUT_SECONDS
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            t = self.timeout_seconds
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(t, connect=min(t, CONNECT_TIMEOUT_SECONDS)),
            )
        return self._client

    def request_headers(self) -> dict[str, str]:
        """Headers of every request; subclasses add auth. Config `headers` win."""
        return {"content-type": "application/json"}

    @contextlib.asynccontextmanager
    async def post_stream(self, url: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """Open a streaming POST; yields the httpx response (2xx only). Transport errors
        raised inside the block are mapped to ProviderError too."""
        import httpx

        headers = self.request_headers()
        headers.update(self.headers)
        client = self._http()
        try:
            async with client.stream(
                "POST", url, content=json.dumps(body).encode(), headers=headers
            ) as response:
                if response.status_code >= 400:
                    chunks = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= ERROR_BODY_LIMIT:
                            break
                    raise error_for_status(
                        response.status_code, error_detail(b"".join(chunks)), self.provider_id
                    )
                yield response
        except httpx.TransportError as exc:
            raise map_transport_error(exc, self.provider_id) from exc
        except httpx.StreamError as exc:
            raise map_transport_error(exc, self.provider_id) from exc

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider_id!r}, {self.base_url!r})"
