"""The store's writer thread: SQLite commits never block the event loop, reads see writes at
once (the in-memory mirror), flush() means committed, close() and a normal exit lose
nothing, and writer failures surface on flush() instead of vanishing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from krabfast.store.db import Database, WriteError
from krabfast.store.devices import DeviceStore, PairedDevice
from krabfast.store.nodes import NodeRecord, NodeStore

REPO = Path(__file__).resolve().parents[2]
COMMIT_DELAY_S = 0.2


def _device(i: int, **kw) -> PairedDevice:
    return PairedDevice(device_id=f"dev-{i}", public_key=f"pk-{i}", roles=["operator"],
                        scopes=["operator.read"], created_at=1000 + i, **kw)


def _slow_commits(monkeypatch, delay: float = COMMIT_DELAY_S) -> list[float]:
    """Every COMMIT on every connection opened from now on sleeps `delay` first (on
    whatever thread runs it). Returns the list of commit times, appended as they happen."""
    commits: list[float] = []
    real_connect = sqlite3.connect

    def on_statement(sql: str) -> None:
        if sql.lstrip().upper().startswith("COMMIT"):
            time.sleep(delay)
            commits.append(time.monotonic())

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(on_statement)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return commits


def _on_disk(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path) -> Path:
    path = tmp_path / "gateway.sqlite3"
    Database(path).close()  # created and migrated at full speed, before any slowdown
    return path


# -- (1) the loop never waits on a commit ---------------------------------------------------------

def test_a_burst_of_writes_does_not_block_the_loop_on_slow_commits(db_path, monkeypatch):
    commits = _slow_commits(monkeypatch)
    db = Database(db_path)
    devices, nodes = DeviceStore(db), NodeStore(db)
    devices._token_key = b"k" * 32

    async def main():
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        done = False

        async def ticker():
            while not done:
                start = loop.time()
                await asyncio.sleep(0.01)
                lags.append(loop.time() - start - 0.01)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        for i in range(100):  # 100 writes of every kind, each its own commit in the old code
            kind = i % 4
            if kind == 0:
                devices.save(_device(i))
            elif kind == 1:
                devices.issue_token(f"dev-{i - 1}", "operator", ["operator.read"], 2000 + i)
            elif kind == 2:
                devices.touch(f"dev-{i - 2}", 3000 + i, "10.0.0.1")
            else:
                nodes.save(NodeRecord(f"node-{i}", caps=["system"], declared=["system.run"]))
            await asyncio.sleep(0)  # the writer runs meanwhile
        burst = time.perf_counter() - start
        # 100 inline commits would take 20 s; the writes return before even one commit is done.
        assert burst < COMMIT_DELAY_S, burst
        start = time.perf_counter()
        await db.flushed()
        flushing = time.perf_counter() - start
        await asyncio.sleep(0.05)
        done = True
        await task
        return burst, flushing, max(lags)

    burst, flushing, lag = asyncio.run(main())
    # The slowdown was in effect: waiting for durability took at least one slow commit.
    assert commits and flushing >= COMMIT_DELAY_S * 0.9, (commits, flushing)
    # The loop kept serving its 10 ms timer while the writer slept in its commits.
    assert lag < COMMIT_DELAY_S / 2, lag
    # Grouped: far fewer commits than writes.
    assert len(commits) <= 10, len(commits)
    db.close()
    assert _on_disk(db_path, "SELECT count(*) FROM devices") == [(25,)]
    assert _on_disk(db_path, "SELECT count(*) FROM device_tokens") == [(25,)]
    assert _on_disk(db_path, "SELECT count(*) FROM nodes") == [(25,)]
    assert _on_disk(db_path, "SELECT last_ip FROM devices WHERE device_id = 'dev-0'") == [("10.0.0.1",)]


# -- (2) reads see writes at once, before the commit ------------------------------------------------

def test_reads_right_after_writes_see_them_while_the_commit_is_in_flight(db_path, monkeypatch):
    _slow_commits(monkeypatch)
    db = Database(db_path)
    devices, nodes = DeviceStore(db), NodeStore(db)
    start = time.perf_counter()

    devices.save(_device(1))
    assert devices.get("dev-1").public_key == "pk-1"
    devices.touch("dev-1", 5000, "10.0.0.9")
    assert (devices.get("dev-1").last_seen_at, devices.get("dev-1").last_ip) == (5000, "10.0.0.9")
    assert devices.rename("dev-1", "laptop").name == "laptop"
    token = devices.issue_token("dev-1", "operator", ["operator.read"], 6000)
    assert devices.check_token("dev-1", "operator", token).issued_at == 6000
    assert devices.current_token("dev-1", "operator") == token
    assert devices.revoke_token("dev-1", "operator")
    assert devices.token("dev-1", "operator") is None
    request, superseded = devices.add_request("dev-2", "pk-2", "operator", ["operator.read"], {"ip": "x"}, 7000)
    assert superseded is None and devices.get_request(request.request_id).created_at == 7000
    wider, superseded = devices.add_request("dev-2", "pk-2", "operator", ["operator.write"], {}, 7001)
    assert superseded.request_id == request.request_id
    assert [r.request_id for r in devices.requests()] == [wider.request_id]
    assert devices.request_for("dev-2", "operator").scopes == ["operator.read", "operator.write"]
    assert devices.drop_request(wider.request_id).request_id == wider.request_id
    assert devices.requests() == []
    nodes.save(NodeRecord("node-1", caps=["system"], approved=["system.run"], host_stats={"cpu": 1}))
    assert nodes.get("node-1").host_stats == {"cpu": 1}
    surface, created = nodes.add_request("node-1", ["system.run", "system.which"], ["system"], 8000)
    assert created and nodes.request_for("node-1").request_id == surface.request_id
    assert nodes.remove("node-1") and nodes.get("node-1") is None and nodes.requests() == []
    assert devices.remove("dev-1") and devices.get("dev-1") is None and devices.list() == []
    # A returned record is a copy: changing it changes nothing until it is saved.
    devices.save(_device(3))
    devices.get("dev-3").roles.append("node")
    assert devices.get("dev-3").roles == ["operator"]

    elapsed = time.perf_counter() - start
    assert elapsed < COMMIT_DELAY_S, elapsed  # all of it ran while the first commit was still sleeping
    db.flush().result(10)
    db.close()
    assert _on_disk(db_path, "SELECT device_id FROM devices") == [("dev-3",)]


# -- (3) flush() and close() make it durable for the next opener ----------------------------------

def test_flush_and_close_persist_every_write(db_path):
    db = Database(db_path)
    devices = DeviceStore(db)
    devices._token_key = b"k" * 32
    devices.save(_device(1))
    token = devices.issue_token("dev-1", "operator", ["operator.read"], 2000)
    db.flush().result(10)
    assert _on_disk(db_path, "SELECT device_id FROM devices") == [("dev-1",)]
    fresh = Database(db_path)  # another connection, same file: sees what was flushed
    assert DeviceStore(fresh).get("dev-1").public_key == "pk-1"
    fresh.close()

    for i in range(2, 50):
        devices.save(_device(i))
    devices.touch("dev-1", 9000, "10.1.1.1")
    devices.rename("dev-2", "phone")
    devices.remove("dev-3")
    db.close()  # no flush: close drains and commits
    db.close()  # idempotent
    assert db.flush().result(0) is None
    with pytest.raises(sqlite3.ProgrammingError):
        devices.save(_device(99))
    assert devices.get("dev-2").label == "phone"  # reads keep working

    again = Database(db_path)
    store = DeviceStore(again)
    store._token_key = b"k" * 32
    assert len(store.list()) == 48 and store.get("dev-3") is None
    assert (store.get("dev-1").last_seen_at, store.get("dev-2").label) == (9000, "phone")
    assert store.check_token("dev-1", "operator", token) is not None
    again.close()


def test_memory_database_behaves_the_same():
    db = Database(":memory:")
    devices = DeviceStore(db)
    devices.save(_device(1))
    assert devices.get("dev-1").public_key == "pk-1"
    token = devices.issue_token("dev-1", "operator", ["operator.read"], 1)
    assert devices.check_token("dev-1", "operator", token)
    asyncio.run(db.flushed())
    db.close()


# -- (4) flushed means on disk, even if the process dies right after --------------------------------

_CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from krabfast.store.db import Database
    from krabfast.store.devices import DeviceStore, PairedDevice

    db = Database(sys.argv[1])
    store = DeviceStore(db)
    for i in range(20):
        store.save(PairedDevice(f"dev-{i}", f"pk-{i}", ["operator"], [], created_at=i))
    token = store.issue_token("dev-0", "operator", [], 5)
    if sys.argv[2] == "flush-then-die":
        asyncio.run(db.flushed())
        print("flushed", token, flush=True)
        os._exit(0)  # no close, no atexit, no thread joins
    print("exiting", token, flush=True)  # a normal exit, without flush or close
""")


