"""Paired devices, pending pairing requests and device tokens.

Device tokens are 256-bit HMACs under a key the database holds; the tokens themselves are
never stored, only their SHA-256 (see the token section below).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from krabfast.store.db import Database, sql_order


KEY_BYTES = 32
log = logging.getLogger("krabfast.store")


def _load_or_create_key(path) -> bytes:
    """The device-token HMAC key. Written atomically (temp file, fsync, link into place),
    so a crash never leaves a partial key; an empty or short key file (what a crash of an
    older version could leave) is never used: it is replaced, which invalidates the
    device tokens derived from it (devices reconnect with the shared secret)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            key = fh.read()
    except FileNotFoundError:
        key = None
    if key is not None:
        if len(key) >= KEY_BYTES:
            return key
        log.warning("%s holds %d bytes, not a usable key: replacing it (device tokens issued "
                    "with it stop working; devices reconnect with the shared secret)", path, len(key))
    fresh = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(fresh)
            fh.flush()
            os.fsync(fh.fileno())
        if key is None:
            try:
                os.link(tmp, path)  # fails if another process created it meanwhile
            except FileExistsError:
                return _load_or_create_key(path)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return fresh


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class PairedDevice:
    device_id: str
    public_key: str
    roles: list[str]
    scopes: list[str]
    created_at: int
    approved_at: int | None = None
    display_name: str | None = None
    label: str | None = None
    platform: str | None = None
    device_family: str | None = None
    client_id: str | None = None
    client_mode: str | None = None
    last_seen_at: int | None = None
    last_ip: str | None = None
    approved_via: str | None = None

    @property
    def name(self) -> str | None:
        return self.label or self.display_name


@dataclass
class PairingRequest:
    request_id: str
    device_id: str
    public_key: str
    role: str
    scopes: list[str]
    created_at: int
    meta: dict = field(default_factory=dict)
    refreshed_at: int | None = None


@dataclass
class DeviceToken:
    device_id: str
    role: str
    scopes: list[str]
    issued_at: int


_DEVICE_COLS = ("device_id", "public_key", "display_name", "label", "platform", "device_family",
                "client_id", "client_mode", "roles", "scopes", "created_at", "approved_at",
                "last_seen_at", "last_ip", "approved_via")


def _device(row) -> PairedDevice:
    data = dict(row)
    data["roles"] = json.loads(data["roles"])
    data["scopes"] = json.loads(data["scopes"])
    return PairedDevice(**data)


def _request(row) -> PairingRequest:
    return PairingRequest(request_id=row["request_id"], device_id=row["device_id"],
                          public_key=row["public_key"], role=row["role"],
                          scopes=json.loads(row["scopes"]), created_at=row["created_at"],
                          meta=json.loads(row["meta"]), refreshed_at=row["refreshed_at"])


