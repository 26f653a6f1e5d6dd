"""`krabfast bench` end to end: tiny versions of every scenario against a real krabfast
gateway subprocess, checking the --json shape, that server CPU/RSS were measured (the pid is
found from the listening port), and the --fail-under/--fail-over exit codes; repetitions
(`--repeat`), the servers the harness starts itself (`--core compiled|pure|both`, the echo
server) and what the JSON records about them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from krabfast.bench.targets import CORE_MODULES

TOKEN = "T"


@pytest.fixture(scope="module")
def gw(gateway_server_module):
    return gateway_server_module("--token", TOKEN, "--tick-interval-ms", "500")


def bench(gw, *argv: str, expect_rc: int = 0) -> dict:
    repeat = [] if argv[0] == "soak" or "--repeat" in argv else ["--repeat", "1"]
    proc = subprocess.run([sys.executable, "-m", "krabfast", "bench", *argv, *repeat, "--url",
                           gw.url, "--token", TOKEN, "--json", "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == expect_rc, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def bench_started(*argv: str, json_out: bool = True, timeout: float = 180):
    """`krabfast bench` with servers it starts itself (--vs-reference / --core)."""
    proc = subprocess.run([sys.executable, "-m", "krabfast", "bench", *argv, "--quiet",
                           *(["--json"] if json_out else [])], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout) if json_out else proc.stdout


def compiled_core_built() -> bool:
    from krabfast.bench.targets import probe_core

    return probe_core("compiled")["core"] == "compiled"


def check_common(result: dict, gw, scenario: str) -> dict:
    assert result["scenario"] == scenario
    assert result["url"] == gw.url
    assert result["server"]["pid"] == gw.process.pid
    assert result["server"]["cpu_source"] in ("schedstat", "stat")
    m = result["metrics"]
    assert m["errors"] == 0, result.get("error_kinds")
    return m


def test_handshake(gw):
    m = check_common(bench(gw, "handshake", "--connects", "50", "--concurrency", "4"), gw,
                     "handshake")
    assert m["connects"] == 50 and m["connects_per_s"] > 0
    assert 0 < m["p50_ms"] <= m["p99_ms"]
    assert m["server_cpu_s"] > 0 and m["cpu_us_per_op"] > 0
    assert m["rss_before_mb"] > 0 and m["rss_after_mb"] > 0


def test_rpc(gw):
    result = bench(gw, "rpc", "--conns", "4", "--inflight", "2", "--duration", "1",
                   "--warmup", "0.2")
    m = check_common(result, gw, "rpc")
    assert m["requests"] > 50 and m["req_per_s"] == pytest.approx(m["requests"], rel=0.01)
    assert 0 < m["p50_ms"] <= m["p99_ms"]
    assert m["server_cpu_s"] > 0 and m["cpu_us_per_op"] > 0
    assert result["params"]["method"] == "system-presence" and result["params"]["conns"] == 4


def test_rpc_method_errors_are_counted(gw):
    result = bench(gw, "rpc", "--conns", "2", "--inflight", "1", "--duration", "0.5",
                   "--warmup", "0", "--method", "no.such.method")
    assert result["metrics"]["errors"] > 0 and result["metrics"]["requests"] == 0
    assert any(k.startswith("INVALID_REQUEST") for k in result["error_kinds"])


def test_fanout(gw):
    result = bench(gw, "fanout", "--receivers", "50", "--broadcasts", "2", "--pause", "0.1")
    m = check_common(result, gw, "fanout")
    assert m["receivers"] == 50 and m["deliveries"] == 100 and m["missed"] == 0
    assert 0 < m["broadcast_p50_ms"] <= m["broadcast_max_ms"]
    assert m["server_cpu_s"] > 0 and m["cpu_us_per_delivery"] > 0
    assert [b["received"] for b in result["broadcasts"]] == [50, 50]


def test_idle_with_ticks(gw):
    result = bench(gw, "idle", "--sockets", "50", "--hold", "1.2", "--expect-ticks",
                   "--settle", "0.2")
    m = check_common(result, gw, "idle")
    assert m["sockets"] == 50 and m["base_rss_mb"] > 0 and m["rss_per_socket_kib"] is not None
    assert m["tick_interval_ms"] == 500 and m["expected_ticks"] == 2
    assert m["sockets_ok"] == 50 and m["min_ticks"] >= 2
    assert m["hold_cpu_us_per_socket"] is not None
    assert result["ok"] is True


def test_soak(gw, tmp_path):
    result = bench(gw, "soak", "--duration", "3", "--receivers", "20", "--rpc-rate", "40",
                   "--churn", "4", "--broadcast-every", "1")
    m = check_common(result, gw, "soak")
    assert len(result["series"]) == 3
    assert all(s["rss_mb"] > 0 and s["cpu_pct"] is not None for s in result["series"])
    assert m["rpc_requests"] >= 100 and m["churn_connects"] >= 10
    assert m["broadcasts"] == 3 and m["deliveries"] == 60 and m["missed"] == 0
    assert m["server_cpu_s"] > 0


def test_thresholds_set_the_exit_code(gw):
    base = ("handshake", "--connects", "20", "--concurrency", "2")
    result = bench(gw, *base, "--fail-under", "connects_per_s=1", "--fail-over", "p99_ms=60000")
    assert result["metrics"]["connects"] == 20
    bench(gw, *base, "--fail-under", "connects_per_s=1e9", expect_rc=1)
    bench(gw, *base, "--fail-over", "cpu_us_per_op=0.001", expect_rc=1)
    bench(gw, *base, "--fail-under", "no_such_metric=1", expect_rc=1)


def test_unreachable_gateway_fails_cleanly():
    proc = subprocess.run([sys.executable, "-m", "krabfast", "bench", "rpc", "--url",
                           "ws://127.0.0.1:9", "--duration", "0.2", "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot connect to ws://127.0.0.1:9: connection refused" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_repeat_reports_median_min_max_against_a_url(gw):
    result = bench(gw, "handshake", "--connects", "20", "--concurrency", "2", "--repeat", "2")
    m = check_common(result, gw, "handshake")
    assert result["repeat"] == 2 and len(result["runs"]) == 2
    assert m["connects"] == 20 and result["spread"]["connects"] == [20, 20]
    low, high = result["spread"]["cpu_us_per_op"]
    per_run = sorted(r["metrics"]["cpu_us_per_op"] for r in result["runs"])
    assert [low, high] == per_run and low <= m["cpu_us_per_op"] <= high
    env = result["env"]  # a server not started by the harness: its core from /proc/PID/maps
    import krabfast._core as core

    assert env["core"] == ("compiled" if core.COMPILED else "not compiled (or not krabfast)")
    assert env["cpu_count"] >= 1 and "krabfast bench handshake" in env["command"]


def test_core_both_runs_compiled_and_pure_interleaved():
    if not compiled_core_built():
        pytest.skip("the compiled core is not built")
    out = bench_started("rpc", "--core", "both", "--repeat", "2", "--conns", "2", "--inflight",
                        "1", "--duration", "0.5", "--warmup", "0")
    assert out["repeat"] == 2 and set(out["targets"]) == {"krabfast", "krabfast-pure"}
    pids = set()
    for name, core in (("krabfast", "compiled"), ("krabfast-pure", "pure")):
        t = out["targets"][name]
        env = t["env"]
        assert env["core"] == core and env["KRABFAST_NO_EXTENSIONS"] == \
            ("1" if core == "pure" else None)
        assert (set(env["core_modules_mapped"]) == set(CORE_MODULES)) == (core == "compiled")
        for key in ("python", "picows", "uvloop", "msgspec"):
            assert env[key], key
        assert env["cpu_count"] >= 1 and "--core both" in env["command"]
        assert "krabfast_commit" in env and "krabfast_dirty" in env
        assert len(t["runs"]) == 2 and t["metrics"]["requests"] > 0
        assert t["metrics"]["errors"] == 0, t["error_kinds"]
        assert t["metrics"]["cpu_us_per_op"] > 0 and "cpu_us_per_op" in t["spread"]
        pids |= {r["server"]["pid"] for r in t["runs"]}
    assert len(pids) == 4  # a fresh server per target and repetition
    ratio = out["ratios"]["krabfast/krabfast-pure"]
    assert ratio["cpu_us_per_op"] > 0 and ratio["req_per_s"] > 0
    low, high = out["ratio_spread"]["krabfast/krabfast-pure"]["cpu_us_per_op"]
    assert 0 < low <= high
    if out["run"]["krabfast_commit"] is not None:
        assert len(out["run"]["krabfast_commit"]) == 40


def test_core_pure_text_report_and_echo_handshake():
    """The echo server answers the handshake scenario (challenge, connect, hello-ok) and the
    text report shows median (min-max) and the cores."""
    text = bench_started("handshake", "--vs-reference", "--targets", "krabfast,echo",
                         "--core", "pure", "--repeat", "2", "-n", "20", "-c", "2",
                         json_out=False)
    assert "median (min-max) of 2 runs" in text
    assert "cores: krabfast pure, echo pure" in text
    line = next(l for l in text.splitlines() if l.startswith("connects/s"))
    assert line.count("(") == 2 and "x" in line.split()[-1]


def test_echo_target_answers_like_krabfast():
    """Same handshake, same answer sizes: krabfast/echo measures protocol work only."""
    import asyncio

    from krabfast.bench.loadclient import close_conn, connect_frame, open_conn, request_parts
    from krabfast.bench.targets import start_target

    async def sizes(name: str) -> dict:
        target = await start_target(name, TOKEN)
        try:
            conn = await open_conn(target.url, connect_frame(TOKEN), want_hello=True)
            got: dict = {"hello": conn.hello, "core": target.info["core"]}
            answers: asyncio.Queue = asyncio.Queue()
            conn.on_res = lambda _conn, data: answers.put_nowait(data)
            for method in ("system-presence", "health", "system-event"):
                prefix, suffix = request_parts(method, {"text": "x"} if method == "system-event"
                                               else None)
                conn.send(prefix + b"9" + suffix)
                got[method] = await asyncio.wait_for(answers.get(), 10)
            await close_conn(conn)
            return got
        finally:
            target.stop()

    async def both():
        return await sizes("krabfast"), await sizes("echo")

    krab, echo = asyncio.run(both())
    assert echo["core"] == krab["core"]
    assert echo["hello"]["type"] == "hello-ok"
    assert set(echo["hello"]) == set(krab["hello"])
    assert abs(len(json.dumps(echo["hello"])) - len(json.dumps(krab["hello"]))) < 60
    for method in ("system-presence", "health", "system-event"):
        assert json.loads(echo[method])["ok"] is True
        assert abs(len(echo[method]) - len(krab[method])) < 40, (method, echo[method],
                                                                  krab[method])


def test_chat_against_a_started_krabfast():
    """`krabfast bench chat`: the harness starts the fake model and a krabfast configured
    with it (--config); 2 runs, 2 watchers; every run ends with a final everywhere."""
    out = bench_started("chat", "--vs-reference", "--targets", "krabfast", "--runs", "2",
                        "--concurrency", "2", "--watchers", "2", "--runners", "1",
                        "--chunks", "4", "--chunk-delay", "0.001", "--repeat", "1")
    result = out["targets"]["krabfast"]
    m = result["metrics"]
    assert out["scenario"] == "chat" and set(out["targets"]) == {"krabfast"}
    assert (m["runs"], m["finals"], m["errors"], m["watcher_finals_missed"]) == (2, 2, 0, 0), \
        result.get("error_kinds")
    assert m["deltas_per_run"] >= 1 and m["watcher_deltas"] >= 2 * 2
    assert m["deltas_delivered"] >= m["watcher_deltas"]
    assert m["server_cpu_s"] > 0 and m["cpu_us_per_delta"] > 0 and m["cpu_us_per_run"] > 0
    for key in ("first_delta_p50_ms", "model_ttfc_ms", "added_first_delta_p50_ms",
                "model_direct_ttfc_ms"):
        assert m[key] is not None, key  # the fake's timings matched the runs
    assert result["unmatched_timings"] == 0
    assert result["params"]["model"] == "fake"
