"""The `chat` scenario: streamed model runs fanned out to watchers.

One fake OpenAI-compatible model server (krabfast.bench.fakemodel, its own process; every
gateway target the harness starts is configured with it as the primary model) streams each
answer in `--chunks` chunks, `--chunk-delay` seconds apart. `--watchers` sockets
(operator.read, in the load workers) count the `chat` events they get; `--runners` sockets
in this process send `chat.send`, each on a new session key, `--concurrency` at a time
(lanes spread over the runner sockets), for `--duration` seconds (or `--runs` in all), after
one warm-up run per lane (the reference's first run is slow: it loads its agent runtime).

Measured, over the runs started in the measured window (the server CPU from just before the
first send to the last run's end):

- server CPU (utime+stime of the gateway process) per delivered `chat` delta (every delta
  received by any socket: watchers and runners alike, all of them operator.read) and per run;
- the first delta at the sender: from sending `chat.send` to the first `chat` delta of that
  run, minus the model's own time to first chunk as the fake server measured it for that very
  request (request arrived -> first content chunk written) = the gateway's added first-delta
  latency (p50/p99); the fake's time to first chunk as a plain client on this machine sees it
  is measured directly too (`model_direct_ttfc_ms`, for reference);
- errors (failed `chat.send`, runs ending in error/aborted, runs with no end in `--timeout`),
  and that every run ended with a `final` at the sender and at every watcher.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from krabfast.bench.loadclient import _EVENT, _RES, BenchConn, close_conn, connect_frame, \
    error_code, frame_kind, parse_res
from krabfast.bench.pool import workers_for
from krabfast.bench.stats import merge_counts, percentile, rounded

monotonic = time.monotonic
_CHAT = b'"chat"'
ENDS = ("final", "error", "aborted")


class RunState:
    __slots__ = ("marker", "t_send", "t_first", "t_end", "deltas", "state", "done", "res")

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.t_send = 0.0
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.deltas = 0
        self.state: str | None = None
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future = loop.create_future()
        self.res: asyncio.Future = loop.create_future()


class ChatRunners:
    """The runner sockets' shared state: runs by run id (= idempotencyKey) and the chat
    deltas every runner socket received (all runs: they are operator.read sockets too)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.by_request: dict[bytes, RunState] = {}
        self.owner: dict[str, BenchConn] = {}  # run marker -> the socket that sent it
        self.deltas_seen = 0
        self.finals_seen = 0

    def on_frame(self, conn: BenchConn, data: bytes) -> None:
        if data.startswith(_RES):
            self._on_res(data)
            return
        if data.startswith(_EVENT):
            if not data.startswith(_CHAT, 24):
                return
        else:
            kind, name = frame_kind(data)
            if kind == "res":
                self._on_res(data)
                return
            if name != "chat":
                return
        now = monotonic()
        payload = orjson.loads(data).get("payload") or {}
        state = payload.get("state")
        if state == "delta":
            self.deltas_seen += 1
        elif state == "final":
            self.finals_seen += 1
        run = self.runs.get(payload.get("runId"))
        if run is None or self.owner.get(run.marker) is not conn:
            return  # another runner's run (counted above) or a run we no longer wait for
        if state == "delta":
            run.deltas += 1
            if run.t_first is None:
                run.t_first = now
        elif state in ENDS and run.state is None:
            run.state = state
            run.t_end = now
            if not run.done.done():
                run.done.set_result(state)

    def _on_res(self, data: bytes) -> None:
        rid, ok = parse_res(data)
        run = self.by_request.pop(rid, None)
        if run is None or run.res.done():
            return
        payload = (orjson.loads(data).get("payload") or {}) if ok else {}
        run_id = payload.get("runId")
        if ok and run_id and run_id != run.marker:
            self.runs[run_id] = run  # a gateway with its own run ids
        run.res.set_result((ok, None if ok else error_code(data), payload.get("status")))


