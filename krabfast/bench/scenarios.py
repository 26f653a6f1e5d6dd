"""The handshake, rpc, fanout and idle scenarios (parent side; soak is in soak.py, chat in
chat.py).

Each `run_*` takes a `RunContext` and the parsed arguments and returns a result dict:
`{"scenario", "params", "metrics": {...}, ...}`; metrics that cannot be measured are None.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid

from krabfast.bench.loadclient import BenchConn, close_conn, connect_frame, open_conn, parse_res, \
    request_parts
from krabfast.bench.pool import WorkerPool, split, workers_for
from krabfast.bench.procstat import ServerProbe
from krabfast.bench.progress import Progress
from krabfast.bench.stats import Histogram, merge_counts, rounded

monotonic = time.monotonic
#: The reference refuses a 33rd concurrent unauthenticated socket per client IP.
MAX_OPEN_CONCURRENCY = 30


class BenchFailure(RuntimeError):
    """The scenario could not run (no socket could connect, a worker died...)."""


@dataclasses.dataclass
class RunContext:
    url: str
    token: str | None
    probe: ServerProbe
    processes: int = 2
    progress: Progress = dataclasses.field(default_factory=lambda: Progress(False))
    fake_model: object | None = None
    """The chat scenario's model server (krabfast.bench.fakemodel.FakeModel), if it runs."""

    def pool(self, size: int) -> WorkerPool:
        return WorkerPool(size, self.url, self.token, on_progress=self.progress.from_worker)

    async def connect(self, **kw) -> BenchConn:
        return await open_conn(self.url, connect_frame(self.token), **kw)


class Trigger:
    """A request socket in the parent (fan-out trigger, warm socket)."""

    def __init__(self, conn: BenchConn) -> None:
        self.conn = conn
        self.next_id = 0
        self.waiting: dict[bytes, asyncio.Future] = {}
        conn.on_res = self._on_res

    def _on_res(self, conn: BenchConn, data: bytes) -> None:
        rid, ok = parse_res(data)
        fut = self.waiting.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result((ok, data))

    def send(self, method: str, params) -> asyncio.Future:
        self.next_id += 1
        rid = b"t%d" % self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        prefix, suffix = request_parts(method, params)
        self.conn.send(prefix + rid + suffix)
        return fut


async def sleep_until(t: float) -> None:
    delay = t - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def cpu_metrics(probe: ServerProbe, before, after, ops: int, per: str = "op") -> dict:
    cpu_s = probe.cpu_seconds(before, after)
    per_op = cpu_s * 1e6 / ops if cpu_s is not None and ops > 0 else None
    return {"server_cpu_s": rounded(cpu_s, 4), f"cpu_us_per_{per}": rounded(per_op, 2)}


def rss_metrics(before: float | None, after: float | None) -> dict:
    return {"rss_before_mb": rounded(before, 1), "rss_after_mb": rounded(after, 1)}


