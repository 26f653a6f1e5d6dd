"""Who a request is from behind a reverse proxy (gateway.trustedProxies, as the reference)."""

from __future__ import annotations

import pytest

from krabfast.gateway.proxies import attribute, forwarded, parse_trusted

TRUSTED = parse_trusted(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


def test_no_forwarding_headers_the_peer_is_the_client():
    assert attribute("127.0.0.1", {"host": "x"}, TRUSTED) == ("127.0.0.1", True)
    assert attribute("::1", {}, ()) == ("::1", True)
    assert attribute("192.0.2.4", {}, TRUSTED) == ("192.0.2.4", False)


@pytest.mark.parametrize("header", ["x-forwarded-for", "x-forwarded-proto", "x-real-ip",
                                    "forwarded"])
def test_forwarding_headers_from_an_untrusted_peer_cannot_be_attributed(header):
    assert forwarded({header: "203.0.113.9"})
    assert attribute("127.0.0.1", {header: "203.0.113.9"}, ()) is None  # loopback too
    assert attribute("192.0.2.4", {header: "203.0.113.9"}, TRUSTED) is None


def test_x_forwarded_for_is_read_right_to_left_past_trusted_and_loopback_hops():
    headers = {"x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.1.2.3, 127.0.0.1"}
    assert attribute("10.0.0.5", headers, TRUSTED) == ("203.0.113.9", False)
    assert attribute("127.0.0.1", {"x-forwarded-for": "[2001:db8::7]:443"},
                     TRUSTED) == ("2001:db8::7", False)
    assert attribute("127.0.0.1", {"x-forwarded-for": "203.0.113.9:5555"},
                     TRUSTED) == ("203.0.113.9", False)


def test_a_forwarded_loopback_client_is_still_not_local():
    # Only loopback hops: no client named, so not attributable (never "local").
    assert attribute("127.0.0.1", {"x-forwarded-for": "127.0.0.1"}, TRUSTED) is None


def test_garbled_chains_and_real_ip_fallback():
    assert attribute("10.0.0.5", {"x-forwarded-for": "nonsense, 10.0.0.9"}, TRUSTED) is None
    real = {"x-real-ip": "203.0.113.44"}
    assert attribute("10.0.0.5", real, TRUSTED) is None
    assert attribute("10.0.0.5", real, TRUSTED, real_ip_fallback=True) == ("203.0.113.44", False)
    # Forwarded (RFC 7239) marks a request as proxied but is never read for an address.
    assert attribute("10.0.0.5", {"forwarded": "for=203.0.113.1"}, TRUSTED) is None


def test_bad_entries_are_named():
    with pytest.raises(ValueError, match="not an IP address or CIDR: 'ten'"):
        parse_trusted(["10.0.0.1", "ten"])
