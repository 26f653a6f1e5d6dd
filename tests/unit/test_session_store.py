"""SessionStore: sessions, transcripts (loaded per session, LRU-bounded) and agent runs on the
writer-thread Database; persistence across a reopen and after a crash."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from krabfast.store.db import Database
from krabfast.store.sessions import (MessageRecord, RunRecord, SessionRecord, SessionStore,
                                     parse_session_key, session_key)

REPO = Path(__file__).resolve().parents[2]
KEY = "agent:main:main"


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture
def store(db_path):
    db = Database(db_path)
    yield SessionStore(db)
    db.close()


def _reopen(store: SessionStore, **kw) -> SessionStore:
    store.db.flush().result(10)
    store.db.close()
    return SessionStore(Database(store.db.path), **kw)


def _parts(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def test_keys():
    assert session_key("main") == KEY
    assert session_key("ops", "x:y") == "agent:ops:x:y"
    assert parse_session_key("agent:ops:x:y") == ("ops", "x:y")
    assert parse_session_key("main") is None
    assert parse_session_key("agent::x") is None


def test_ensure_get_and_list_newest_first(store):
    assert store.get(KEY) is None
    record, created = store.ensure(KEY, "main", ts=100)
    assert created and isinstance(record, SessionRecord)
    assert (record.key, record.agent_id, record.created_at, record.updated_at) == (KEY, "main", 100, 100)
    assert len(record.session_id) == 36 and record.message_count == 0
    again, created = store.ensure(KEY, "main", ts=999)
    assert not created and again == record
    store.ensure("agent:main:b", "main", ts=200)
    store.ensure("agent:ops:c", "ops", ts=150, label="Ops", thinking_level="high")
    assert [r.key for r in store.list()] == ["agent:main:b", "agent:ops:c", KEY]
    assert [r.key for r in store.list(agent_id="main")] == ["agent:main:b", KEY]
    ops = store.get("agent:ops:c")
    assert ops.label == "Ops" and ops.settings == {"thinking_level": "high"}
    assert store.by_session_id(ops.session_id) == ops
    store.append_message(KEY, "user", "hi", ts=300)  # activity moves a session up
    assert store.list()[0].key == KEY and store.get(KEY).updated_at == 300


def test_patch(store):
    store.ensure(KEY, "main", ts=1)
    r = store.patch(KEY, label="Mine", model="openai/gpt-x", pinned=True, thinking_level="low",
                    fast_mode="auto")
    assert (r.label, r.model, r.pinned, r.archived) == ("Mine", "openai/gpt-x", True, False)
    assert r.settings == {"fast_mode": "auto", "thinking_level": "low"}
    r = store.patch(KEY, label=None, thinking_level=None, pinned=None, updated_at=50)
    assert (r.label, r.pinned, r.updated_at, r.model) == (None, False, 50, "openai/gpt-x")
    assert r.settings == {"fast_mode": "auto"}
    assert store.get(KEY) == r
    with pytest.raises(ValueError):
        store.patch(KEY, bogus=1)
    with pytest.raises(KeyError):
        store.patch("agent:main:none", label="x")


def test_messages_order_paging_and_lookup(store):
    store.ensure(KEY, "main", ts=1)
    sent = []
    for i in range(1, 8):
        role, content = ("user", f"q{i}") if i % 2 else ("assistant", _parts(f"a{i}"))
        sent.append(store.append_message(KEY, role, content, ts=10 + i, run_id=f"r{i}",
                                         usage={"input": i} if role == "assistant" else None,
                                         stop_reason="stop" if role == "assistant" else None))
    assert [m.seq for m in sent] == list(range(1, 8))
    assert isinstance(sent[0], MessageRecord) and sent[0].content == "q1"
    assert sent[1].content == _parts("a2") and sent[1].usage == {"input": 2}
    assert len({m.message_id for m in sent}) == 7
    assert store.messages(KEY) == sent
    assert [m.seq for m in store.messages(KEY, limit=3)] == [5, 6, 7]
    assert [m.seq for m in store.messages(KEY, limit=3, before_seq=5)] == [2, 3, 4]
    assert [m.seq for m in store.messages(KEY, limit=3, before_seq=2)] == [1]
    assert store.messages(KEY, before_seq=1) == []
    assert store.messages(KEY, limit=0) == []
    assert store.messages("agent:main:unknown") == []
    assert store.message(KEY, sent[3].message_id) == sent[3]
    assert store.message(KEY, "nope") is None
    record = store.get(KEY)
    assert record.message_count == 7 and record.last_run_id == "r7" and record.updated_at == 17
    with pytest.raises(KeyError):
        store.append_message("agent:main:none", "user", "x", ts=1)
    with pytest.raises(ValueError):
        store.append_message(KEY, "tool", "x", ts=1)


def test_reset_and_delete(store):
    store.ensure(KEY, "main", ts=1)
    first = store.append_message(KEY, "user", "old", ts=2)
    old = store.get(KEY)
    new = store.reset(KEY, ts=5)
    assert new.session_id != old.session_id and new.previous_session_id == old.session_id
    assert new.message_count == 0 and new.updated_at == 5
    assert store.messages(KEY) == [] and store.message(KEY, first.message_id) is None
    assert store.append_message(KEY, "user", "new", ts=6).seq == 1
    with pytest.raises(KeyError):
        store.reset("agent:main:none")
    store.ensure("agent:main:other", "main", ts=1)
    store.append_message("agent:main:other", "user", "keep", ts=3)
    assert store.delete(KEY) is True
    assert store.get(KEY) is None and store.messages(KEY) == []
    assert store.delete(KEY) is False
    # re-created under the same key: a fresh session, nothing of the old transcripts
    again, created = store.ensure(KEY, "main", ts=9)
    assert created and store.messages(KEY) == []
    store = _reopen(store)
    assert store.messages(KEY) == []
    assert [m.content for m in store.messages("agent:main:other")] == ["keep"]
    rows = sqlite3.connect(store.db.path).execute(
        "SELECT content FROM session_messages ORDER BY content").fetchall()
    assert rows == [('"keep"',)]  # the deleted session's transcripts (both) are gone
    store.db.close()


def test_persistence_across_reopen(store):
    store.ensure(KEY, "main", ts=1, label="L")
    store.patch(KEY, model="p/m", archived=True, verbose_level="on")
    msgs = [store.append_message(KEY, "user", "hello", ts=2),
            store.append_message(KEY, "assistant", _parts("hi there"), ts=3, run_id="run-1",
                                 usage={"input": 3, "output": 2}, stop_reason="stop",
                                 model={"api": "openai-completions", "provider": "p",
                                        "model": "m"})]
    store.run_started("run-1", KEY, 2)
    store.run_finished("run-1", "ok", 3)
    before = store.get(KEY)
    store = _reopen(store)
    assert store.get(KEY) == before
    assert store.loaded_sessions() == []  # transcripts are not read at start
    assert store.messages(KEY) == msgs
    assert store.loaded_sessions() == [before.session_id]
    assert store.run("run-1") == RunRecord("run-1", KEY, "ok", 2, 3, None)
    assert store.append_message(KEY, "user", "more", ts=4).seq == 3
    store.db.close()


def test_appending_to_an_unread_session_after_reopen_continues_its_numbering(store):
    store.ensure(KEY, "main", ts=1)
    for i in range(3):
        store.append_message(KEY, "user", f"m{i}", ts=i)
    store = _reopen(store)
    assert store.append_message(KEY, "user", "m3", ts=9).seq == 4
    assert [m.content for m in store.messages(KEY)] == ["m0", "m1", "m2", "m3"]
    store.db.close()


def test_transcripts_in_memory_are_bounded(db_path):
    store = SessionStore(Database(db_path), max_loaded_sessions=2)
    keys = [f"agent:main:s{i}" for i in range(5)]
    for i, key in enumerate(keys):
        store.ensure(key, "main", ts=i)
        store.append_message(key, "user", f"hello {i}", ts=i)
    store.db.flush().result(10)  # (what is not on disk yet cannot be dropped)
    store.messages(keys[0])  # a use evicts what is on disk beyond the bound
    assert len(store.loaded_sessions()) == 2
    table = store.db.table("session_messages")
    assert len(table.rows) == 2
    for i, key in enumerate(keys):  # evicted transcripts are read back on use
        assert [m.content for m in store.messages(key)] == [f"hello {i}"]
        assert len(store.loaded_sessions()) <= 2
    store.db.close()


def test_load_sees_writes_not_yet_on_disk_and_skips_deleted_rows(db_path):
    store = SessionStore(Database(db_path), max_loaded_sessions=1)
    store.ensure(KEY, "main", ts=1)
    store.append_message(KEY, "user", "one", ts=1)
    store.db.flush().result(10)
    store.ensure("agent:main:x", "main", ts=1)
    store.messages("agent:main:x")  # evicts KEY's transcript (on disk)
    assert store.loaded_sessions() == [store.get("agent:main:x").session_id]
    assert store.delete(KEY)  # loads it back to delete it, before anything is written
    assert store.get(KEY) is None
    store.ensure(KEY, "main", ts=2)
    assert store.messages(KEY) == []
    store.db.close()


def test_runs_and_pruning(store):
    store.ensure(KEY, "main", ts=1)
    assert store.run_started("a", KEY, 10) == RunRecord("a", KEY, "running", 10)
    store.run_started("b", KEY, 11)
    assert store.run_finished("a", "error", 12, error="boom") == RunRecord("a", KEY, "error", 10, 12,
                                                                           "boom")
    assert store.run_finished("zzz", "ok", 1) is None
    with pytest.raises(ValueError):
        store.run_finished("b", "running", 1)
    assert [r.run_id for r in store.runs(KEY)] == ["a", "b"]
    assert [r.run_id for r in store.runs(status="running")] == ["b"]
    small = SessionStore(store.db, max_finished_runs=2)
    for i in range(5):
        small.run_started(f"p{i}", KEY, 100 + i)
        small.run_finished(f"p{i}", "ok", 200 + i)
    finished = [r.run_id for r in small.runs() if r.status != "running"]
    assert finished == ["p3", "p4"]
    assert small.run("b").status == "running"  # running runs are never pruned


def test_mark_interrupted(store):
    store.ensure(KEY, "main", ts=1)
    store.run_started("live", KEY, 5)
    store.run_started("done", KEY, 5)
    store.run_finished("done", "ok", 6)
    store = _reopen(store)
    marked = store.mark_interrupted(100)
    assert [(r.run_id, r.status, r.ended_at) for r in marked] == [("live", "interrupted", 100)]
    assert store.run("done").status == "ok"
    assert store.mark_interrupted(200) == []
    store.db.close()


_CHILD = textwrap.dedent("""
    import os, sys
    from krabfast.store.db import Database
    from krabfast.store.sessions import SessionStore

    store = SessionStore(Database(sys.argv[1]))
    store.ensure("agent:main:main", "main", ts=1)
    store.append_message("agent:main:main", "user", "hello", ts=2, run_id="run-x")
    store.run_started("run-x", "agent:main:main", 2)
    store.db.flush().result(30)
    print("flushed", flush=True)
    os._exit(0)  # killed mid-run: no close, no atexit
