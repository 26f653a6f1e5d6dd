"""Node records: what each node declared and which of its commands an operator approved."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from krabfast.store.db import Database, sql_order


@dataclass
class NodeRecord:
    node_id: str
    caps: list[str] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)
    approved: list[str] = field(default_factory=list)
    permissions: dict = field(default_factory=dict)
    display_name: str | None = None
    platform: str | None = None
    version: str | None = None
    device_family: str | None = None
    approved_at: int | None = None
    last_seen_at: int | None = None
    last_seen_reason: str | None = None
    host_stats: dict | None = None


@dataclass
class NodeSurfaceRequest:
    request_id: str
    node_id: str
    commands: list[str]
    caps: list[str]
    created_at: int


_JSON = ("caps", "declared", "approved", "permissions", "host_stats")
_COLS = ("node_id", "display_name", "platform", "version", "device_family", "caps", "declared",
         "approved", "permissions", "approved_at", "last_seen_at", "last_seen_reason", "host_stats")


def _surface_request(row) -> NodeSurfaceRequest:
    return NodeSurfaceRequest(row["request_id"], row["node_id"], json.loads(row["commands"]),
                              json.loads(row["caps"]), row["created_at"])


class NodeStore:
    """Reads are served from the database's in-memory mirror; writes update it at once and
    reach the disk on the writer thread (`self.db.flush()` / `await self.db.flushed()`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._nodes = db.table("nodes")
        self._requests = db.table("node_pairing_requests")

    def get(self, node_id: str) -> NodeRecord | None:
        row = self._nodes.get(node_id)
        if row is None:
            return None
        data = {c: row[c] for c in _COLS}
        for c in _JSON:
            data[c] = json.loads(data[c]) if data[c] is not None else None
        return NodeRecord(**data)

    def list(self) -> list[NodeRecord]:
        ids = sorted((r["node_id"] for r in self._nodes.values()), key=sql_order)
        return [self.get(i) for i in ids]

    def save(self, node: NodeRecord) -> None:
        values = [json.dumps(getattr(node, c)) if c in _JSON and getattr(node, c) is not None
                  else getattr(node, c) for c in _COLS]
        self._nodes.replace(dict(zip(_COLS, values)))

    def remove(self, node_id: str) -> bool:
        with self.db.atomic():
            gone = self._nodes.delete(node_id)
            self._requests.delete_where(node_id=node_id)
        return gone

    # -- surface requests ------------------------------------------------------------------------
    def requests(self) -> list[NodeSurfaceRequest]:
        rows = sorted(self._requests.values(), key=lambda r: sql_order(r["created_at"]))
        return [_surface_request(r) for r in rows]

    def request_for(self, node_id: str) -> NodeSurfaceRequest | None:
        row = self._requests.find(node_id=node_id)
        return _surface_request(row) if row else None

    def add_request(self, node_id: str, commands: list[str], caps: list[str],
                    now_ms: int) -> tuple[NodeSurfaceRequest, bool]:
        """One pending surface request per node; an identical retry reuses it."""
        existing = self.request_for(node_id)
        if existing is not None and sorted(existing.commands) == sorted(commands):
            return existing, False
        request = NodeSurfaceRequest(str(uuid.uuid4()), node_id, sorted(set(commands)),
                                     sorted(set(caps)), now_ms)
        row = {"request_id": request.request_id, "node_id": node_id,
               "commands": json.dumps(request.commands), "caps": json.dumps(request.caps),
               "created_at": now_ms}
        with self.db.atomic():
            self._requests.delete_where(node_id=node_id)
            self._requests.insert(row)
        return request, True

    def drop_request(self, request_id: str) -> NodeSurfaceRequest | None:
        request = next((r for r in self.requests() if r.request_id == request_id), None)
        if request is not None:
            self._requests.delete(request_id)
        return request
