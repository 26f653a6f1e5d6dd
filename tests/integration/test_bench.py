"""`krabfast bench` end to end: tiny versions of every scenario against a real krabfast
gateway subprocess, checking the --json shape, that server CPU/RSS were measured (the pid is
found from the listening port), and the --fail-under/--fail-over exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOKEN = "T"


@pytest.fixture(scope="module")
def gw(gateway_server_module):
    return gateway_server_module("--token", TOKEN, "--tick-interval-ms", "500")


def bench(gw, *argv: str, expect_rc: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "krabfast", "bench", *argv, "--url", gw.url,
                           "--token", TOKEN, "--json", "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == expect_rc, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


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
    result = bench(gw, "fanout", "--receivers", "50", "--repeat", "2", "--pause", "0.1")
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
