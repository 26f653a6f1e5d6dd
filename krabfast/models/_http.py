"""Shared HTTP plumbing for the built-in backends (aiohttp, imported on first use).

`HttpBackend` owns one `aiohttp.ClientSession` per provider, opens streaming POSTs, turns
error statuses into ProviderError and maps aiohttp exceptions to error kinds; `sse_events`
parses a `text/event-stream` body with httpx-sse's decoder and `ndjson_lines` splits an
NDJSON one.

Why aiohttp (the model request is on the path to the first delta): measured against the
same local fake model, its request and first chunk take about a third of httpx's time on
asyncio (no anyio layer: no checkpoint per read and write, the C HTTP parser) and about a
fifth of the CPU per streamed answer. Per-request work is kept small too: the session, each
endpoint's URL, the merged headers and the proxy are set up once per backend. A stream that
ended well is read to its end (`drain`, bounded) so its keep-alive connection goes back to
the pool: the next run does not pay a TCP connect.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import re
import socket
from typing import Any, AsyncIterator

import orjson

from krabfast.models.base import (
    MSG_DNS,
    MSG_INTERRUPTED,
    MSG_NETWORK,
    MSG_REFUSED,
    MSG_TIMEOUT,
    ProviderError,
    error_for_status,
    invalid_stream,
)

DRAIN_SECONDS = 2.0
"""How long the tail of a finished stream (after its last event) may take to arrive before
the connection is dropped instead of reused."""
KEEPALIVE_SECONDS = 4.0
"""How long an idle pooled connection is kept: under uvicorn's 5 s (vLLM and other servers
built on it), so a request is not sent on a connection the server is closing."""
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
    """`exc` and its causes/contexts (the OSError of a failed connect, when wrapped)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def map_transport_error(exc: BaseException, provider: str | None) -> ProviderError:
    """ProviderError for a transport exception (aiohttp's, or a timeout)."""
    import aiohttp

    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError, SocketTimeoutError too
        return ProviderError(f"{MSG_TIMEOUT} ({text})", kind="timeout", provider=provider, detail=text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        causes = _causes(exc) + [getattr(exc, "os_error", None)]
        lowered = " ".join(str(c) for c in causes if c is not None).lower()
        dns = getattr(aiohttp, "ClientConnectorDNSError", ())
        if (isinstance(exc, dns) or any(isinstance(c, socket.gaierror) for c in causes)
                or "name or service" in lowered):
            message = MSG_DNS
        elif any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in lowered:
            message = MSG_REFUSED
        else:
            message = MSG_NETWORK
        return ProviderError(f"{message} ({text})", kind="connection", provider=provider, detail=text)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientOSError, ConnectionError)):
        return ProviderError(
            f"{MSG_INTERRUPTED} ({text})", kind="connection", provider=provider, detail=text
        )
    return ProviderError(f"{MSG_NETWORK} ({text})", kind="connection", provider=provider, detail=text)


async def drain(events: AsyncIterator[Any], limit: float = DRAIN_SECONDS) -> None:
    """Read what is left of a stream whose answer is complete (its terminator, the HTTP
    end of message), ignoring it, so the connection can be reused. Never raises: a tail that
    is slow or broken only costs the connection (it is closed instead of pooled)."""
    try:
        async with asyncio.timeout(limit):
            async for _ in events:
                pass
    except Exception:  # noqa: BLE001 - TimeoutError, aiohttp errors: the answer stands
        pass


async def sse_events(response: Any, provider: str | None) -> AsyncIterator[Any]:
    """Server-sent events (httpx-sse's `ServerSentEvent`: event, data, id, retry) of a
    `text/event-stream` response as they arrive, parsed by httpx-sse's line and event
    decoders (UTF-8, as the SSE spec says)."""
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    content_type = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in content_type:
        raise invalid_stream("Expected response header Content-Type to contain "
                             f"'text/event-stream', got {content_type!r}", provider)
    text = codecs.getincrementaldecoder("utf-8")("replace").decode
    lines = SSELineDecoder()
    events = SSEDecoder()
    async for chunk in response.content.iter_any():
        for line in lines.decode(text(chunk)):
            sse = events.decode(line)
            if sse is not None:
                yield sse
    tail = text(b"", True)
    for line in [*(lines.decode(tail) if tail else ()), *lines.flush()]:
        sse = events.decode(line)
        if sse is not None:
            yield sse
    # (an event the body ends in the middle of, without its blank line, is not dispatched:
    # the SSE spec, and httpx-sse's EventSource)


async def ndjson_lines(response: Any) -> AsyncIterator[bytes]:
    """The lines (bytes, without the newline) of an NDJSON response as they arrive."""
    rest = b""
    async for chunk in response.content.iter_any():
        if rest:
            chunk = rest + chunk
        *lines, rest = chunk.split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


def _env_proxy(url: str) -> str | None:
    """The proxy the usual environment variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
    NO_PROXY) name for `url`, or None."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and proxy_bypass(parts.hostname)):
        return None
    return proxy


class HttpBackend:
    """Base of the HTTP backends: `(provider_id, provider_config)` as in the config file.
    Requests honour the usual proxy environment variables (read once per backend) and
    the CA bundle httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR)."""

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
        self._session: Any = None
        self._loop: Any = None
        self._urls: dict[str, Any] = {}  # endpoint -> yarl.URL, parsed once
        self._request_headers: dict[str, str] = {}
        self._proxy: str | None = None

    def _http(self) -> Any:
        """The session (one per event loop: a backend used from a new loop gets a new one)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp

            t = self.timeout_seconds
            ssl_context: Any = None  # plain http: none needed
            if self.base_url.lower().startswith("https:"):
                import httpx

                ssl_context = httpx.create_ssl_context(trust_env=True)
            connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True,
                                             keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # model APIs set none worth keeping
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(t, CONNECT_TIMEOUT_SECONDS),
                                              sock_read=t),
            )
            self._loop = loop
            headers = self.request_headers()
            headers.update(self.headers)
            self._request_headers = headers
            self._proxy = _env_proxy(self.base_url)
        return self._session

    def request_headers(self) -> dict[str, str]:
        """Headers of every request; subclasses add auth. Config `headers` win."""
        return {"content-type": "application/json"}

    @contextlib.asynccontextmanager
    async def post_stream(self, url: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """Open a streaming POST; yields the aiohttp response (2xx only). Transport errors
        raised inside the block are mapped to ProviderError too. Leaving the block returns
        the connection to the pool when the body was read to its end, else closes it."""
        import aiohttp

        session = self._http()
        target = self._urls.get(url)
        if target is None:
            from yarl import URL

            target = self._urls[url] = URL(url)
        response = None
        try:
            response = await session.post(target, data=orjson.dumps(body),
                                          headers=self._request_headers, proxy=self._proxy)
            if response.status >= 400:
                chunks = []
                size = 0
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= ERROR_BODY_LIMIT:
                        break
                raise error_for_status(
                    response.status, error_detail(b"".join(chunks)), self.provider_id
                )
            yield response
            response.release()  # reused only if the body was read to its end
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise map_transport_error(exc, self.provider_id) from exc
        finally:
            if response is not None and not response.closed:
                response.close()  # an error, an early exit, a cancel: the connection goes

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider_id!r}, {self.base_url!r})"
