"""The worker side of the soak scenario: open-loop rpc at a low rate plus connect/close churn,
tallied per second of the run (the parent adds server RSS/CPU and broadcasts)."""

from __future__ import annotations

import asyncio
import math
import time

from krabfast.bench.loadclient import BenchConn, BenchError, close_conn, parse_res, request_parts
from krabfast.bench.stats import Histogram

monotonic = time.monotonic


class _Second:
    __slots__ = ("rpc", "rpc_errors", "churn", "churn_errors")

    def __init__(self) -> None:
        self.rpc = Histogram()
        self.rpc_errors = 0
        self.churn = Histogram()
        self.churn_errors = 0

    def to_dict(self, t: int) -> dict:
        return {"t": t, "rpc": self.rpc.to_dict(), "rpc_errors": self.rpc_errors,
                "churn": self.churn.to_dict(), "churn_errors": self.churn_errors}


async def _sleep_until(t: float) -> None:
    delay = t - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_soak_load(worker, start_at: float, duration: float, method: str, params,
                        rpc_conns: int, rpc_rate: float, churn_per_s: float) -> dict:
    n_seconds = max(1, math.ceil(duration))
    seconds = [_Second() for _ in range(n_seconds)]
    end = start_at + duration
    errors: dict[str, int] = {}

    def bucket(t: float) -> _Second | None:
        i = int(t - start_at)
        return seconds[i] if 0 <= i < n_seconds else None

    def on_res(conn: BenchConn, data: bytes) -> None:
        rid, ok = parse_res(data)
        t0 = conn.sent.pop(rid, None)
        if t0 is None:
            return
        sec = bucket(t0)
        if sec is None:
            return
        if ok:
            sec.rpc.record(monotonic() - t0)
        else:
            sec.rpc_errors += 1

    conns: list[BenchConn] = []
    for _ in range(rpc_conns if rpc_rate > 0 else 0):
        try:
            conn = await worker._connect()
        except BenchError as exc:
            errors[exc.kind] = errors.get(exc.kind, 0) + 1
            continue
        conn.on_res = on_res
        conns.append(conn)
    prefix, suffix = request_parts(method, params)
    progress = worker.progress = {"rpc": 0, "churn": 0}

    async def rpc_loop() -> None:
        if not conns or rpc_rate <= 0:
            return
        interval = 1.0 / rpc_rate
        next_t, i = start_at, 0
        while next_t < end:
            await _sleep_until(next_t)
            conn = conns[i % len(conns)]
            i += 1
            next_t += interval
            if not conn.is_open:
                sec = bucket(monotonic())
                if sec is not None:
                    sec.rpc_errors += 1
                continue
            rid = b"%d" % i
            conn.sent[rid] = monotonic()
            conn.send(prefix + rid + suffix)
            progress["rpc"] = i

    async def churn_loop() -> None:
        if churn_per_s <= 0:
            return
        interval = 1.0 / churn_per_s
        next_t = start_at
        while next_t < end:
            await _sleep_until(next_t)
            next_t += interval
            t0 = monotonic()
            sec = bucket(t0)
            try:
                conn = await worker._connect()
            except BenchError as exc:
                errors[exc.kind] = errors.get(exc.kind, 0) + 1
                if sec is not None:
                    sec.churn_errors += 1
                continue
            if sec is not None:
                sec.churn.record(monotonic() - t0)
            await close_conn(conn)
            progress["churn"] += 1

    await _sleep_until(start_at)
    await asyncio.gather(rpc_loop(), churn_loop())
    deadline = monotonic() + 5.0
    while monotonic() < deadline and any(c.sent for c in conns if c.is_open):
        await asyncio.sleep(0.01)
    lost = 0
    for conn in conns:
        for t0 in conn.sent.values():
            sec = bucket(t0)
            if sec is not None:
                sec.rpc_errors += 1
                lost += 1
        conn.sent.clear()
    if lost:
        errors["no-response"] = lost
    await asyncio.gather(*(close_conn(c) for c in conns))
    return {"series": [s.to_dict(t) for t, s in enumerate(seconds)], "errors": errors}