@pytest.mark.parametrize("how", ["flush-then-die", "plain-exit"])
def test_writes_survive_the_process_ending(tmp_path, how):
    path = tmp_path / "gateway.sqlite3"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    word, token = out.stdout.split()
    assert word == ("flushed" if how == "flush-then-die" else "exiting")
    assert time.monotonic() - start < 30  # the writer thread does not hold the exit up
    db = Database(path)
    store = DeviceStore(db)
    assert len(store.list()) == 20
    assert store.check_token("dev-0", "operator", token) is not None
    db.close()


# -- (5) writer errors surface on flush, are logged once, and do not stop later writes -----------

def test_a_refused_row_surfaces_on_flush_is_logged_once_and_later_writes_work(db_path, caplog):
    conn = sqlite3.connect(db_path)  # an injected constraint the mirror knows nothing about
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON devices WHEN NEW.label = 'boom' "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    conn.close()
    caplog.set_level(logging.WARNING, logger="krabfast.store")
    db = Database(db_path)
    devices = DeviceStore(db)
    devices.save(_device(1))
    devices.save(_device(2, label="boom"))  # returns: the failure happens on the writer thread
    devices.save(_device(3))

    with pytest.raises(WriteError, match="injected failure") as info:
        db.flush().result(10)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "injected failure" in errors[0].getMessage(), caplog.text
    assert "devices" in errors[0].getMessage()

    assert db.flush().result(10) is None  # reported once, to one flush
    devices.save(_device(4))
    asyncio.run(db.flushed())
    db.close()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, caplog.text
    assert _on_disk(db_path, "SELECT device_id FROM devices ORDER BY device_id") == [
        ("dev-1",), ("dev-3",), ("dev-4",)]