""")


def test_mark_interrupted_after_a_crash(db_path):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(db_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["flushed"], out.stderr
    store = SessionStore(Database(db_path))
    assert store.run("run-x").status == "running"
    marked = store.mark_interrupted(50)
    assert [(r.run_id, r.session_key, r.status, r.ended_at) for r in marked] == [
        ("run-x", KEY, "interrupted", 50)]
    assert [m.content for m in store.messages(KEY)] == ["hello"]
    store = _reopen(store)
    assert store.run("run-x").status == "interrupted"
    store.db.close()


def test_memory_database():
    store = SessionStore(Database(":memory:"), max_loaded_sessions=1)
    for i in range(3):
        key = f"agent:main:m{i}"
        store.ensure(key, "main", ts=i)
        store.append_message(key, "user", f"x{i}", ts=i)
    store.db.flush().result(10)
    for i in range(3):  # nothing is dropped: the mirror is all an in-memory database has
        assert [m.content for m in store.messages(f"agent:main:m{i}")] == [f"x{i}"]
    store.db.close()


def test_a_batch_in_flight_keeps_its_rows_in_memory_and_load_waits_for_it(db_path, monkeypatch):
    import threading

    from krabfast.store import db as dbmod

    store = SessionStore(Database(db_path))
    store.ensure(KEY, "main", ts=1)
    store.append_message(KEY, "user", "one", ts=1)
    store.db.flush().result(10)
    entered, gate = threading.Event(), threading.Event()
    real = dbmod._Core._commit

    def held_commit(self, conn):
        entered.set()
        gate.wait(10)
        real(self, conn)

    monkeypatch.setattr(dbmod._Core, "_commit", held_commit)
    store.append_message(KEY, "user", "two", ts=2)
    assert entered.wait(10)  # the writer has taken the batch and not committed it
    sid = store.get(KEY).session_id
    table = store.db.table("session_messages")
    keys = [(sid, 1), (sid, 2)]
    assert table.forget(keys) is False  # not on disk yet: kept
    threading.Timer(0.2, gate.set).start()
    rows = store.db.load("session_messages", session_id=sid)  # waits for the commit
    assert [r["seq"] for r in rows] == [1, 2]
    assert table.forget(keys) is True
    assert table.rows == {}
    assert [r["seq"] for r in store.db.load("session_messages", session_id=sid)] == [1, 2]
    store.db.close()


def test_rows_keep_the_newest_preview(store):
    store.ensure("agent:main:t", "main", ts=1)
    assert store.preview("agent:main:t") is None and store.preview("agent:main:none") is None
    store.append_message("agent:main:t", "user", "  fix the **build**  ", ts=2)
    assert store.preview("agent:main:t") == "fix the build"
    store.append_message("agent:main:t", "assistant", _parts("**Done:** it builds"), ts=3)
    store.append_message("agent:main:t", "assistant", _parts("NO_REPLY"), ts=4)  # not shown
    assert store.preview("agent:main:t") == "Done: it builds"
    again = _reopen(store)
    assert again.preview("agent:main:t") == "Done: it builds"
    again.reset("agent:main:t", ts=6)
    assert again.preview("agent:main:t") is None
    again.append_message("agent:main:t", "assistant", _parts("*hello*"), ts=7)
    assert again.preview("agent:main:t") == "hello"


def test_sessions_from_before_schema_6_learn_their_preview_on_first_use(db_path):
    from krabfast.store.migrations import MIGRATIONS

    conn = sqlite3.connect(db_path)  # a file krabfast wrote at schema 5
    for statement in MIGRATIONS[:5]:
        conn.executescript(statement)
    conn.execute("PRAGMA user_version=5")
    conn.execute("INSERT INTO sessions (session_key, agent_id, session_id, message_count, "
                 "created_at, updated_at) VALUES ('agent:main:old', 'main', 's1', 2, 1, 2), "
                 "('agent:main:empty', 'main', 's2', 0, 1, 1)")
    conn.execute("INSERT INTO session_messages (session_id, seq, message_id, session_key, role, "
                 "content, ts) VALUES ('s1', 1, 'm1', 'agent:main:old', 'user', "
                 "'\"write the report\"', 1), ('s1', 2, 'm2', 'agent:main:old', 'assistant', "
                 "'[{\"type\":\"text\",\"text\":\"# Report\\nall good\"}]', 2)")
    conn.commit()
    conn.close()
    db = Database(db_path)
    try:
        store = SessionStore(db)
        assert store.loaded_sessions() == []  # nothing read when the store opens
        assert store.preview("agent:main:old") == "Report all good"
        assert store.preview("agent:main:empty") is None
        db.flush().result(10)
    finally:
        db.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT preview_known FROM sessions ORDER BY session_key").fetchall() == [
        (1,), (1,)]
    conn.close()


def test_a_sessions_usage_persists_and_a_reset_zeroes_its_counters(store):
    store.ensure(KEY, "main", ts=1)
    assert store.get(KEY).usage is None
    usage = {"inputTokens": 12, "outputTokens": 3, "totalTokens": 12, "totalTokensFresh": True,
             "estimatedCostUsd": 0.5}
    assert store.set_usage(KEY, usage).usage == usage
    store = _reopen(store)
    assert store.get(KEY).usage == usage
    store.reset(KEY, ts=5)
    assert store.get(KEY).usage == {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0,
                                    "totalTokensFresh": True}
    with pytest.raises(KeyError):
        store.set_usage("agent:main:none", usage)
    store.db.close()
