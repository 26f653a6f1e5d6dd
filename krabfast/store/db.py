"""The SQLite database: one file in the state directory, WAL mode, numbered migrations.

The event loop never waits on SQLite. Every table is small (devices, tokens, pairing
requests, nodes), so when a `Database` opens it loads each table into an in-memory mirror
(`Table`), which serves every read synchronously; a mutation updates the mirror at once (a
read right after a write sees it) and marks the row dirty. One writer thread per database,
with its own connection, is the only thing that touches the file: it opens and migrates
it, then repeatedly takes every dirty row (under a lock held for microseconds) and writes
them in one transaction (after a mutation, it waits `COALESCE_S` for the ones that follow,
unless a flush asks sooner). It writes each row's current value, not the individual
statements, so repeated writes to a row (`touch` on every connect) collapse into one, a
failed batch can be retried as is, and each commit moves the file from one state the
mirror held to a later one (`Database.atomic()` groups mutations that must land together).
Tables that grow without bound (transcripts: `PARTIAL_TABLES`) are the exception: the mirror
holds only the parts a store loaded (`Database.load`) and has not dropped (`Table.forget`).

Durability is explicit: `flush()` returns a `concurrent.futures.Future` (`await
db.flushed()` in a coroutine) that completes once everything mutated before the call is
committed (synchronous=FULL: the WAL is fsynced, so it survives `kill -9` and an OS crash),
or fails with `WriteError` if something could not be written since the last flush reported.
A failure is logged once: a row SQLite refuses (a constraint) is dropped from the queue
and stays in memory only; a failing batch (I/O error, full disk, locked file) is retried
with backoff until it goes through. `close()` drains the queue, commits and joins the
thread; it is idempotent, and runs by itself at interpreter exit (before non-daemon threads
are joined), so a gateway that exits normally loses nothing. A `Database` that is garbage
collected unclosed drains and stops its thread in the background.

One `Database` per file per process: the mirror does not see what other connections write.
Opening a file another `Database` in this process has open first waits for that one's
pending writes (a gateway restarted in-process sees what the first one wrote).
`":memory:"` works the same way, against a private in-memory database on the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

from krabfast.store.migrations import MIGRATIONS

log = logging.getLogger("krabfast.store")

# Tables not loaded whole at open (they grow without bound): a store brings the rows it needs
# into the mirror with `Database.load(name, **match)` and drops clean ones again with
# `Table.forget(keys)`. Everything else about them (mutations, the writer) is as for the rest.
PARTIAL_TABLES: frozenset[str] = frozenset({"session_messages"})



def default_state_dir() -> Path:
    env = os.environ.get("KRABFAST_STATE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".krabfast"


class WriteError(sqlite3.DatabaseError):
    """Writes that did not reach the disk since the last flush reported; `errors` holds
    each cause (the first is also `__cause__`)."""

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        super().__init__(message)
        self.errors = errors


class Database:
    """See the module docstring. Reads and writes go through `table(name)` (the stores do
    that); `flush()`/`flushed()` wait for durability, `close()`/`aclose()` at shutdown."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._core = _Core(str(path))
        self._core.start()  # raises what opening or migrating raised
        finalizer = weakref.finalize(self, self._core.close_soon)
        finalizer.atexit = False  # the exit hook closes (and waits for) every open database

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike | None = None) -> "Database":
        root = Path(state_dir) if state_dir else default_state_dir()
        return cls(root / "gateway.sqlite3")

    @property
    def version(self) -> int:
        """The schema version (PRAGMA user_version) after the migrations ran."""
        return self._core.version

    @property
    def closed(self) -> bool:
        return self._core.closing

    def table(self, name: str) -> "Table":
        return self._core.tables[name]

    def load(self, name: str, **match) -> list[dict]:
        """For a table in `PARTIAL_TABLES`: bring the rows of the file whose columns equal
        `match` into the mirror, then return every mirrored row that matches (rowid order
        for those read; rows mutated since are the mirror's, not the file's). Blocks the
        caller for one indexed read (waiting first for a batch the writer has in flight, so
        the file holds everything the mirror no longer marks dirty); call it once per part."""
        return self._core.load(self._core.tables[name], match)

    def atomic(self) -> "_Mutation":
        """`with db.atomic():` the mutations inside reach the disk in one transaction (the
        writer cannot take a snapshot half way). Hold it only around mirror mutations. There
        is no rollback: a mutation that raises changes nothing, but the ones before it in the
        block stay, so validate first (each `Table` mutation validates before it applies)."""
        return _Mutation(self._core, bump=False)

    def flush(self) -> Future:
        """A future that completes once every mutation made before this call is committed,
        or fails with `WriteError` for what could not be written since the last flush
        reported (each failure is reported to one round of flushes). Already done when
        there is nothing to wait for. Thread-safe; never blocks."""
        return self._core.flush(consume=True)

    async def flushed(self) -> None:
        """`await db.flushed()`: `flush()` without blocking the loop."""
        future = self.flush()
        if not future.done():
            await asyncio.wrap_future(future)
        future.result()

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, close the connection, stop the writer thread. Blocks
        until done (at shutdown; a coroutine can `await db.aclose()`). Idempotent; later
        mutations raise `sqlite3.ProgrammingError`, reads keep working. Write failures are
        logged, not raised (`flush()` first to get them)."""
        self._core.close(timeout)

    async def aclose(self) -> None:
        """`close()` without blocking the loop."""
        self._core.close_soon()
        await asyncio.wrap_future(self._core.stopped)


# -- the mirror ----------------------------------------------------------------------------------

_UPDATED, _MOVED, _DELETED = 1, 2, 3  # dirty kinds: changed in place, (re)inserted, deleted
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _bindable(value):
    """What sqlite3 would store for `value`; raises what binding it would raise."""
    kind = type(value)
    if value is None or kind is str or kind is float or kind is bytes:
        return value
    if isinstance(value, int):  # bool and int subclasses are stored (and read back) as int
        if not _INT64[0] <= value <= _INT64[1]:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise sqlite3.ProgrammingError(f"Error binding parameter: type '{type(value).__name__}' "
                                   "is not supported")


def _literal(text: str | None):
    """A column's DEFAULT (as PRAGMA table_info gives it) as a value, when it is a literal."""
    if text is None or text.upper() == "NULL":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return None


