"""Real Ed25519 device identities for tests, signing connects the way reference clients do."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DeviceKey:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = b64url(self.raw)
        self.id = hashlib.sha256(self.raw).hexdigest()

    def payload(self, params: dict, nonce: str, signed_at: int, token: str = "",
                version: int = 3) -> str:
        client = params["client"]
        head = "|".join((self.id, client["id"], client["mode"], params.get("role", "operator"),
                         ",".join(params.get("scopes", [])), str(signed_at), token, nonce))
        if version == 2:
            return f"v2|{head}"
        platform = client.get("platform", "").strip().lower()
        family = client.get("deviceFamily", "").strip().lower()
        return f"v3|{head}|{platform}|{family}"

    def device_block(self, params: dict, nonce: str, signed_at: int, token: str = "",
                     version: int = 3) -> dict:
        signature = self.private.sign(self.payload(params, nonce, signed_at, token, version).encode())
        return {"id": self.id, "publicKey": self.public_key, "signature": b64url(signature),
                "signedAt": signed_at, "nonce": nonce}

    def sign_into(self, params: dict, challenge: dict, token: str = "", version: int = 3) -> dict:
        """Add a `device` block answering `challenge` ({nonce, ts}) to connect params."""
        params["device"] = self.device_block(params, challenge["nonce"], challenge["ts"], token,
                                             version)
        return params
