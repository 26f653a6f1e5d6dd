"""The database schema, as numbered migrations (krabfast/store/db.py applies them)."""

from __future__ import annotations

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
    # 5: sessions (one row per session key), their transcripts and agent runs. Messages are
    # a partial table (PARTIAL_TABLES): loaded per session on first use, not at open.
    """
    CREATE TABLE sessions (
        session_key         TEXT PRIMARY KEY,  -- "agent:<agentId>:<name>"
        agent_id            TEXT NOT NULL,
        session_id          TEXT NOT NULL,     -- uuid; a new one on reset
        label               TEXT,
        title               TEXT,              -- displayName
        model               TEXT,              -- override, "<provider>/<model>"
        pinned              INTEGER NOT NULL DEFAULT 0,
        archived            INTEGER NOT NULL DEFAULT 0,
        unread              INTEGER NOT NULL DEFAULT 0,
        settings            TEXT NOT NULL DEFAULT '{}',  -- JSON: other sessions.patch fields
        message_count       INTEGER NOT NULL DEFAULT 0,  -- messages of session_id (= last seq)
        last_run_id         TEXT,
        previous_session_id TEXT,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL
    );
    CREATE TABLE session_messages (
        session_id   TEXT NOT NULL,
        seq          INTEGER NOT NULL,         -- 1..n per session_id
        message_id   TEXT NOT NULL,            -- uuid
        session_key  TEXT NOT NULL,
        role         TEXT NOT NULL,            -- user | assistant | system
        content      TEXT NOT NULL,            -- JSON: a string (user) or content parts
        ts           INTEGER NOT NULL,
        run_id       TEXT,
        usage        TEXT,                     -- JSON object
        stop_reason  TEXT,
        PRIMARY KEY (session_id, seq)
    );
    CREATE INDEX session_messages_key ON session_messages(session_key);
    CREATE TABLE agent_runs (
        run_id       TEXT PRIMARY KEY,
        session_key  TEXT NOT NULL,
        status       TEXT NOT NULL,            -- running | ok | error | aborted | interrupted
        started_at   INTEGER NOT NULL,
        ended_at     INTEGER,
        error        TEXT
    );
    """,
    # 6: the preview a session row shows of its newest message (store/session_text.py),
    # kept when a message is appended so listing sessions reads no transcript. Sessions
    # from before have preview_known = 0 and get it from their transcript on first use.
    """
    ALTER TABLE sessions ADD COLUMN last_preview TEXT;  -- the newest message that shows
    ALTER TABLE sessions ADD COLUMN preview_known INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: a session's token counters and cost of its last turn (JSON: the row's
    # inputTokens, outputTokens, totalTokens, totalTokensFresh, estimatedCostUsd).
    "ALTER TABLE sessions ADD COLUMN usage TEXT;",
    # 8: what answered an assistant message (JSON: api, provider, model), as the reference's
    # transcript says.
    "ALTER TABLE session_messages ADD COLUMN model TEXT;",
)