def open_concurrency(requested: int, workers: int) -> int:
    return max(1, min(requested, MAX_OPEN_CONCURRENCY) // workers)


async def open_held(ctx: RunContext, pool: WorkerPool, n: int, concurrency: int,
                    what: str) -> tuple[int, dict]:
    """Open n held sockets across the pool; (opened, error kinds)."""
    ctx.progress.update(f"opening {n:,} {what}")
    per = open_concurrency(concurrency, pool.size)
    res = await pool.all("open", [{"n": c, "concurrency": per} if c else None
                                  for c in split(n, pool.size)])
    opened = sum(r.get("opened", 0) for r in res)
    return opened, merge_counts(r.get("errors", {}) for r in res)


def server_block(probe: ServerProbe) -> dict:
    return {"pid": probe.pid, "cpu_source": probe.cpu_source}


# -- handshake -----------------------------------------------------------------------------------

async def run_handshake(ctx: RunContext, a) -> dict:
    n, conc = a.connects, a.concurrency
    k = max(1, min(ctx.processes, conc))
    probe = ctx.probe
    async with ctx.pool(k) as pool:
        rss0, cpu0, t0 = probe.rss_mb(), probe.cpu(), monotonic()
        res = await pool.all("handshake", [{"n": c, "concurrency": cc}
                                           for c, cc in zip(split(n, k), split(conc, k))])
        wall = monotonic() - t0
        cpu1, rss1 = probe.cpu(), probe.rss_mb()
    hist = Histogram.merged(r["hist"] for r in res)
    errors = merge_counts(r["errors"] for r in res)
    metrics = {"connects_per_s": rounded(hist.count / wall, 1), "connects": hist.count,
               "errors": sum(errors.values()), **hist.summary_ms(), "wall_s": rounded(wall, 3),
               **cpu_metrics(probe, cpu0, cpu1, hist.count), **rss_metrics(rss0, rss1)}
    return {"scenario": "handshake", "params": {"connects": n, "concurrency": conc,
                                                "processes": k},
            "metrics": metrics, "error_kinds": errors, "server": server_block(probe)}


# -- rpc -----------------------------------------------------------------------------------------

async def run_rpc(ctx: RunContext, a) -> dict:
    conns, probe = a.conns, ctx.probe
    k = max(1, min(ctx.processes, conns))
    async with ctx.pool(k) as pool:
        opened, open_errors = await open_held(ctx, pool, conns, conns, "sockets")
        if opened == 0:
            raise BenchFailure(f"no socket connected: {open_errors}")
        start_at = monotonic() + 0.2
        m_from = start_at + a.warmup
        m_until = m_from + a.duration
        job = asyncio.ensure_future(pool.each("rpc", method=a.method, params=a.params,
                                              inflight=a.inflight, start_at=start_at,
                                              measure_from=m_from, measure_until=m_until))
        await sleep_until(m_from)
        rss0, cpu0 = probe.rss_mb(), probe.cpu()
        while monotonic() < m_until - 0.01:
            ctx.progress.update(f"{a.method}: {monotonic() - m_from:.0f}/{a.duration:g} s")
            await asyncio.sleep(min(1.0, max(0.0, m_until - monotonic())))
        await sleep_until(m_until)
        cpu1, rss1 = probe.cpu(), probe.rss_mb()
        res = await job
        await pool.each("close_all")
    hist = Histogram.merged(r["hist"] for r in res)
    errors = merge_counts([open_errors, *(r["errors"] for r in res)])
    metrics = {"req_per_s": rounded(hist.count / a.duration, 1), "requests": hist.count,
               "errors": sum(errors.values()), **hist.summary_ms(),
               **cpu_metrics(probe, cpu0, cpu1, hist.count), **rss_metrics(rss0, rss1)}
    return {"scenario": "rpc", "params": {"method": a.method, "params": a.params,
                                          "conns": opened, "inflight": a.inflight,
                                          "duration_s": a.duration, "warmup_s": a.warmup,
                                          "processes": k},
            "metrics": metrics, "error_kinds": errors, "server": server_block(probe)}


# -- fanout --------------------------------------------------------------------------------------

async def run_fanout(ctx: RunContext, a) -> dict:
    n, probe = a.receivers, ctx.probe
    k = workers_for(n, min(ctx.processes, max(1, n)))
    broadcasts: list[dict] = []
    delivery = Histogram()
    cpu_total: float | None = 0.0
    async with ctx.pool(k) as pool:
        opened, open_errors = await open_held(ctx, pool, n, a.open_concurrency, "receivers")
        if opened == 0:
            raise BenchFailure(f"no receiver connected: {open_errors}")
        trigger = Trigger(await ctx.connect())
        await asyncio.sleep(a.pause)
        rss0 = probe.rss_mb()
        for r in range(a.broadcasts):
            marker = f"bench-{uuid.uuid4().hex[:16]}-{r}"
            armed = sum(x["armed"] for x in await pool.each("arm", marker=marker))
            cpu0 = probe.cpu()
            t_send = monotonic()
            res_fut = trigger.send("system-event", {"text": marker})
            watched = await pool.each("wait_watch", timeout=a.timeout)
            cpu1 = probe.cpu()
            ok, data = await asyncio.wait_for(res_fut, a.timeout)
            stamps = [s for w in watched for s in w["stamps"]]
            for s in stamps:
                delivery.record(s - t_send)
            cpu_s = probe.cpu_seconds(cpu0, cpu1)
            cpu_total = None if cpu_s is None or cpu_total is None else cpu_total + cpu_s
            broadcasts.append({"wall_ms": rounded((max(stamps) - t_send) * 1000) if stamps else None,
                               "received": len(stamps), "expected": armed, "res_ok": ok,
                               "server_cpu_s": rounded(cpu_s, 4)})
            ctx.progress.update(f"broadcast {r + 1}/{a.broadcasts}: {len(stamps):,}/{armed:,} in "
                                f"{broadcasts[-1]['wall_ms']} ms")
            await asyncio.sleep(a.pause)
        rss1 = probe.rss_mb()
        await close_conn(trigger.conn)
        await pool.each("close_all")
    walls = sorted(b["wall_ms"] for b in broadcasts if b["wall_ms"] is not None)
    deliveries = sum(b["received"] for b in broadcasts)
    expected = sum(b["expected"] for b in broadcasts)
    per_delivery = cpu_total * 1e6 / deliveries if cpu_total is not None and deliveries else None
    d = delivery.summary_ms()
    metrics = {"broadcast_p50_ms": walls[len(walls) // 2] if walls else None,
               "broadcast_max_ms": walls[-1] if walls else None,
               "delivery_p50_ms": d["p50_ms"], "delivery_p99_ms": d["p99_ms"],
               "receivers": opened, "deliveries": deliveries, "missed": expected - deliveries,
               "errors": sum(open_errors.values()) + sum(not b["res_ok"] for b in broadcasts),
               "server_cpu_s": rounded(cpu_total, 4),
               "cpu_us_per_delivery": rounded(per_delivery, 2), **rss_metrics(rss0, rss1)}
    return {"scenario": "fanout", "params": {"receivers": n, "broadcasts": a.broadcasts,
                                             "processes": k},
            "metrics": metrics, "broadcasts": broadcasts, "error_kinds": open_errors,
            "server": server_block(probe)}


# -- idle ----------------------------------------------------------------------------------------

async def run_idle(ctx: RunContext, a) -> dict:
    n, probe = a.sockets, ctx.probe
    k = workers_for(n, ctx.processes)
    warm = await ctx.connect(want_hello=True)
    tick_ms = ((warm.hello or {}).get("policy") or {}).get("tickIntervalMs")
    hold: dict = {}
    try:
        async with ctx.pool(k) as pool:
            await asyncio.sleep(a.settle)
            rss0 = probe.rss_mb()
            opened, errors = await open_held(ctx, pool, n, a.open_concurrency, "sockets")
            await asyncio.sleep(a.settle)
            rss1 = probe.rss_mb()
            if a.hold > 0:
                hold = await _hold(ctx, pool, a, tick_ms)
            counters = await pool.each("counters")
            await pool.each("close_all")
    finally:
        await close_conn(warm)
    per_socket = (rss1 - rss0) * 1024 / opened if rss0 is not None and rss1 is not None \
        and opened else None
    metrics = {"sockets": opened, "errors": sum(errors.values()),
               "base_rss_mb": rounded(rss0, 1), "rss_after_mb": rounded(rss1, 1),
               "rss_per_socket_kib": rounded(per_socket, 2), **hold}
    result = {"scenario": "idle", "params": {"sockets": n, "hold_s": a.hold,
                                             "expect_ticks": a.expect_ticks, "processes": k},
              "metrics": metrics, "error_kinds": errors, "server": server_block(probe),
              "close_codes": merge_counts(c["close_codes"] for c in counters)}
    if a.expect_ticks and a.hold > 0:
        result["ok"] = metrics.get("sockets_ok") == n
    return result


async def _hold(ctx: RunContext, pool: WorkerPool, a, tick_ms: int | None) -> dict:
    probe = ctx.probe
    await pool.each("counters", reset=True)
    cpu0 = probe.cpu()
    await pool.each("hold", until=monotonic() + a.hold)
    cpu1 = probe.cpu()
    counters = await pool.each("counters")
    dist = merge_counts(c["ticks"] for c in counters)
    still_open = sum(c["open"] for c in counters)
    expected = math.floor(a.hold * 1000 / tick_ms) if tick_ms else None
    ticks = sorted(int(t) for t in dist)
    ok = sum(v for t, v in dist.items() if expected is None or int(t) >= expected)
    cpu = cpu_metrics(probe, cpu0, cpu1, still_open, per="socket")
    return {"hold_s": a.hold, "tick_interval_ms": tick_ms, "expected_ticks": expected,
            "sockets_open": still_open, "sockets_ok": ok,
            "min_ticks": ticks[0] if ticks else None, "max_ticks": ticks[-1] if ticks else None,
            "hold_server_cpu_s": cpu["server_cpu_s"],
            "hold_cpu_us_per_socket": cpu["cpu_us_per_socket"]}
