"""Chat sessions, their transcripts and agent runs (tables of migrations 5 and 6).

A session is one row per session key ("agent:<agentId>:<name>", e.g. "agent:main:main"); its
`session_id` (a uuid) names the current transcript and changes on reset, so a reset session
starts an empty transcript (the old one stays in the file, out of every read). Messages are
numbered 1..n per `session_id` (`seq`) and carry a uuid `message_id`.

Memory stays bounded: sessions and runs are mirrored whole (small rows; finished runs beyond
`max_finished_runs` are pruned, oldest first), but messages are not loaded at start. The
transcript of a session is read from the file the first time it is needed (`messages`,
`message`, `append_message`), kept while it is among the `max_loaded_sessions` most recently
used, then dropped from memory (once the writer has it on disk; it is read again on next
use). That first read is one indexed SQLite query on the caller's thread. A session's row
keeps the preview of its newest message (`preview`, store/session_text.py), set when a
message is appended, so listing sessions reads no transcript.

Every read is served from memory and returns frozen dataclasses (don't mutate their
`content`, `usage` or `settings`); writes update memory at once and reach the file on the
database's writer thread (`db.flush()` / `await db.flushed()` to wait for it). Times are
milliseconds since the epoch.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from krabfast.store.db import Database
from krabfast.store.session_text import display_text

ROLES = frozenset({"user", "assistant", "system"})
RUN_STATUSES = frozenset({"running", "ok", "error", "aborted", "interrupted"})
# sessions.patch fields stored in their own column (the rest go to `settings`).
COLUMN_FIELDS = ("label", "title", "model", "pinned", "archived", "unread")
_FLAGS = frozenset({"pinned", "archived", "unread"})
# sessions.patch fields (reference SessionsPatchParams, snake_case) kept in `settings`.
SETTINGS_FIELDS = frozenset({
    "icon", "color", "category", "board_face", "status_note", "attention", "context_window",
    "thinking_level", "fast_mode", "verbose_level", "trace_level", "reasoning_level",
    "response_usage", "elevated_level", "exec_host", "exec_security", "exec_ask", "exec_node",
    "permission_mode", "send_policy", "group_activation", "tool_overrides", "archived_at",
    "pinned_at", "marked_unread_at", "last_read_at", "agent_status", "display_name",
})
PATCH_FIELDS = frozenset(COLUMN_FIELDS) | SETTINGS_FIELDS | {"updated_at"}
# A reset session's usage fields (the reference's row after sessions.reset).
RESET_USAGE = {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0, "totalTokensFresh": True}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def session_key(agent_id: str, name: str = "main") -> str:
    return f"agent:{agent_id}:{name}"


def parse_session_key(key: str) -> tuple[str, str] | None:
    """("main", "main") for "agent:main:main"; None for a key not of that form."""
    parts = key.split(":", 2)
    if len(parts) != 3 or parts[0] != "agent" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class SessionRecord:
    key: str
    agent_id: str
    session_id: str
    created_at: int
    updated_at: int
    label: str | None = None
    title: str | None = None
    model: str | None = None
    pinned: bool = False
    archived: bool = False
    unread: bool = False
    settings: dict = field(default_factory=dict)  # SETTINGS_FIELDS that are set
    message_count: int = 0  # messages of the current session_id (the last seq)
    last_run_id: str | None = None
    previous_session_id: str | None = None
    # The row's token counters and cost of the last turn (inputTokens, outputTokens,
    # totalTokens, totalTokensFresh, estimatedCostUsd; models/usage.py), None before any.
    usage: dict | None = None


@dataclass(frozen=True)
class MessageRecord:
    session_key: str
    session_id: str
    seq: int
    message_id: str
    role: str
    content: object  # user: the raw string; assistant: [{"type": "text", "text": ...}, ...]
    ts: int
    run_id: str | None = None
    usage: dict | None = None
    stop_reason: str | None = None
    model: dict | None = None  # what answered (api, provider, model), for assistant messages


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    session_key: str
    status: str
    started_at: int
    ended_at: int | None = None
    error: str | None = None


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _session(row: dict) -> SessionRecord:
    return SessionRecord(
        key=row["session_key"], agent_id=row["agent_id"], session_id=row["session_id"],
        created_at=row["created_at"], updated_at=row["updated_at"], label=row["label"],
        title=row["title"], model=row["model"], pinned=bool(row["pinned"]),
        archived=bool(row["archived"]), unread=bool(row["unread"]),
        settings=json.loads(row["settings"]), message_count=row["message_count"],
        last_run_id=row["last_run_id"], previous_session_id=row["previous_session_id"],
        usage=json.loads(row["usage"]) if row.get("usage") else None)


def _message(row: dict) -> MessageRecord:
    usage = row["usage"]
    return MessageRecord(
        session_key=row["session_key"], session_id=row["session_id"], seq=row["seq"],
        message_id=row["message_id"], role=row["role"], content=json.loads(row["content"]),
        ts=row["ts"], run_id=row["run_id"], usage=json.loads(usage) if usage is not None else None,
        stop_reason=row["stop_reason"], model=json.loads(row["model"]) if row.get("model") else None)


def _run(row: dict) -> RunRecord:
    return RunRecord(run_id=row["run_id"], session_key=row["session_key"], status=row["status"],
                     started_at=row["started_at"], ended_at=row["ended_at"], error=row["error"])


class SessionStore:
    """See the module docstring."""

    def __init__(self, db: Database, *, max_loaded_sessions: int = 32,
                 max_finished_runs: int = 1000) -> None:
        self.db = db
        self._sessions = db.table("sessions")
        self._messages = db.table("session_messages")
        self._runs = db.table("agent_runs")
        self.max_loaded_sessions = max(1, max_loaded_sessions)
        self.max_finished_runs = max(0, max_finished_runs)
        self._records: dict[str, tuple[dict, SessionRecord]] = {}  # parsed, by mirror row identity
        # Transcripts in memory, by session_id, least recently used first.
        self._loaded: OrderedDict[str, list[MessageRecord]] = OrderedDict()
        finished = sorted((r for r in self._runs.values() if r["status"] != "running"),
                          key=lambda r: (r["ended_at"] or 0, r["started_at"]))
        self._finished: deque[str] = deque(r["run_id"] for r in finished)
        self._prune_runs()

    def preview(self, key: str) -> str | None:
        """The row's preview of the session's newest message. A session written before
        the store kept it (schema 6) gets it from its transcript on first use."""
        row = self._sessions.get(key)
        if row is None:
            return None
        if not row["preview_known"]:
            shown = (display_text(m.role, m.content, flatten=True)
                     for m in reversed(self._transcript(row["session_id"])))
            last = next((t for t in shown if t), None)
            self._sessions.update((key,), {"last_preview": last, "preview_known": 1})
            return last
        return row["last_preview"]

    # -- sessions --------------------------------------------------------------------------------
    def get(self, key: str) -> SessionRecord | None:
        row = self._sessions.get(key)
        if row is None:
            return None
        cached = self._records.get(key)
        if cached is not None and cached[0] is row:
            return cached[1]
        record = _session(row)
        self._records[key] = (row, record)
        return record

    def by_session_id(self, session_id: str) -> SessionRecord | None:
        row = self._sessions.find(session_id=session_id)
        return self.get(row["session_key"]) if row else None

    def ensure(self, key: str, agent_id: str, *, ts: int | None = None,
               **fields) -> tuple[SessionRecord, bool]:
        """The session for `key`, created (with a new session_id and `fields`, as for
        `patch`) when there is none: (record, created)."""
        record = self.get(key)
        if record is not None:
            return record, False
        ts = now_ms() if ts is None else ts
        row = {"session_key": key, "agent_id": agent_id, "session_id": str(uuid.uuid4()),
               "created_at": ts, "updated_at": ts}
        row.update({"settings": "{}", "pinned": 0, "archived": 0, "unread": 0, "preview_known": 1})
        row.update(self._changes(row, fields))
        self._sessions.insert(row)
        self._new_transcript(row["session_id"])
        return self.get(key), True

    def list(self, agent_id: str | None = None) -> list[SessionRecord]:
        """Newest (updated_at) first."""
        rows = self._sessions.values()
        if agent_id is not None:
            rows = [r for r in rows if r["agent_id"] == agent_id]
        rows.sort(key=lambda r: (-r["updated_at"], -r["created_at"], r["session_key"]))
        return [self.get(r["session_key"]) for r in rows]

    def _changes(self, row: dict, fields: dict) -> dict:
        """Column values for `fields` applied to `row` (None clears a field)."""
        unknown = set(fields) - PATCH_FIELDS
        if unknown:
            raise ValueError(f"not a session field: {', '.join(sorted(unknown))}")
        changes: dict = {}
        settings = None
        for name, value in fields.items():
            if name in _FLAGS:
                changes[name] = int(bool(value))
            elif name in COLUMN_FIELDS or name == "updated_at":
                if name == "updated_at" and value is None:
                    continue
                changes[name] = value
            else:
                if settings is None:
                    settings = json.loads(row.get("settings") or "{}")
                if value is None:
                    settings.pop(name, None)
                else:
                    settings[name] = value
        if settings is not None:
            changes["settings"] = _dumps(dict(sorted(settings.items())))
        return changes

    def patch(self, key: str, **fields) -> SessionRecord:
        """Set fields (`PATCH_FIELDS`: the columns, `SETTINGS_FIELDS`, `updated_at`); None
        clears one. KeyError for an unknown session, ValueError for an unknown field."""
        row = self._sessions.get(key)
        if row is None:
            raise KeyError(key)
        changes = self._changes(row, fields)
        if changes:
            self._sessions.update((key,), changes)
        return self.get(key)

    def reset(self, key: str, *, ts: int | None = None) -> SessionRecord:
        """A new session_id: reads see an empty transcript (the old one stays in the file).
        KeyError for an unknown session."""
        row = self._sessions.get(key)
        if row is None:
            raise KeyError(key)
        old = row["session_id"]
        new = str(uuid.uuid4())
        self._sessions.update((key,), {
            "session_id": new, "previous_session_id": old, "message_count": 0,
            "last_preview": None, "preview_known": 1,
            # As the reference: a reset session's counters start at zero.
            "usage": _dumps(RESET_USAGE),
            "updated_at": now_ms() if ts is None else ts})
        self._new_transcript(new)
        old_transcript = self._loaded.get(old)
        if old_transcript is not None:
            if self._messages.forget([(old, m.seq) for m in old_transcript]):
                del self._loaded[old]
            else:  # not on disk yet: the first to go later
                self._loaded.move_to_end(old, last=False)
        return self.get(key)

    def set_usage(self, key: str, usage: dict | None) -> SessionRecord:
        """Set the session's usage fields (what its row shows of the last turn's tokens).
        KeyError for an unknown session."""
        if self._sessions.get(key) is None:
            raise KeyError(key)
        self._sessions.update((key,), {"usage": _dumps(usage) if usage is not None else None})
        return self.get(key)

    def delete(self, key: str) -> bool:
        """The session and every transcript it had (runs stay). False if there was none."""
        row = self._sessions.get(key)
        if row is None:
            return False
        found = self.db.load("session_messages", session_key=key)
        with self.db.atomic():
            self._sessions.delete(key)
            self._messages.delete_where(session_key=key)
        self._records.pop(key, None)
        for session_id in {row["session_id"], *(r["session_id"] for r in found)}:
            self._loaded.pop(session_id, None)
        return True

    # -- messages --------------------------------------------------------------------------------
    def _new_transcript(self, session_id: str) -> None:
        """A session id made here has no messages on disk: its (empty) transcript is known,
        so its first read does not query the file (no disk read on the event loop)."""
        self._loaded[session_id] = []
        self._evict(self.max_loaded_sessions)

    def _transcript(self, session_id: str) -> list[MessageRecord]:
        """The messages of `session_id`, in seq order, loaded on first use (LRU-bounded)."""
        loaded = self._loaded.get(session_id)
        if loaded is not None:
            self._loaded.move_to_end(session_id)
            if len(self._loaded) > self.max_loaded_sessions:  # left over: were not on disk
                self._evict(self.max_loaded_sessions)
            return loaded
        rows = self.db.load("session_messages", session_id=session_id)
        loaded = sorted((_message(r) for r in rows), key=lambda m: m.seq)
        self._loaded[session_id] = loaded
        self._evict(self.max_loaded_sessions)
        return loaded

    def _evict(self, limit: int) -> None:
        """Drop the least recently used transcripts beyond `limit` that are on disk."""
        excess = len(self._loaded) - limit
        if excess <= 0 or not self._messages.forgettable():
            return  # (nothing can go while the writer has transcripts in flight: next time)
        for session_id in list(self._loaded)[:-1]:  # never the one in use
            if excess <= 0:
                break
            keys = [(session_id, m.seq) for m in self._loaded[session_id]]
            if self._messages.forget(keys):
                del self._loaded[session_id]
                excess -= 1

    def loaded_sessions(self) -> list[str]:
        """The session_ids whose transcripts are in memory (least recently used first)."""
        return list(self._loaded)

    def append_message(self, key: str, role: str, content, *, ts: int, run_id: str | None = None,
                       usage: dict | None = None, stop_reason: str | None = None,
                       model: dict | None = None) -> MessageRecord:
        """Append to the current transcript (seq = last + 1); the session's updated_at
        becomes `ts`. KeyError for an unknown session."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        if not isinstance(content, (str, list)):
            raise TypeError("content is a string or a list of content parts")
        record = self.get(key)
        if record is None:
            raise KeyError(key)
        transcript = self._transcript(record.session_id)
        seq = max(record.message_count, transcript[-1].seq if transcript else 0) + 1
        message = MessageRecord(key, record.session_id, seq, str(uuid.uuid4()), role, content, ts,
                                run_id, usage, stop_reason, model)
        row = {"session_id": record.session_id, "seq": seq, "message_id": message.message_id,
               "session_key": key, "role": role, "content": _dumps(content), "ts": ts,
               "run_id": run_id, "usage": _dumps(usage) if usage is not None else None,
               "stop_reason": stop_reason, "model": _dumps(model) if model is not None else None}
        changes = {"message_count": seq, "updated_at": max(ts, record.updated_at)}
        if run_id is not None:
            changes["last_run_id"] = run_id
        preview = display_text(role, content, flatten=True)
        if preview is not None:
            changes["last_preview"] = preview
            changes["preview_known"] = 1
        with self.db.atomic():
            self._messages.insert(row)
            self._sessions.update((key,), changes)
        transcript.append(message)
        return message

    def messages(self, key: str, *, limit: int | None = None,
                 before_seq: int | None = None) -> list[MessageRecord]:
        """The current transcript, oldest first: the newest `limit` messages with
        seq < `before_seq` (page backwards with the first seq of the previous page). An
        unknown session has none."""
        record = self.get(key)
        if record is None:
            return []
        transcript = self._transcript(record.session_id)
        end = len(transcript)
        if before_seq is not None:
            lo, hi = 0, end  # first index with seq >= before_seq
            while lo < hi:
                mid = (lo + hi) // 2
                if transcript[mid].seq < before_seq:
                    lo = mid + 1
                else:
                    hi = mid
            end = lo
        start = 0 if limit is None else max(0, end - max(0, limit))
        return transcript[start:end]

    def message(self, key: str, message_id: str) -> MessageRecord | None:
        """A message of the session's current transcript, by id."""
        record = self.get(key)
        if record is None:
            return None
        for message in reversed(self._transcript(record.session_id)):
            if message.message_id == message_id:
                return message
        return None

    # -- runs ------------------------------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord | None:
        row = self._runs.get(run_id)
        return _run(row) if row else None

    def runs(self, key: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Oldest start first."""
        match = {}
        if key is not None:
            match["session_key"] = key
        if status is not None:
            match["status"] = status
        rows = self._runs.select(**match)
        rows.sort(key=lambda r: r["started_at"])
        return [_run(r) for r in rows]

    def run_started(self, run_id: str, key: str, ts: int) -> RunRecord:
        self._runs.replace({"run_id": run_id, "session_key": key, "status": "running",
                            "started_at": ts, "ended_at": None, "error": None})
        try:
            self._finished.remove(run_id)  # a run id reused (rare: retries use the cache)
        except ValueError:
            pass
        return self.run(run_id)

    def run_finished(self, run_id: str, status: str, ts: int,
                     error: str | None = None) -> RunRecord | None:
        """None for an unknown run."""
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"not a final run status: {status!r}")
        row = self._runs.get(run_id)
        if row is None:
            return None
        was_running = row["status"] == "running"
        self._runs.update((run_id,), {"status": status, "ended_at": ts, "error": error})
        if was_running:
            self._finished.append(run_id)
            self._prune_runs()
        return self.run(run_id)

    def mark_interrupted(self, ts: int) -> list[RunRecord]:
        """Runs still "running" (a previous process died during them) become "interrupted".
        Call once at start-up, before any run starts."""
        rows = [r for r in self._runs.values() if r["status"] == "running"]
        with self.db.atomic():
            for row in rows:
                self._runs.update((row["run_id"],), {"status": "interrupted", "ended_at": ts,
                                                      "error": "gateway restarted during the run"})
        self._finished.extend(r["run_id"] for r in rows)
        self._prune_runs()
        return [self.run(r["run_id"]) for r in rows]

    def _prune_runs(self) -> None:
        while len(self._finished) > self.max_finished_runs:
            run_id = self._finished.popleft()
            row = self._runs.get(run_id)
            if row is not None and row["status"] != "running":
                self._runs.delete(run_id)


__all__ = ["SessionStore", "SessionRecord", "MessageRecord", "RunRecord", "session_key",
           "parse_session_key", "now_ms", "PATCH_FIELDS", "SETTINGS_FIELDS", "ROLES",
           "RUN_STATUSES"]