def test_a_failing_batch_is_retried_until_it_is_saved(db_path, monkeypatch, caplog):
    refuse = {"on": True}
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_authorizer(lambda action, *rest: sqlite3.SQLITE_DENY
                            if refuse["on"] and action == sqlite3.SQLITE_INSERT else sqlite3.SQLITE_OK)
        return conn

    caplog.set_level(logging.DEBUG, logger="krabfast.store")
    monkeypatch.setattr(sqlite3, "connect", connect)
    db = Database(db_path)
    devices = DeviceStore(db)
    devices.save(_device(1))
    with pytest.raises(WriteError, match="not authorized"):
        db.flush().result(10)
    with pytest.raises(WriteError):  # still failing: a flush is never falsely successful
        asyncio.run(db.flushed())
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, caplog.text
    assert devices.get("dev-1") is not None  # memory keeps serving

    refuse["on"] = False
    devices.save(_device(2))
    db.flush().result(10)  # the failed rows were kept and go through now
    assert "saved again" in caplog.text
    db.close()
    assert _on_disk(db_path, "SELECT device_id FROM devices ORDER BY device_id") == [("dev-1",), ("dev-2",)]


def test_only_an_idle_writer_is_woken_by_a_mutation(db_path, monkeypatch):
    """The first write after a quiet spell wakes the writer; the ones that follow while it
    gathers (the rest of a chat.send) do not: each wake made the writer thread contend for
    the GIL in the middle of the request. Everything still reaches the disk."""
    db = Database(db_path)
    devices = DeviceStore(db)
    core = db._core
    deadline = time.monotonic() + 5
    while not core.idle and time.monotonic() < deadline:  # the writer settles after opening
        time.sleep(0.001)
    assert core.idle
    wakes = []
    real_notify = core.cond.notify

    def notify(n=1):
        wakes.append(n)
        real_notify(n)

    monkeypatch.setattr(core.cond, "notify", notify)
    for i in range(10):
        devices.save(_device(i))
    assert len(wakes) == 1, wakes
    db.flush().result(10)
    db.close()
    assert _on_disk(db_path, "SELECT count(*) FROM devices") == [(10,)]
