"""Client-side TLS: the reference's certificate pin (`--tls-fingerprint`).

A pin is the SHA-256 of the gateway certificate's DER, written as 64 hex digits or 32
colon-separated hex pairs, with an optional `sha256:` prefix (any case), as the reference's
`normalizeTlsFingerprint` accepts it. With a pin the chain is not verified (a self-signed
certificate is the point); the peer certificate's fingerprint is compared right after the
TLS handshake, before the HTTP upgrade is written, so a mismatch sends nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl

INVALID_FINGERPRINT = "Invalid TLS fingerprint; expected a SHA-256 certificate fingerprint."
MISMATCH = "gateway tls fingerprint mismatch"  # the reference's texts
UNAVAILABLE = "gateway tls fingerprint unavailable"
NEEDS_WSS = "gateway tls fingerprint requires wss:// gateway url"

_HEX = re.compile(r"[0-9a-fA-F]{64}")
_PAIRS = re.compile(r"(?:[0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}")


def normalize_fingerprint(text: str) -> str:
    """Lowercase hex without colons; ValueError(INVALID_FINGERPRINT) for anything else."""
    value = re.sub(r"^sha256:", "", (text or "").strip(), flags=re.IGNORECASE)
    if _HEX.fullmatch(value) or _PAIRS.fullmatch(value):
        return value.replace(":", "").lower()
    raise ValueError(INVALID_FINGERPRINT)


def fingerprint(der: bytes) -> str:
    """The pin of a DER certificate (lowercase hex)."""
    return hashlib.sha256(der).hexdigest()


class TlsPinError(ssl.SSLCertVerificationError):
    """The gateway's certificate is not the pinned one. An SSLError so that asyncio's
    (and uvloop's) TLS protocol fails the handshake with it instead of crashing."""

    def __init__(self, message: str, expected: str, actual: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return self.args[0]


class _PinnedSSLObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()  # raises SSLWantReadError until the handshake is complete
        expected = self.context.pinned_fingerprint
        der = self.getpeercert(binary_form=True)
        actual = fingerprint(der) if der else None
        if actual is None:
            raise TlsPinError(UNAVAILABLE, expected, None)
        if not hmac.compare_digest(actual, expected):
            raise TlsPinError(MISMATCH, expected, actual)


class _PinnedContext(ssl.SSLContext):
    # wrap_bio (what asyncio and uvloop use) builds its SSLObject from this class.
    sslobject_class = _PinnedSSLObject
    pinned_fingerprint: str = ""


def pinned_context(pin: str) -> ssl.SSLContext:
    """A client context that accepts exactly the certificate whose fingerprint is `pin`
    (any form normalize_fingerprint takes), whoever signed it and whatever names it has,
    as the reference (`rejectUnauthorized: false` plus the fingerprint check)."""
    ctx = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.pinned_fingerprint = normalize_fingerprint(pin)
    return ctx