class ChatConn(BenchConn):
    """A runner socket: every frame after hello-ok goes to the shared ChatRunners."""

    def __init__(self, connect_bytes: bytes, runners: ChatRunners) -> None:
        super().__init__(connect_bytes)
        self.runners = runners

    def _on_open_frame(self, data: bytes) -> None:
        self.runners.on_frame(self, data)


async def _open_runner(url: str, token: str | None, runners: ChatRunners) -> ChatConn:
    from picows import ws_connect

    from krabfast.bench.loadclient import MAX_FRAME

    _t, conn = await ws_connect(lambda: ChatConn(connect_frame(token), runners), url,
                                websocket_handshake_timeout=15.0, max_frame_size=MAX_FRAME,
                                enable_auto_pong=True)
    await asyncio.wait_for(conn.ready, 15.0)
    return conn


async def one_run(conn: ChatConn, runners: ChatRunners, timeout: float) -> RunState:
    marker = f"kfb-{uuid.uuid4().hex[:16]}"
    run = RunState(marker)
    runners.runs[marker] = run
    runners.owner[marker] = conn
    rid = marker.encode()
    runners.by_request[rid] = run
    params = {"sessionKey": f"agent:main:bench-{marker}", "message": f"{marker} say something",
              "idempotencyKey": marker}
    run.t_send = monotonic()
    conn.send(orjson.dumps({"type": "req", "id": marker, "method": "chat.send",
                            "params": params}))
    try:
        ok, err, status = await asyncio.wait_for(asyncio.shield(run.res), timeout)
        if not ok:
            run.state = f"send-error {err}"
        elif status not in ("started", None):
            run.state = f"send-status {status}"
        else:
            await asyncio.wait_for(asyncio.shield(run.done), timeout)
    except asyncio.TimeoutError:
        run.state = run.state or "timeout"
    finally:
        runners.by_request.pop(rid, None)
        runners.owner.pop(marker, None)
        for key in [k for k, v in runners.runs.items() if v is run]:
            del runners.runs[key]
    return run


async def run_chat(ctx, a) -> dict:
    from krabfast.bench.scenarios import BenchFailure, open_held, rss_metrics, server_block

    probe, fake = ctx.probe, getattr(ctx, "fake_model", None)
    m, lanes = a.watchers, a.concurrency
    k = workers_for(m, min(ctx.processes, max(1, m)))
    runners = ChatRunners()
    direct: list[float] = []
    if fake is not None:
        direct = await fake.direct_ttfc(10)
    async with ctx.pool(k) as pool:
        opened, open_errors = await open_held(ctx, pool, m, a.open_concurrency, "watchers")
        if opened == 0:
            raise BenchFailure(f"no watcher connected: {open_errors}")
        conns = [await _open_runner(ctx.url, ctx.token, runners) for _ in range(a.runners)]
        try:
            # warm-up: one run per lane (not measured)
            ctx.progress.update(f"warm-up: {lanes} runs")
            warm = await asyncio.gather(*(one_run(conns[i % len(conns)], runners, a.warmup_timeout)
                                          for i in range(lanes)))
            bad = [r.state for r in warm if r.state != "final"]
            if len(bad) == len(warm):
                raise BenchFailure(f"no warm-up run ended with a final: {merge_counts([{s: 1} for s in bad])}")
            await asyncio.sleep(0.3)
            if fake is not None:
                await fake.timings()  # forget the warm-up's
            await pool.each("counters", reset=True)
            runners.deltas_seen = runners.finals_seen = 0
            done: list[RunState] = []
            remaining = [a.runs] if a.runs else None
            rss0, cpu0, t0 = probe.rss_mb(), probe.cpu(), monotonic()
            until = t0 + a.duration

            async def lane(i: int) -> None:
                conn = conns[i % len(conns)]
                while True:
                    if remaining is not None:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    elif monotonic() >= until:
                        return
                    done.append(await one_run(conn, runners, a.timeout))

            job = asyncio.ensure_future(asyncio.gather(*(lane(i) for i in range(lanes))))
            while not job.done():
                ctx.progress.update(f"{len(done)} runs, {monotonic() - t0:.0f} s")
                await asyncio.wait([job], timeout=1.0)
            await job
            wall = monotonic() - t0
            cpu1, rss1 = probe.cpu(), probe.rss_mb()
            await asyncio.sleep(0.3)  # the watchers' last frames
            counters = await pool.each("counters")
            timings = await fake.timings() if fake is not None else {}
        finally:
            for conn in conns:
                await close_conn(conn)
        await pool.each("close_all")
    result = chat_result(a, opened, k, done, runners.deltas_seen, counters, timings, direct,
                         wall, probe.cpu_seconds(cpu0, cpu1), open_errors)
    result["metrics"].update(rss_metrics(rss0, rss1))
    result["server"] = server_block(probe)
    return result