def sql_order(value) -> tuple:
    """Sort key giving SQLite's ORDER BY order: NULL, numbers, text, blobs."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, value)


class _Mutation:
    """The core lock around a mirror mutation (re-entrant: `Database.atomic()` nests)."""

    __slots__ = ("core", "bump")

    def __init__(self, core: "_Core", bump: bool = True) -> None:
        self.core = core
        self.bump = bump

    def __enter__(self) -> None:
        core = self.core
        core.lock.acquire()
        if core.closing:
            core.lock.release()
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    def __exit__(self, exc_type, exc, tb) -> None:
        core = self.core
        try:
            if self.bump and exc_type is None:
                core.gen += 1
                # Only an idle writer needs waking: one already gathering or writing takes
                # this row with its batch, and each needless wake made it contend for the
                # GIL in the middle of the request that mutated (five times per chat.send).
                if core.idle:
                    core.idle = False  # (it is awake from now on, before it gets the GIL)
                    core.cond.notify()
        finally:
            core.lock.release()


class Table:
    """One table in memory: rows (dicts of column values, as SQLite holds them; never
    mutated, replaced) by primary key, in rowid order. Reads are plain dict look-ups on the
    caller's thread; mutations validate like SQLite would (NOT NULL, bindable types,
    UNIQUE for a plain insert), apply at once and mark the row for the writer."""

    def __init__(self, core: "_Core", name: str, info: list) -> None:
        # info: PRAGMA table_info rows (cid, name, type, notnull, dflt_value, pk)
        self._core = core
        self.name = name
        self.columns = tuple(c[1] for c in info)
        self.key = tuple(n for _, n in sorted((c[5], c[1]) for c in info if c[5]))
        self.notnull = frozenset(c[1] for c in info if c[3])
        self.defaults = {c[1]: _literal(c[4]) for c in info}
        self.rows: dict[tuple, dict] = {}
        self.dirty: dict[tuple, int] = {}
        q = lambda n: '"' + n.replace('"', '""') + '"'  # noqa: E731
        cols = ", ".join(q(c) for c in self.columns)
        marks = ", ".join("?" * len(self.columns))
        where = " AND ".join(f"{q(k)} = ?" for k in self.key)
        sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in self.columns if c not in self.key)
        self.sql_delete = f"DELETE FROM {q(name)} WHERE {where}"
        self.sql_insert = f"INSERT INTO {q(name)} ({cols}) VALUES ({marks})"
        self.sql_upsert = (f"{self.sql_insert} ON CONFLICT ({', '.join(q(k) for k in self.key)}) "
                           + (f"DO UPDATE SET {sets}" if sets else "DO NOTHING"))

    # -- reads -----------------------------------------------------------------------------------
    def get(self, *key) -> dict | None:
        return self.rows.get(key)

    def values(self) -> list[dict]:
        """Every row, in rowid order."""
        return list(self.rows.values())

    def find(self, **match) -> dict | None:
        """The first row (rowid order) whose columns equal `match`."""
        items = match.items()
        for row in list(self.rows.values()):
            if all(row[c] == v for c, v in items):
                return row
        return None

    def select(self, **match) -> list[dict]:
        items = match.items()
        return [row for row in list(self.rows.values()) if all(row[c] == v for c, v in items)]

    # -- mutations -------------------------------------------------------------------------------
    def _row(self, values: dict, replace: bool) -> dict:
        unknown = [c for c in values if c not in self.defaults]
        if unknown:
            raise sqlite3.OperationalError(f"table {self.name} has no column named {unknown[0]}")
        row = {}
        for c in self.columns:
            v = _bindable(values[c]) if c in values else self.defaults[c]
            if v is None and c in self.notnull:
                v = self.defaults[c] if replace else None  # OR REPLACE: NULL becomes the default
                if v is None:
                    raise sqlite3.IntegrityError(f"NOT NULL constraint failed: {self.name}.{c}")
            row[c] = v
        return row

    def replace(self, values: dict) -> None:
        """INSERT OR REPLACE: the row goes to the end (a new rowid)."""
        row = self._row(values, replace=True)
        key = tuple(row[k] for k in self.key)
        with _Mutation(self._core):
            self.rows.pop(key, None)
            self.rows[key] = row
            self.dirty[key] = _MOVED

    def insert(self, values: dict) -> None:
        """INSERT: IntegrityError if the key exists."""
        row = self._row(values, replace=False)
        key = tuple(row[k] for k in self.key)
        with _Mutation(self._core):
            if key in self.rows:
                raise sqlite3.IntegrityError("UNIQUE constraint failed: "
                                             + ", ".join(f"{self.name}.{k}" for k in self.key))
            self.rows[key] = row
            self.dirty[key] = _MOVED

    def update(self, key: tuple, changes: dict) -> bool:
        """UPDATE ... WHERE key: False if there is no such row (like rowcount 0)."""
        clean = {}
        for c, v in changes.items():
            if c not in self.defaults:
                raise sqlite3.OperationalError(f"no such column: {c}")
            if c in self.key:
                raise ValueError("the mirror does not change primary keys")
            v = _bindable(v)
            if v is None and c in self.notnull:
                raise sqlite3.IntegrityError(f"NOT NULL constraint failed: {self.name}.{c}")
            clean[c] = v
        with _Mutation(self._core):
            old = self.rows.get(key)
            if old is None:
                return False
            if any(old[c] != v or type(old[c]) is not type(v) for c, v in clean.items()):
                self.rows[key] = {**old, **clean}
                if self.dirty.get(key) != _MOVED:
                    self.dirty[key] = _UPDATED
            return True

    def delete(self, *key) -> bool:
        with _Mutation(self._core):
            if self.rows.pop(key, None) is None:
                return False
            self.dirty[key] = _DELETED
            return True

    def forgettable(self) -> bool:
        """Whether `forget` can drop anything now (a quick check before trying row sets)."""
        core = self._core
        return not (core.memory or self.name not in PARTIAL_TABLES or self.name in core.writing)

    def forget(self, keys) -> bool:
        """Partial tables only: drop these rows from the mirror, not from the file (a later
        `Database.load` brings them back). All or none: False, dropping nothing, while any of
        them is not on disk yet (dirty, or a batch is in flight), or for an in-memory
        database (the mirror is all it has)."""
        core = self._core
        with core.lock:
            if core.memory or self.name not in PARTIAL_TABLES or self.name in core.writing:
                return False
            if any(key in self.dirty for key in keys):
                return False
            for key in keys:
                self.rows.pop(key, None)
            return True

    def delete_where(self, **match) -> int:
        with _Mutation(self._core):
            keys = [tuple(r[k] for k in self.key) for r in self.select(**match)]
            for key in keys:
                del self.rows[key]
                self.dirty[key] = _DELETED
            return len(keys)


# -- the writer ----------------------------------------------------------------------------------

# A row SQLite refuses: dropped from the queue (retrying cannot help). Anything else fails
# the batch, which is retried.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError)
_RETRY_FIRST_S, _RETRY_MAX_S = 0.25, 30.0
COALESCE_S = 0.025  # see _Core._gather; flush() and close() do not wait for it
_CLOSE_ATTEMPTS = 3
_MAX_UNREPORTED = 20

_live: set["_Core"] = set()
_live_lock = threading.Lock()
_exit_hook: bool | None = None  # registered with threading (runs before non-daemon joins)?


def _close_all() -> None:
    with _live_lock:
        cores = list(_live)
    for core in cores:
        core.close(None)


def _register_exit_hook() -> bool:
    global _exit_hook
    if _exit_hook is None:
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is None:
                raise RuntimeError("no threading._register_atexit")
            register(_close_all)
            _exit_hook = True
        except RuntimeError:
            import atexit
            atexit.register(_close_all)
            _exit_hook = False  # daemon writer threads; atexit still drains them
    return _exit_hook


class _Core:
    """The mirror tables, the dirty set and the writer thread of one `Database` (kept apart
    from it so an unclosed `Database` can be garbage collected while its thread drains)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self.where = path if not self.memory else "in-memory database"
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.tables: dict[str, Table] = {}
        self.version = 0
        self.gen = 0         # mutations so far
        self.saved_gen = 0   # mutations up to this one are committed (or reported as failed)
        self.waiters: list[tuple[int, Future, bool]] = []  # (gen, future, consumes errors)
        self.unreported: list[BaseException] = []
        self.kick = False
        self.idle = False    # the writer waits for a mutation (only then is it notified)
        self.closing = False
        self.failing = 0     # consecutive failed batches
        self.retry_at = 0.0
        self.opened: Future = Future()
        self.stopped: Future = Future()
        self.stopped.set_running_or_notify_cancel()
        self.thread: threading.Thread | None = None
        # Tables with rows in a batch taken and not settled (the file may lag the mirror there).
        self.writing: frozenset[str] = frozenset()

    # -- lifecycle (caller threads) --------------------------------------------------------------
    def start(self) -> None:
        if not self.memory:
            real = os.path.realpath(self.path)
            with _live_lock:
                same = [c for c in _live if not c.memory and os.path.realpath(c.path) == real]
            for other in same:
                other.settle(timeout=30.0)
        daemon = not _register_exit_hook()
        self.thread = threading.Thread(target=self._run, name="krabfast-store-writer", daemon=daemon)
        with _live_lock:
            _live.add(self)
        self.thread.start()
        self.opened.result()

    def close_soon(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()

    def close(self, timeout: float | None) -> None:
        self.close_soon()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout)

    def settle(self, timeout: float) -> None:
        """Wait until what is queued now was written (or failed), consuming no errors."""
        try:
            self.flush(consume=False).result(timeout)
        except Exception:  # noqa: BLE001 - reported to this core's own flushes and log
            pass

    def flush(self, consume: bool) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()  # cannot be cancelled: the writer completes it
        with self.cond:
            if self.gen == self.saved_gen and not any(t.dirty for t in self.tables.values()):
                if consume and self.unreported:
                    future.set_exception(self._error(self.unreported))
                    self.unreported = []
                else:
                    future.set_result(None)
                return future
            if self.stopped.done():
                future.set_exception(self._error(self.unreported or [
                    sqlite3.ProgrammingError("the database closed before these writes were saved")]))
                return future
            self.waiters.append((self.gen, future, consume))
            self.kick = True
            self.cond.notify()
        return future

    def load(self, table: "Table", match: dict) -> list[dict]:
        if table.name not in PARTIAL_TABLES:
            raise ValueError(f"{table.name} is mirrored whole: nothing to load")
        for c in match:
            if c not in table.defaults:
                raise sqlite3.OperationalError(f"no such column: {c}")
        q = lambda n: '"' + n.replace('"', '""') + '"'  # noqa: E731
        where = " AND ".join(f"{q(c)} = ?" for c in match) or "1"
        sql = (f"SELECT {', '.join(q(c) for c in table.columns)} FROM {q(table.name)} "
               f"WHERE {where} ORDER BY rowid")
        with self.cond:
            while table.name in self.writing:  # the file lags the mirror until it settles
                self.cond.wait()
            if not self.memory:  # (in memory, every row ever written is still mirrored)
                conn = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro", uri=True)
                try:
                    found = conn.execute(sql, tuple(_bindable(v) for v in match.values())).fetchall()
                finally:
                    conn.close()
                rows, dirty = table.rows, table.dirty
                for values in found:
                    row = dict(zip(table.columns, values))
                    key = tuple(row[k] for k in table.key)
                    if key not in rows and key not in dirty:  # dirty and absent: deleted since
                        rows[key] = row
            return table.select(**match)

    def _error(self, errors: list[BaseException]) -> WriteError:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        err = WriteError(f"{self.where}: not saved: {type(first).__name__}: {first}{more}", list(errors))
        err.__cause__ = first
        return err

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = self._open()
        except BaseException as exc:  # noqa: BLE001 - handed to the opener
            with _live_lock:
                _live.discard(self)
            with self.cond:
                self.closing = True
            self.stopped.set_result(None)
            self.opened.set_exception(exc)
            return
        self.opened.set_result(None)
        try:
            self._serve(conn)
        except BaseException:  # noqa: BLE001 - a bug here must not lose the thread silently
            log.exception("%s: the store writer failed", self.where)
            with self.cond:
                self.closing = True
        finally:
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.error("%s: closing the database failed: %s", self.where, exc)
            with self.cond:
                self.writing = frozenset()
                self.cond.notify_all()
                left = sum(len(t.dirty) for t in self.tables.values())
                if left:
                    log.error("%s: %d changed rows were not saved before the database closed",
                              self.where, left)
                    self.unreported.append(sqlite3.OperationalError(f"{left} rows not saved at close"))
                waiters, self.waiters = self.waiters, []
                errors = self.unreported
                for _, future, consume in waiters:
                    if consume and errors:
                        future.set_exception(self._error(errors))
                    else:
                        future.set_result(None)
                if any(consume for _, _, consume in waiters):
                    self.unreported = []
            with _live_lock:
                _live.discard(self)
            self.stopped.set_result(None)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # Commits happen off the event loop, batched, so each can afford an fsync: a
            # flushed write survives an OS crash too, not only the process dying.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
            self.version = conn.execute("PRAGMA user_version").fetchone()[0]
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name")]
            for name in names:
                quoted = '"' + name.replace('"', '""') + '"'
                table = Table(self, name, conn.execute(f"PRAGMA table_info({quoted})").fetchall())
                if not table.key:  # not ours (every krabfast table has a primary key)
                    log.debug("%s: table %s has no primary key: not mirrored", self.where, name)
                    continue
                if name in PARTIAL_TABLES:  # loaded part by part (Database.load)
                    self.tables[name] = table
                    continue
                cols = ", ".join('"' + c.replace('"', '""') + '"' for c in table.columns)
                cursor = conn.execute(f"SELECT {cols} FROM {quoted} ORDER BY rowid")
                for values in cursor:
                    row = dict(zip(table.columns, values))
                    table.rows[tuple(row[k] for k in table.key)] = row
                self.tables[name] = table
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema version {current}, newer than this "
                               f"krabfast ({len(MIGRATIONS)}): upgrade krabfast")
        for number in range(current, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number + 1}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _ready(self) -> bool:
        if self.closing or self.kick:
            return True
        if not any(t.dirty for t in self.tables.values()):
            return False
        return not self.failing or time.monotonic() >= self.retry_at

    def _gather(self) -> None:
        """(Lock held.) Woken by a mutation nobody waits for: let the mutations that follow
        it (the rest of a request, of a chat turn) join the same batch for `COALESCE_S`,
        unless a flush or close asks for the disk sooner. Fewer commits, and the writer's
        own Python work (it needs the GIL) stays out of the event loop's way while the loop
        is busy with what caused the mutation (a chat.send: the model request, its first
        delta)."""
        if self.closing or self.kick or self.failing or COALESCE_S <= 0:
            return
        deadline = time.monotonic() + COALESCE_S
        while not (self.closing or self.kick):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.cond.wait(left)

    def _serve(self, conn: sqlite3.Connection) -> None:
        close_attempts = 0
        while True:
            with self.cond:
                while not self._ready():
                    self.idle = True
                    self.cond.wait(max(0.0, self.retry_at - time.monotonic()) if self.failing else None)
                self.idle = False
                self._gather()
                final = self.closing
                self.kick = False
                gen = self.gen
                batch = self._take()
                self.writing = frozenset(entry[0].name for entry in batch)
            row_errors: list = []
            batch_error = None
            if batch:
                row_errors, batch_error = self._write(conn, batch)
            with self.cond:
                self._settle(batch, gen, row_errors, batch_error)
                if self.writing:
                    self.writing = frozenset()
                    self.cond.notify_all()  # Database.load waits for this
                if final:
                    if batch_error is None or close_attempts >= _CLOSE_ATTEMPTS:
                        return
                    close_attempts += 1
            if final:
                time.sleep(0.1 * close_attempts)

    def _take(self) -> list:
        """Every dirty row, with its current value (rows are immutable: no copies)."""
        batch = []
        for table in self.tables.values():
            if not table.dirty:
                continue
            dirty, table.dirty = table.dirty, {}
            moved = []
            for key, kind in dirty.items():
                if kind == _DELETED:
                    batch.append((table, _DELETED, key, None))
                elif kind == _UPDATED:
                    batch.append((table, _UPDATED, key, table.rows[key]))
                else:
                    moved.append(key)
            if moved:  # re-inserted rows are written in mirror (rowid) order
                batch.extend((table, _MOVED, key, table.rows[key]) for key in _in_order(table.rows, moved))
        return batch

    def _write(self, conn: sqlite3.Connection, batch: list) -> tuple[list, BaseException | None]:
        row_errors = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for entry in batch:
                table, kind, key, row = entry
                conn.execute("SAVEPOINT row")
                try:
                    if kind == _DELETED:
                        conn.execute(table.sql_delete, key)
                    elif kind == _UPDATED:
                        conn.execute(table.sql_upsert, tuple(row.values()))
                    else:
                        conn.execute(table.sql_delete, key)
                        conn.execute(table.sql_insert, tuple(row.values()))
                except _ROW_ERRORS as exc:
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO row")
                    row_errors.append((entry, exc))
                conn.execute("RELEASE row")
            self._commit(conn)
            return row_errors, None
        except Exception as exc:  # noqa: BLE001 - the batch is retried
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [], exc

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _settle(self, batch: list, gen: int, row_errors: list, batch_error) -> None:
        """After a batch (lock held): requeue or report, then complete the flushes it covers."""
        new: list[BaseException] = []
        if batch_error is None:
            self.saved_gen = gen
            if self.failing:
                log.warning("%s: writes are saved again, after %d failed attempts", self.where,
                            self.failing)
                self.failing = 0
            for (table, _, key, _), exc in row_errors:
                log.error("%s: %s row %s not saved (it stays in memory only): %s: %s", self.where,
                          table.name, key, type(exc).__name__, exc)
                new.append(exc)
        else:
            for table, kind, key, _ in batch:
                now = table.dirty.get(key)
                if now is None or (kind == _MOVED and now == _UPDATED):
                    table.dirty[key] = kind
            self.failing += 1
            if self.failing == 1:
                log.error("%s: writing %d rows failed; retrying until it works: %s: %s", self.where,
                          len(batch), type(batch_error).__name__, batch_error, exc_info=batch_error)
                new.append(batch_error)
            else:
                log.debug("%s: write attempt %d failed: %s", self.where, self.failing, batch_error)
            self.retry_at = time.monotonic() + min(_RETRY_MAX_S,
                                                   _RETRY_FIRST_S * 2 ** (self.failing - 1))
        ready = [w for w in self.waiters if w[0] <= gen]
        if not ready:
            self.unreported = (self.unreported + new)[-_MAX_UNREPORTED:]
            return
        self.waiters = [w for w in self.waiters if w[0] > gen]
        errors = self.unreported + new
        if batch_error is not None and not new:
            errors.append(batch_error)  # still failing: these flushes are not durable either
        consumed = False
        for _, future, consume in ready:
            if consume and errors:
                future.set_exception(self._error(errors))
                consumed = True
            else:
                future.set_result(None)
        self.unreported = [] if consumed else errors[-_MAX_UNREPORTED:]


def _in_order(rows: dict, keys: list) -> list:
    """`keys` (all in `rows`) in the order of `rows`. A re-inserted row goes to the end of
    the mirror, so the rows dirty since the last batch are at its tail: walk back from the
    end until every one is found, instead of scanning a table of thousands of rows (with
    the GIL held: the event loop would wait) for a handful."""
    wanted = set(keys)
    found = []
    for key in reversed(rows):
        if key in wanted:
            found.append(key)
            if len(found) == len(wanted):
                break
    found.reverse()
    return found


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
