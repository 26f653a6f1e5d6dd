"""What an HTTP route sees and returns. The protocol (krabfast/web/http.py) parses requests
with httptools and writes responses; routes are plain callables `route(request) ->
Response | None` (None: not mine, try the next route)."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass(slots=True)
class Request:
    method: str                 # "GET", "HEAD", ...
    path: str                   # the URL path, percent-decoded, always starting with "/"
    query: str                  # the raw query string (no "?"), "" when absent
    headers: dict[str, str]     # lower-cased names; repeated headers joined with ", "
    body: bytes = b""
    peer_ip: str = ""           # the client's address (after trusted-proxy resolution)
    is_local: bool = False      # the client is on this host (as the WebSocket side judges)
    tls: bool = False           # the request came over https

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None      # sets Content-Type when given
    headers: list[tuple[str, str]] = field(default_factory=list)  # any others, in order
    # HEAD answers carry the GET's Content-Length with no body; the protocol strips it.

    @classmethod
    def text(cls, status: int, text: str | None = None, **kw) -> "Response":
        """A plain-text answer (`Not Found`, ...): the status phrase unless `text` is given."""
        body = (text if text is not None else HTTPStatus(status).phrase).encode()
        return cls(status, body, "text/plain; charset=utf-8", **kw)

    @classmethod
    def json(cls, status: int, body: bytes, **kw) -> "Response":
        return cls(status, body, "application/json; charset=utf-8", **kw)