def chat_result(a, watchers: int, workers: int, done: list[RunState], runner_deltas: int,
                counters: list[dict], timings: dict, direct: list[float], wall: float,
                cpu_s: float | None, open_errors: dict) -> dict:
    """The result dict of one chat run, from what was observed (no I/O: unit-tested)."""
    runs = len(done)
    finals = [r for r in done if r.state == "final"]
    kinds = merge_counts([open_errors, *({r.state or "no-end": 1} for r in done
                                         if r.state != "final")])
    first = sorted(r.t_first - r.t_send for r in done if r.t_first is not None)
    added, own, unmatched = [], [], 0
    for r in done:
        if r.t_first is None:
            continue
        t = timings.get(r.marker)
        if t is None:
            unmatched += 1
            continue
        own.append(t[1] - t[0])
        added.append((r.t_first - r.t_send) - (t[1] - t[0]))
    added.sort()
    own.sort()
    ends = sorted(r.t_end - r.t_send for r in finals if r.t_end is not None)
    watcher_deltas = sum(c.get("chat_deltas", 0) for c in counters)
    watcher_finals = sum(c.get("chat_finals", 0) for c in counters)
    delivered = watcher_deltas + runner_deltas
    no_first = sum(r.t_first is None for r in finals)
    if no_first:
        kinds["final-without-delta"] = no_first

    def ms(values, q):
        v = percentile(values, q)
        return rounded(v * 1000 if v is not None else None, 3)

    def per(n):
        return rounded(cpu_s * 1e6 / n, 2) if cpu_s is not None and n else None

    metrics = {
        "runs": runs, "runs_per_s": rounded(runs / wall, 2) if wall > 0 else None,
        "finals": len(finals), "errors": sum(kinds.values()),
        "deltas_per_run": rounded(sum(r.deltas for r in done) / runs, 2) if runs else None,
        "deltas_delivered": delivered, "watcher_deltas": watcher_deltas,
        "watcher_finals_missed": len(finals) * watchers - watcher_finals,
        "server_cpu_s": rounded(cpu_s, 4), "cpu_us_per_delta": per(delivered), "cpu_us_per_run": per(runs),
        "first_delta_p50_ms": ms(first, 50), "first_delta_p99_ms": ms(first, 99),
        "model_ttfc_ms": ms(own, 50),
        "added_first_delta_p50_ms": ms(added, 50), "added_first_delta_p99_ms": ms(added, 99),
        "model_direct_ttfc_ms": ms(sorted(direct), 50),
        "run_p50_ms": ms(ends, 50), "wall_s": rounded(wall, 3),
    }
    return {"scenario": "chat",
            "params": {"watchers": watchers, "runners": a.runners, "concurrency": a.concurrency,
                       "duration_s": None if a.runs else a.duration, "runs": a.runs,
                       "chunks": a.chunks, "chunk_delay_s": a.chunk_delay,
                       "processes": workers, "model": "fake" if timings or direct else "gateway's own"},
            "metrics": metrics, "error_kinds": kinds, "unmatched_timings": unmatched}
