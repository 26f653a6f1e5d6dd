"""The soak scenario (parent side): mixed load for --duration seconds, sampled every second.

Load: open-loop `--method` requests at `--rpc-rate` req/s, `--churn` connect+close cycles per
second, and a `system-event` broadcast every `--broadcast-every` seconds to `--receivers`
idle sockets. Each second: server RSS, server CPU %, rpc count/p50/p99/errors, churn count.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from krabfast.bench.loadclient import close_conn
from krabfast.bench.pool import split, workers_for
from krabfast.bench.scenarios import (BenchFailure, RunContext, Trigger, open_held, rss_metrics,
                                      server_block, sleep_until)
from krabfast.bench.stats import Histogram, merge_counts, rounded

monotonic = time.monotonic


async def run_soak(ctx: RunContext, a) -> dict:
    probe = ctx.probe
    k = workers_for(a.receivers, ctx.processes)
    n_seconds = max(1, int(round(a.duration)))
    samples: list[tuple[float | None, object]] = []
    broadcasts = [0, 0]  # sent, failed
    async with ctx.pool(k) as pool:
        opened, open_errors = await open_held(ctx, pool, a.receivers, a.open_concurrency,
                                              "receivers")
        if opened == 0 and a.receivers:
            raise BenchFailure(f"no receiver connected: {open_errors}")
        trigger = Trigger(await ctx.connect())
        await pool.each("counters", reset=True)
        start_at = monotonic() + 0.5
        rpc_conns = split(max(1, a.rpc_conns), k)
        job = asyncio.ensure_future(pool.all("soak", [
            {"start_at": start_at, "duration": float(n_seconds), "method": a.method,
             "params": a.params, "rpc_conns": rpc_conns[i],
             "rpc_rate": a.rpc_rate * rpc_conns[i] / sum(rpc_conns),
             "churn_per_s": a.churn / k} for i in range(k)]))

        async def broadcaster() -> None:
            if a.broadcast_every <= 0:
                return
            next_t = start_at + a.broadcast_every / 2
            while next_t < start_at + n_seconds:
                await sleep_until(next_t)
                next_t += a.broadcast_every
                fut = trigger.send("system-event", {"text": f"soak-{uuid.uuid4().hex[:12]}"})
                broadcasts[0] += 1
                fut.add_done_callback(count_failure)

        def count_failure(fut: asyncio.Future) -> None:
            if fut.cancelled() or not fut.result()[0]:
                broadcasts[1] += 1

        bcast = asyncio.ensure_future(broadcaster())
        await sleep_until(start_at)
        samples.append((probe.rss_mb(), probe.cpu()))
        for i in range(1, n_seconds + 1):
            await sleep_until(start_at + i)
            samples.append((probe.rss_mb(), probe.cpu()))
            ctx.progress.update(f"soak {i}/{n_seconds} s, server RSS "
                                f"{_fmt(samples[-1][0])} MB")
        await bcast
        res = await job
        await asyncio.sleep(min(2.0, a.broadcast_every or 0.5))  # last broadcast in flight
        counters = await pool.each("counters")
        await close_conn(trigger.conn)
        await pool.each("close_all")
    return build_result(a, probe, samples, res, counters, opened, open_errors, broadcasts, k)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def build_result(a, probe, samples, res, counters, opened, open_errors, broadcasts, k) -> dict:
    n_seconds = len(samples) - 1
    series: list[dict] = []
    total_rpc, total_churn = Histogram(), Histogram()
    rpc_errors = churn_errors = 0
    cpu_total: float | None = 0.0
    for i in range(n_seconds):
        rows = [r["series"][i] for r in res if i < len(r["series"])]
        rpc = Histogram.merged(row["rpc"] for row in rows)
        churn = Histogram.merged(row["churn"] for row in rows)
        errs = sum(row["rpc_errors"] for row in rows)
        cerrs = sum(row["churn_errors"] for row in rows)
        total_rpc.merge(rpc)
        total_churn.merge(churn)
        rpc_errors += errs
        churn_errors += cerrs
        cpu_s = probe.cpu_seconds(samples[i][1], samples[i + 1][1])
        cpu_total = None if cpu_s is None or cpu_total is None else cpu_total + cpu_s
        series.append({"t": i + 1, "rss_mb": rounded(samples[i + 1][0], 1),
                       "cpu_pct": rounded(cpu_s * 100, 1) if cpu_s is not None else None,
                       "rpc": rpc.count, "rpc_p50_ms": rpc.summary_ms()["p50_ms"],
                       "rpc_p99_ms": rpc.summary_ms()["p99_ms"], "rpc_errors": errs,
                       "churn": churn.count, "churn_errors": cerrs})
    rss = [s["rss_mb"] for s in series if s["rss_mb"] is not None]
    rss_start = samples[0][0]
    presence = sum(c["presence"] for c in counters)
    still_open = sum(c["open"] for c in counters)
    expected = broadcasts[0] * opened
    summary = total_rpc.summary_ms()
    metrics = {
        "duration_s": n_seconds, "rpc_requests": total_rpc.count,
        "rpc_p50_ms": summary["p50_ms"], "rpc_p99_ms": summary["p99_ms"],
        "rpc_errors": rpc_errors, "churn_connects": total_churn.count,
        "churn_p99_ms": total_churn.summary_ms()["p99_ms"], "churn_errors": churn_errors,
        "broadcasts": broadcasts[0], "broadcast_errors": broadcasts[1],
        "receivers": opened, "receivers_open": still_open, "deliveries": presence,
        "missed": max(0, expected - presence),
        "errors": rpc_errors + churn_errors + broadcasts[1] + sum(open_errors.values()),
        "server_cpu_s": rounded(cpu_total, 3),
        "cpu_pct": rounded(cpu_total * 100 / n_seconds, 1) if cpu_total is not None else None,
        **rss_metrics(rss_start, rss[-1] if rss else None),
        "rss_max_mb": max(rss) if rss else None,
        "rss_growth_mb": rounded(rss[-1] - rss_start, 1) if rss and rss_start is not None else None,
    }
    return {"scenario": "soak",
            "params": {"duration_s": n_seconds, "rpc_rate": a.rpc_rate, "rpc_conns": a.rpc_conns,
                       "churn_per_s": a.churn, "broadcast_every_s": a.broadcast_every,
                       "receivers": a.receivers, "method": a.method, "processes": k},
            "metrics": metrics, "series": series,
            "error_kinds": merge_counts([open_errors, *(r["errors"] for r in res)]),
            "server": server_block(probe)}
