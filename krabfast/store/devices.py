"""Paired devices, pending pairing requests and device tokens.

Device tokens are random 256-bit secrets handed to the device once; only their SHA-256 is
stored, so a copy of the database does not let anyone connect as a device.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field

from krabfast.store.db import Database


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
                          meta=json.loads(row["meta"]))


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = db.conn

    # -- devices ---------------------------------------------------------------------------------
    def get(self, device_id: str) -> PairedDevice | None:
        row = self.conn.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return _device(row) if row else None

    def list(self) -> list[PairedDevice]:
        rows = self.conn.execute("SELECT * FROM devices ORDER BY approved_at, created_at").fetchall()
        return [_device(r) for r in rows]

    def save(self, device: PairedDevice) -> None:
        values = [getattr(device, c) for c in _DEVICE_COLS]
        values[_DEVICE_COLS.index("roles")] = json.dumps(sorted(set(device.roles)))
        values[_DEVICE_COLS.index("scopes")] = json.dumps(sorted(set(device.scopes)))
        with self.db.transaction() as conn:
            conn.execute(f"INSERT OR REPLACE INTO devices ({', '.join(_DEVICE_COLS)}) "
                         f"VALUES ({', '.join('?' * len(_DEVICE_COLS))})", values)

    def touch(self, device_id: str, now_ms: int, ip: str | None) -> None:
        self.conn.execute("UPDATE devices SET last_seen_at = ?, last_ip = ? WHERE device_id = ?",
                          (now_ms, ip, device_id))

    def rename(self, device_id: str, label: str) -> PairedDevice | None:
        self.conn.execute("UPDATE devices SET label = ? WHERE device_id = ?", (label, device_id))
        return self.get(device_id)

    def remove(self, device_id: str) -> bool:
        with self.db.transaction() as conn:
            gone = conn.execute("DELETE FROM devices WHERE device_id = ?", (device_id,)).rowcount
            conn.execute("DELETE FROM device_tokens WHERE device_id = ?", (device_id,))
            conn.execute("DELETE FROM pairing_requests WHERE device_id = ?", (device_id,))
        return bool(gone)

    # -- pairing requests ------------------------------------------------------------------------
    def requests(self) -> list[PairingRequest]:
        rows = self.conn.execute("SELECT * FROM pairing_requests ORDER BY created_at").fetchall()
        return [_request(r) for r in rows]

    def get_request(self, request_id: str) -> PairingRequest | None:
        row = self.conn.execute("SELECT * FROM pairing_requests WHERE request_id = ?",
                                (request_id,)).fetchone()
        return _request(row) if row else None

    def request_for(self, device_id: str, role: str) -> PairingRequest | None:
        row = self.conn.execute("SELECT * FROM pairing_requests WHERE device_id = ? AND role = ?",
                                (device_id, role)).fetchone()
        return _request(row) if row else None

    def add_request(self, device_id: str, public_key: str, role: str, scopes: list[str],
                    meta: dict, now_ms: int) -> tuple[PairingRequest, bool]:
        """Record a pending request (one per device and role: a repeat refreshes it).
        Returns (request, created)."""
        existing = self.request_for(device_id, role)
        with self.db.transaction() as conn:
            if existing is not None:
                merged = sorted(set(existing.scopes) | set(scopes))
                conn.execute("UPDATE pairing_requests SET public_key = ?, scopes = ?, meta = ? "
                             "WHERE request_id = ?",
                             (public_key, json.dumps(merged), json.dumps(meta), existing.request_id))
                return PairingRequest(existing.request_id, device_id, public_key, role, merged,
                                      existing.created_at, meta), False
            request = PairingRequest(str(uuid.uuid4()), device_id, public_key, role,
                                     sorted(set(scopes)), now_ms, meta)
            conn.execute("INSERT INTO pairing_requests VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (request.request_id, device_id, public_key, role,
                          json.dumps(request.scopes), json.dumps(meta), now_ms))
        return request, True

    def drop_request(self, request_id: str) -> PairingRequest | None:
        request = self.get_request(request_id)
        if request is not None:
            self.conn.execute("DELETE FROM pairing_requests WHERE request_id = ?", (request_id,))
        return request

    # -- device tokens ---------------------------------------------------------------------------
    def issue_token(self, device_id: str, role: str, scopes: list[str], now_ms: int) -> str:
        """A fresh token for (device, role), replacing any earlier one."""
        token = secrets.token_urlsafe(32)
        self.conn.execute("INSERT OR REPLACE INTO device_tokens VALUES (?, ?, ?, ?, ?)",
                          (device_id, role, hash_token(token), json.dumps(sorted(set(scopes))), now_ms))
        return token

    def token(self, device_id: str, role: str) -> DeviceToken | None:
        row = self.conn.execute("SELECT * FROM device_tokens WHERE device_id = ? AND role = ?",
                                (device_id, role)).fetchone()
        if row is None:
            return None
        return DeviceToken(row["device_id"], row["role"], json.loads(row["scopes"]), row["issued_at"])

    def check_token(self, device_id: str, role: str, token: str) -> DeviceToken | None:
        row = self.conn.execute("SELECT * FROM device_tokens WHERE device_id = ? AND role = ?",
                                (device_id, role)).fetchone()
        if row is None or not hmac.compare_digest(row["token_hash"], hash_token(token)):
            return None
        return DeviceToken(row["device_id"], row["role"], json.loads(row["scopes"]), row["issued_at"])

    def revoke_token(self, device_id: str, role: str) -> bool:
        return bool(self.conn.execute("DELETE FROM device_tokens WHERE device_id = ? AND role = ?",
                                      (device_id, role)).rowcount)
