"""Device identity proof: an Ed25519 signature over the connect's key facts.

The device signs `v3|deviceId|client.id|client.mode|role|scopes|signedAt|token|nonce|
platform|deviceFamily` (platform and family trimmed and ASCII-lowercased; `token` is the
credential it authenticates with, or empty), or the older `v2|...` form that stops after the
nonce. Binding the challenge nonce makes a captured signature useless on another socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from krabfast.protocol.errors import CLOSE_POLICY
from krabfast.protocol.errors import DetailCode, ErrorCode, GatewayError
from krabfast.protocol.handshake import ConnectParams, DeviceAuth

# How far signedAt may be from the gateway's clock (the challenge ts is the expected value).
SIGNATURE_MAX_SKEW_MS = 120_000


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url, as devices send keys and signatures (padded/standard also read)."""
    text = text.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def device_id_for(public_key_raw: bytes) -> str:
    return hashlib.sha256(public_key_raw).hexdigest()


def _ascii_lower(text: str | None) -> str:
    text = (text or "").strip()
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def signed_payloads(params: ConnectParams, device: DeviceAuth, role: str, scopes: list[str],
                    token: str) -> tuple[str, str]:
    """The (v3, v2) strings a device may have signed for this connect."""
    client = params.client
    head = "|".join((device.id, client.id, client.mode, role, ",".join(scopes),
                     str(device.signed_at), token, device.nonce))
    family = client.device_family if isinstance(client.device_family, str) else ""
    v3 = f"v3|{head}|{_ascii_lower(client.platform)}|{_ascii_lower(family)}"
    return v3, f"v2|{head}"


def _fail(message: str, code: DetailCode, reason: str) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message,
                        details={"code": code.value, "reason": reason}, close_code=CLOSE_POLICY)


def verify_device(params: ConnectParams, device: DeviceAuth, *, role: str, scopes: list[str],
                  token: str, nonce: str, now_ms: int) -> bytes:
    """Check the device proof, in the reference's order; returns the raw public key.
    Raises GatewayError with the reference's details.code / details.reason."""
    try:
        raw = b64url_decode(device.public_key.strip())
    except (ValueError, binascii.Error):
        raw = None
    if raw is None or device.id != device_id_for(raw):
        raise _fail("device identity mismatch", DetailCode.DEVICE_AUTH_DEVICE_ID_MISMATCH,
                    "device-id-mismatch")
    if abs(now_ms - device.signed_at) > SIGNATURE_MAX_SKEW_MS:
        raise _fail("device signature expired", DetailCode.DEVICE_AUTH_SIGNATURE_EXPIRED,
                    "device-signature-stale")
    if not device.nonce.strip():
        raise _fail("device nonce required", DetailCode.DEVICE_AUTH_NONCE_REQUIRED,
                    "device-nonce-missing")
    if device.nonce != nonce:
        raise _fail("device nonce mismatch", DetailCode.DEVICE_AUTH_NONCE_MISMATCH,
                    "device-nonce-mismatch")
    # (The reference reports an undecodable key as a bad signature; saying what is wrong
    # is more useful and costs nothing.)
    try:
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise _fail("device public key invalid", DetailCode.DEVICE_AUTH_PUBLIC_KEY_INVALID,
                    "device-public-key") from None
    try:
        signature = b64url_decode(device.signature.strip())
    except (ValueError, binascii.Error):
        signature = b""
    for payload in signed_payloads(params, device, role, scopes, token):
        try:
            key.verify(signature, payload.encode())
            return raw
        except InvalidSignature:
            continue
    raise _fail("device signature invalid", DetailCode.DEVICE_AUTH_SIGNATURE_INVALID,
                "device-signature")
