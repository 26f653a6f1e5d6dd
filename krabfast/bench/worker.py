"""A load worker process: `python -m krabfast.bench.worker`.

It runs its own uvloop and talks to the parent (krabfast.bench.pool) in JSON lines: one
command per stdin line, any number of `{"type":"progress",...}` lines, then one
`{"type":"result",...}` (or `{"type":"error",...}`) line on stdout per command. Commands
run one at a time; sockets opened by `open` stay held (and keep counting events) until
`close_all`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import orjson

from krabfast.bench.loadclient import (BenchConn, BenchError, Counters, Watch, close_conn,
                                       connect_frame, error_code, open_conn, parse_res,
                                       request_parts)
from krabfast.bench.rawclient import handshake_once, masked_text_frame, upgrade_request
from krabfast.bench.stats import Histogram
from krabfast.sysutil import raise_fd_limit

monotonic = time.monotonic


async def sleep_until(t: float) -> None:
    delay = t - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class RpcDriver:
    """Closed-loop requests: every response (in the picows callback) sends the next one."""

    def __init__(self, prefix: bytes, suffix: bytes, measure_from: float, measure_until: float,
                 stop_at: float) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.measure_from = measure_from
        self.measure_until = measure_until
        self.stop_at = stop_at
        self.hist = Histogram()
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.next_id = 0

    def send(self, conn: BenchConn) -> None:
        self.next_id += 1
        rid = b"%d" % self.next_id
        conn.sent[rid] = monotonic()
        conn.send(self.prefix + rid + self.suffix)
        self.sent += 1

    def on_res(self, conn: BenchConn, data: bytes) -> None:
        rid, ok = parse_res(data)
        t0 = conn.sent.pop(rid, None)
        if t0 is None:
            return
        now = monotonic()
        if self.measure_from <= now <= self.measure_until:
            if ok:
                self.ok += 1
                self.hist.record(now - t0)
            else:
                kind = error_code(data)
                self.errors[kind] = self.errors.get(kind, 0) + 1
        if now < self.stop_at and conn.is_open:
            self.send(conn)


class Worker:
    def __init__(self) -> None:
        self.url = ""
        self.connect_bytes = b""
        self.held: list[BenchConn] = []
        self.watch = Watch()
        self.counters = Counters()
        self.progress: dict | None = None

    # -- helpers -----------------------------------------------------------------------------------
    async def _connect(self, **kw) -> BenchConn:
        return await open_conn(self.url, self.connect_bytes, **kw)

    async def _open_many(self, n: int, concurrency: int, *, hold: bool, want_hello: bool,
                         hist: Histogram, errors: dict[str, int]) -> list[BenchConn]:
        """n handshakes at `concurrency`; held sockets are returned, the others closed."""
        opened: list[BenchConn] = []
        remaining = [n]
        progress = self.progress = {"done": 0, "of": n}

        async def one_lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = monotonic()
                try:
                    conn = await self._connect(watch=self.watch if hold else None,
                                               counters=self.counters if hold else None,
                                               want_hello=want_hello and not opened)
                except BenchError as exc:
                    errors[exc.kind] = errors.get(exc.kind, 0) + 1
                else:
                    hist.record(monotonic() - t0)
                    if hold:
                        opened.append(conn)
                    else:
                        await close_conn(conn)
                progress["done"] += 1

        await asyncio.gather(*(one_lane() for _ in range(max(1, min(concurrency, n)))))
        return opened

    def _tick_summary(self) -> dict:
        dist: dict[str, int] = {}
        for conn in self.held:
            if conn.is_open:
                key = str(conn.ticks)
                dist[key] = dist.get(key, 0) + 1
        return dist

    # -- commands ----------------------------------------------------------------------------------
    async def cmd_init(self, url: str, token: str | None = None, **_) -> dict:
        self.url = url
        self.connect_bytes = connect_frame(token)
        return {"pid": os.getpid(), "fd_limit": raise_fd_limit()}

    async def cmd_handshake(self, n: int, concurrency: int, **_) -> dict:
        # Raw protocol client (see rawclient.py): cheap enough not to be the bottleneck.
        hist, errors = Histogram(), {}
        loop = asyncio.get_running_loop()
        host, port, request = upgrade_request(self.url)
        connect = masked_text_frame(self.connect_bytes)
        remaining = [n]
        progress = self.progress = {"done": 0, "of": n}

        async def lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = monotonic()
                error = await handshake_once(loop, host, port, request, connect, 15.0)
                if error is None:
                    hist.record(monotonic() - t0)
                else:
                    errors[error] = errors.get(error, 0) + 1
                progress["done"] += 1

        t0 = monotonic()
        await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, n)))))
        return {"hist": hist.to_dict(), "ok": hist.count, "errors": errors,
                "elapsed_s": monotonic() - t0}

    async def cmd_open(self, n: int, concurrency: int, want_hello: bool = False, **_) -> dict:
        hist, errors = Histogram(), {}
        t0 = monotonic()
        conns = await self._open_many(n, concurrency, hold=True, want_hello=want_hello,
                                      hist=hist, errors=errors)
        self.held.extend(conns)
        hello = next((c.hello for c in conns if c.hello is not None), None)
        policy = (hello or {}).get("policy") or {}
        return {"opened": len(conns), "errors": errors, "hist": hist.to_dict(),
                "elapsed_s": monotonic() - t0, "held": sum(c.is_open for c in self.held),
                "tick_interval_ms": policy.get("tickIntervalMs")}

    async def cmd_rpc(self, method: str, params, inflight: int, start_at: float,
                      measure_from: float, measure_until: float, drain_s: float = 5.0,
                      **_) -> dict:
        prefix, suffix = request_parts(method, params)
        driver = RpcDriver(prefix, suffix, measure_from, measure_until, measure_until)
        conns = [c for c in self.held if c.is_open]
        await sleep_until(start_at)
        for conn in conns:
            conn.on_res = driver.on_res
            for _ in range(inflight):
                driver.send(conn)
        await sleep_until(measure_until)
        deadline = monotonic() + drain_s
        while monotonic() < deadline and any(c.sent for c in conns if c.is_open):
            await asyncio.sleep(0.01)
        lost = sum(len(c.sent) for c in conns)
        for conn in conns:
            conn.on_res = None
            conn.sent.clear()
        if lost:
            driver.errors["no-response"] = lost
        closed = sum(not c.is_open for c in conns)
        if closed:
            driver.errors["socket-closed"] = closed
        return {"hist": driver.hist.to_dict(), "ok": driver.ok, "errors": driver.errors,
                "sent": driver.sent, "conns": len(conns)}

    async def cmd_arm(self, marker: str, **_) -> dict:
        live = sum(c.is_open for c in self.held)
        self.watch.arm(marker.encode(), live)
        return {"armed": live}

    async def cmd_wait_watch(self, timeout: float = 30.0, **_) -> dict:
        watch = self.watch
        if watch.done is not None:
            try:
                await asyncio.wait_for(asyncio.shield(watch.done), timeout)
            except asyncio.TimeoutError:
                pass
        stamps = list(watch.stamps)
        watch.marker = None
        return {"stamps": stamps, "expected": watch.expected, "received": len(stamps)}

    async def cmd_counters(self, reset: bool = False, **_) -> dict:
        out = {"open": sum(c.is_open for c in self.held), "held": len(self.held),
               "ticks": self._tick_summary(), "events": self.counters.events,
               "presence": self.counters.presence, "chat_deltas": self.counters.chat_deltas,
               "chat_finals": self.counters.chat_finals,
               "close_codes": _close_codes(self.held)}
        if reset:
            for conn in self.held:
                conn.ticks = 0
            c = self.counters
            c.events = c.presence = c.chat_deltas = c.chat_finals = 0
        return out

    async def cmd_hold(self, until: float, **_) -> dict:
        progress = self.progress = {"open": 0}
        while monotonic() < until:
            progress["open"] = sum(c.is_open for c in self.held)
            await asyncio.sleep(min(1.0, max(0.0, until - monotonic())))
        return {"open": sum(c.is_open for c in self.held)}

    async def cmd_soak(self, start_at: float, duration: float, method: str, params,
                       rpc_conns: int, rpc_rate: float, churn_per_s: float, **_) -> dict:
        """Open-loop rpc at `rpc_rate` req/s over `rpc_conns` sockets plus `churn_per_s`
        connect+close cycles per second; per-second histograms and counts."""
        from krabfast.bench.soakload import run_soak_load

        return await run_soak_load(self, start_at, duration, method, params, rpc_conns,
                                   rpc_rate, churn_per_s)

    async def cmd_close_all(self, **_) -> dict:
        conns, self.held = self.held, []
        await asyncio.gather(*(close_conn(c) for c in conns))
        return {"closed": len(conns)}


def _close_codes(conns: list[BenchConn]) -> dict[str, int]:
    out: dict[str, int] = {}
    for conn in conns:
        if not conn.is_open:
            key = str(conn.close_code) if conn.close_code is not None else "no-close-frame"
            out[key] = out.get(key, 0) + 1
    return out


def _emit(obj: dict) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()


async def _report_progress(worker: Worker, cmd: str) -> None:
    while True:
        await asyncio.sleep(1.0)
        if worker.progress is not None:
            _emit({"type": "progress", "cmd": cmd, **worker.progress})


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = orjson.loads(line)
        name = cmd.pop("cmd")
        if name == "exit":
            _emit({"type": "result", "cmd": name})
            break
        handler = getattr(worker, f"cmd_{name}", None)
        ticker = asyncio.ensure_future(_report_progress(worker, name))
        try:
            if handler is None:
                raise ValueError(f"unknown command {name!r}")
            result = await handler(**cmd)
            _emit({"type": "result", "cmd": name, **result})
        except Exception as exc:  # reported to the parent, which raises it there
            _emit({"type": "error", "cmd": name, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            ticker.cancel()
            worker.progress = None
    for conn in worker.held:
        conn.close()
    await asyncio.sleep(0.05)


def main() -> None:
    logging.getLogger("picows").setLevel(logging.ERROR)
    import uvloop

    uvloop.run(serve())


if __name__ == "__main__":
    main()