class DeviceStore:
    """Reads are served from the database's in-memory mirror; writes update it at once and
    reach the disk on the writer thread (`self.db.flush()` / `await self.db.flushed()` to
    wait for that)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._devices = db.table("devices")
        self._requests = db.table("pairing_requests")
        self._tokens = db.table("device_tokens")
        self._token_key: bytes | None = None

    # -- devices ---------------------------------------------------------------------------------
    def get(self, device_id: str) -> PairedDevice | None:
        row = self._devices.get(device_id)
        return _device(row) if row else None

    def list(self) -> list[PairedDevice]:
        rows = sorted(self._devices.values(),
                      key=lambda r: (sql_order(r["approved_at"]), sql_order(r["created_at"])))
        return [_device(r) for r in rows]

    def save(self, device: PairedDevice) -> None:
        values = [getattr(device, c) for c in _DEVICE_COLS]
        values[_DEVICE_COLS.index("roles")] = json.dumps(sorted(set(device.roles)))
        values[_DEVICE_COLS.index("scopes")] = json.dumps(sorted(set(device.scopes)))
        self._devices.replace(dict(zip(_DEVICE_COLS, values)))

    def touch(self, device_id: str, now_ms: int, ip: str | None) -> None:
        self._devices.update((device_id,), {"last_seen_at": now_ms, "last_ip": ip})

    def rename(self, device_id: str, label: str) -> PairedDevice | None:
        self._devices.update((device_id,), {"label": label})
        return self.get(device_id)

    def remove(self, device_id: str) -> bool:
        with self.db.atomic():
            gone = self._devices.delete(device_id)
            self._tokens.delete_where(device_id=device_id)
            self._requests.delete_where(device_id=device_id)
        return gone

    # -- pairing requests ------------------------------------------------------------------------
    def requests(self) -> list[PairingRequest]:
        rows = sorted(self._requests.values(), key=lambda r: sql_order(r["created_at"]))
        return [_request(r) for r in rows]

    def get_request(self, request_id: str) -> PairingRequest | None:
        row = self._requests.get(request_id)
        return _request(row) if row else None

    def request_for(self, device_id: str, role: str) -> PairingRequest | None:
        row = self._requests.find(device_id=device_id, role=role)
        return _request(row) if row else None

    def add_request(self, device_id: str, public_key: str, role: str, scopes: list[str],
                    meta: dict, now_ms: int) -> tuple[PairingRequest, PairingRequest | None]:
        """Record a pending request; one per device and role. A retry asking for no more
        than the pending one refreshes it (same id). One asking for more supersedes it: a new
        request covering both. Returns (request, superseded-or-None); a new request has
        `created_at == now_ms`."""
        existing = self.request_for(device_id, role)
        if existing is not None and set(scopes) <= set(existing.scopes) \
                and existing.public_key == public_key:
            self._requests.update((existing.request_id,), {"refreshed_at": now_ms,
                                                           "meta": json.dumps(meta)})
            existing.meta = meta
            existing.refreshed_at = now_ms
            return existing, None
        merged = sorted(set(scopes) | (set(existing.scopes) if existing else set()))
        request = PairingRequest(str(uuid.uuid4()), device_id, public_key, role, merged, now_ms, meta,
                                 now_ms)
        row = {"request_id": request.request_id, "device_id": device_id, "public_key": public_key,
               "role": role, "scopes": json.dumps(merged), "meta": json.dumps(meta),
               "created_at": now_ms, "refreshed_at": now_ms}
        with self.db.atomic():
            if existing is not None:
                self._requests.delete(existing.request_id)
            self._requests.insert(row)
        return request, existing

    def drop_request(self, request_id: str) -> PairingRequest | None:
        request = self.get_request(request_id)
        if request is not None:
            self._requests.delete(request_id)
        return request

    # -- device tokens ---------------------------------------------------------------------------
    # A token is HMAC(key, device|role|generation): the gateway can hand the same token out
    # again (a paired device reconnecting with the shared secret gets back the token it
    # already holds) while the database keeps only its hash. Rotation bumps the generation.
    def _key(self) -> bytes:
        """The HMAC key: a 0600 file next to the database (so a copy of the database alone
        yields no tokens), or a row for in-memory databases."""
        if self._token_key is None:
            if str(self.db.path) == ":memory:":
                self._token_key = secrets.token_bytes(32)
            else:
                self._token_key = _load_or_create_key(self.db.path.with_name("device-token.key"))
        return self._token_key

    def _derive(self, device_id: str, role: str, generation: int) -> str:
        digest = hmac.new(self._key(), f"{device_id}\n{role}\n{generation}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue_token(self, device_id: str, role: str, scopes: list[str], now_ms: int) -> str:
        """A new token for (device, role) with `scopes`; any earlier token stops working."""
        row = self._tokens.get(device_id, role)
        generation = (row["generation"] + 1) if row else 1
        token = self._derive(device_id, role, generation)
        self._tokens.replace({"device_id": device_id, "role": role, "token_hash": hash_token(token),
                              "scopes": json.dumps(sorted(set(scopes))), "issued_at": now_ms,
                              "generation": generation})
        return token

    def current_token(self, device_id: str, role: str) -> str | None:
        """The token (device, role) holds now, re-derived; None if it has none."""
        row = self._tokens.get(device_id, role)
        if row is None or not row["token_hash"]:
            return None
        return self._derive(device_id, role, row["generation"])

    def token(self, device_id: str, role: str) -> DeviceToken | None:
        """The live (not revoked) token's record, if any."""
        row = self._tokens.get(device_id, role)
        if row is None or not row["token_hash"]:
            return None
        return DeviceToken(row["device_id"], row["role"], json.loads(row["scopes"]), row["issued_at"])

    def check_token(self, device_id: str, role: str, token: str) -> DeviceToken | None:
        row = self._tokens.get(device_id, role)
        if row is None or not hmac.compare_digest(row["token_hash"], hash_token(token)):
            return None
        return DeviceToken(row["device_id"], row["role"], json.loads(row["scopes"]), row["issued_at"])

    def token_holder(self, token: str) -> DeviceToken | None:
        """The live token equal to `token`, whichever device holds it (an HTTP bearer
        carries no device id). A scan of the in-memory table, by hash."""
        if not token:
            return None
        row = self._tokens.find(token_hash=hash_token(token))
        if row is None:
            return None
        return DeviceToken(row["device_id"], row["role"], json.loads(row["scopes"]), row["issued_at"])

    def revoke_token(self, device_id: str, role: str) -> bool:
        """Revoked: the row stays with an impossible hash, so the generation keeps counting
        and a later token for this (device, role) is a new one."""
        return self._tokens.update((device_id, role), {"token_hash": ""})
