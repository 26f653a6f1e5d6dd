"""Who a request is from, when it may have come through a reverse proxy
(`gateway.trustedProxies`, as the reference: docs/reference/web-facts.md section 6).

- A request is local only when its TCP peer is loopback and it carries no forwarding
  header: a TLS-terminating proxy on the same host must not make every client local.
- Forwarded addresses are believed only from a trusted peer: `X-Forwarded-For` read right
  to left, skipping loopback and trusted hops (`X-Real-IP` only with allowRealIpFallback).
- Forwarding headers from an untrusted peer (loopback included), or from a trusted one that
  names no usable client, make the request unattributable: the reference refuses it with
  403 `proxy_attribution_required` (HTTP and the WebSocket upgrade alike; only the
  liveness probe still answers).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from krabfast.gateway.config import is_loopback

REFUSAL_BODY = (b'{"error":{"message":"Proxy client attribution is required. Configure '
                b'gateway.trustedProxies narrowly and make the proxy overwrite or safely rebuild '
                b'forwarded client headers.","type":"proxy_attribution_required"}}')


def parse_trusted(entries: Iterable[str]) -> tuple:
    """The networks of a trustedProxies list (IPs or CIDRs); ValueError names a bad entry."""
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {entry!r}") from None
    return tuple(nets)


def _ip(text: str):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _trusted(addr, nets) -> bool:
    return addr is not None and any(addr in net for net in nets
                                    if net.version == addr.version)


def forwarding_header(name: str) -> bool:
    """A header that marks a request as proxied: Forwarded, X-Real-IP, any X-Forwarded-*."""
    name = name.lower()
    return name == "forwarded" or name == "x-real-ip" or name.startswith("x-forwarded-")


def forwarded(headers: Mapping[str, str]) -> bool:
    return any(forwarding_header(name) for name in headers)


def attribute(peer_ip: str, headers: Mapping[str, str], trusted: tuple,
              real_ip_fallback: bool = False) -> tuple[str, bool] | None:
    """`(client_ip, is_local)` of a request from TCP peer `peer_ip` with `headers` (lower-
    cased names), or None when it cannot be attributed (refuse it)."""
    if not forwarded(headers):
        return peer_ip, is_loopback(peer_ip)
    if not _trusted(_ip(peer_ip), trusted):
        return None
    hops = [h for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            return None  # a garbled chain: nothing in it can be believed
        if addr.is_loopback or _trusted(addr, trusted):
            continue
        return str(addr), False
    if real_ip_fallback:
        addr = _ip(headers.get("x-real-ip", ""))
        if addr is not None and not addr.is_loopback:
            return str(addr), False
    return None
