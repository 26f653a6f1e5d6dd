"""The SQLite database: one file in the state directory, WAL mode, numbered migrations.

Writes are small and rare (pairing, token issue), so they run inline on the event loop;
WAL + synchronous=NORMAL makes each a few hundred microseconds and keeps every committed
write across a crash or `kill -9` (WAL survives process death; only an OS crash could lose
the last transactions).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# Each entry moves the schema from version i to i+1. Append only; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE devices (
        device_id     TEXT PRIMARY KEY,
        public_key    TEXT NOT NULL,
        display_name  TEXT,
        label         TEXT,
        platform      TEXT,
        device_family TEXT,
        client_id     TEXT,
        client_mode   TEXT,
        roles         TEXT NOT NULL,   -- JSON list of approved roles
        scopes        TEXT NOT NULL,   -- JSON list of approved operator scopes
        created_at    INTEGER NOT NULL,
        approved_at   INTEGER,
        last_seen_at  INTEGER,
        last_ip       TEXT
    );
    CREATE TABLE pairing_requests (
        request_id  TEXT PRIMARY KEY,
        device_id   TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        role        TEXT NOT NULL,
        scopes      TEXT NOT NULL,     -- JSON list
        meta        TEXT NOT NULL,     -- JSON object: client metadata, remote ip, repair flag
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX pairing_requests_device ON pairing_requests(device_id);
    CREATE TABLE device_tokens (
        device_id   TEXT NOT NULL,
        role        TEXT NOT NULL,
        token_hash  TEXT NOT NULL,     -- sha256 hex of the token; the token itself is never stored
        scopes      TEXT NOT NULL,     -- JSON list
        issued_at   INTEGER NOT NULL,
        PRIMARY KEY (device_id, role)
    );
    """,
    # 2: how a device was approved (owner, silent).
    "ALTER TABLE devices ADD COLUMN approved_via TEXT;",
    # 3: device tokens are derived (HMAC of device, role, generation; the key is a file beside
    # the database) so the same token can be handed out again without storing it; pending
    # requests expire from their last retry.
    """
    ALTER TABLE device_tokens ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pairing_requests ADD COLUMN refreshed_at INTEGER;
    """,
    # 4: nodes: the approved command surface per node (a node is its device) and requests
    # to widen it.
    """
    CREATE TABLE nodes (
        node_id          TEXT PRIMARY KEY,
        display_name     TEXT,
        platform         TEXT,
        version          TEXT,
        device_family    TEXT,
        caps             TEXT NOT NULL,   -- JSON list, last declared
        declared         TEXT NOT NULL,   -- JSON list of commands, last declared
        approved         TEXT NOT NULL,   -- JSON list of approved commands
        permissions      TEXT NOT NULL,   -- JSON object, last declared
        approved_at      INTEGER,
        last_seen_at     INTEGER,
        last_seen_reason TEXT,
        host_stats       TEXT             -- JSON object, last node.host.stats
    );
    CREATE TABLE node_pairing_requests (
        request_id  TEXT PRIMARY KEY,
        node_id     TEXT NOT NULL,
        commands    TEXT NOT NULL,        -- JSON list: the surface asked for
        caps        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    """,
)


def default_state_dir() -> Path:
    env = os.environ.get("KRABFAST_STATE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".krabfast"


class Database:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike | None = None) -> "Database":
        root = Path(state_dir) if state_dir else default_state_dir()
        return cls(root / "gateway.sqlite3")

    @property
    def version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema version {current}, newer than this "
                               f"krabfast ({len(MIGRATIONS)}): upgrade krabfast")
        for number in range(current, len(MIGRATIONS)):
            with self.transaction():
                for statement in _statements(MIGRATIONS[number]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    def transaction(self):
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
