"""Requests and header lookups for the unit tests of HTTP routes (no sockets)."""

from __future__ import annotations

from krabfast.web.request import Request


def req(path, method="GET", query="", **headers):
    """A Request; keyword headers with `_` for `-` (if_none_match=...)."""
    return Request(method, path, query, {k.replace("_", "-"): v for k, v in headers.items()})


def hdr(resp, name):
    """The one value of header `name` in `resp`, or None (fails if it is repeated)."""
    values = [v for k, v in resp.headers if k.lower() == name.lower()]
    assert len(values) <= 1, (name, resp.headers)
    return values[0] if values else None
