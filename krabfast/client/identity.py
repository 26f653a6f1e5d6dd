"""A device identity for clients: an Ed25519 key kept in a 0600 file, and the v3 connect
signature the gateway checks (see krabfast/gateway/device_auth.py)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DeviceIdentity:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
        self.public_key = _b64url(raw)
        self.device_id = hashlib.sha256(raw).hexdigest()

    @classmethod
    def generate(cls) -> "DeviceIdentity":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> "DeviceIdentity":
        path = Path(path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            return cls(key)
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = identity.private_key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return identity

    def device_block(self, params: dict, nonce: str, signed_at: int, token: str = "") -> dict:
        """The `device` field of connect `params` (client/role/scopes already filled in)."""
        client = params["client"]
        payload = "|".join((
            "v3", self.device_id, client["id"], client["mode"], params.get("role", "operator"),
            ",".join(params.get("scopes", [])), str(signed_at), token, nonce,
            client.get("platform", "").strip().lower(), client.get("deviceFamily", "").strip().lower()))
        signature = self.private_key.sign(payload.encode())
        return {"id": self.device_id, "publicKey": self.public_key, "signature": _b64url(signature),
                "signedAt": signed_at, "nonce": nonce}
