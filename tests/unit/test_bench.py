"""The pure parts of `krabfast bench`: arguments, thresholds, percentiles, histograms,
/proc parsing, result aggregation, tables."""

from __future__ import annotations

import os
import random

import orjson
import pytest

from krabfast.bench import report
from krabfast.bench.cli import is_local_host
from krabfast.bench.loadclient import connect_frame, parse_res, request_parts
from krabfast.bench.pool import MAX_SOCKETS_PER_WORKER, split, workers_for
from krabfast.bench.procstat import (CpuSample, cpu_delta, find_listening_pid, parse_net_tcp,
                                     parse_schedstat_ns, parse_stat_cpu_ticks, parse_status_kib,
                                     read_cpu, read_rss_kib)
from krabfast.bench.soak import build_result
from krabfast.bench.stats import Histogram, bucket_bounds, bucket_index, merge_counts, percentile
from krabfast.cli import build_parser


def parse(*argv):
    return build_parser().parse_args(["bench", *argv])


# -- arguments --------------------------------------------------------------------------------

def test_defaults_per_scenario():
    a = parse("handshake", "--url", "ws://h:1")
    assert (a.connects, a.concurrency, a.url, a.json) == (2000, 10, "ws://h:1", False)
    a = parse("rpc")
    assert (a.conns, a.inflight, a.duration, a.warmup, a.method, a.params) == \
        (20, 4, 10.0, 1.0, "system-presence", {})
    a = parse("fanout")
    assert (a.receivers, a.broadcasts, a.repeat, a.open_concurrency) == (4000, 5, 3, 30)
    a = parse("idle")
    assert (a.sockets, a.hold, a.expect_ticks) == (2000, 0.0, False)
    a = parse("soak")
    assert (a.duration, a.receivers) == (60.0, 200)
    assert not hasattr(a, "repeat")  # one time series; not repeated
    assert 1 <= a.processes <= 2
    assert parse("rpc").repeat == 3 and parse("rpc").core is None


def test_core_and_repeat_flags():
    a = parse("rpc", "--core", "both", "--repeat", "2")
    assert (a.core, a.repeat) == ("both", 2)
    assert parse("handshake", "--core", "pure").core == "pure"
    for bad in (["rpc", "--core", "cython"], ["rpc", "--repeat", "0"]):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_core_cannot_apply_to_a_url(capsys):
    from krabfast.cli import main

    assert main(["bench", "rpc", "--url", "ws://127.0.0.1:1", "--core", "pure"]) == 2
    assert "cannot set the core of --url" in capsys.readouterr().err


def test_core_compiled_fails_loudly_when_not_built(monkeypatch, capsys):
    from krabfast.bench import targets
    from krabfast.cli import main

    asked = []
    monkeypatch.setattr(targets, "probe_core", lambda core: asked.append(core) or
                        {"core": "pure", "executable": "/x/python"})
    for core in ("compiled", "both"):
        assert main(["bench", "rpc", "--core", core, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"--core {core}: krabfast's compiled core is not built" in err, err
        assert "build_ext --inplace" in err
    assert asked == ["compiled", "compiled"]


def test_target_plan_per_core():
    from krabfast.bench.cli import target_plan

    names = ["reference", "krabfast", "echo"]
    assert target_plan(names, None) == [("reference", "reference", None),
                                        ("krabfast", "krabfast", None), ("echo", "echo", None)]
    assert target_plan(names, "pure") == [("reference", "reference", None),
                                          ("krabfast", "krabfast", "pure"), ("echo", "echo", "pure")]
    assert target_plan(names, "both") == [("reference", "reference", None),
                                          ("krabfast", "krabfast", "compiled"),
                                          ("krabfast-pure", "krabfast", "pure"),
                                          ("echo", "echo", "compiled")]


def test_core_env_and_check_core():
    from krabfast.bench.targets import CORE_MODULES, TargetError, check_core, core_env

    base = {"KRABFAST_NO_EXTENSIONS": "1", "X": "y"}
    assert core_env(base, "pure")["KRABFAST_NO_EXTENSIONS"] == "1"
    assert "KRABFAST_NO_EXTENSIONS" not in core_env(base, "compiled")
    assert "KRABFAST_NO_EXTENSIONS" not in core_env(base, None) and core_env(base, None)["X"] == "y"
    all5 = set(CORE_MODULES)
    check_core("k", "compiled", {"core": "compiled"}, all5)
    check_core("k", "pure", {"core": "pure"}, set())
    check_core("k", None, {"core": "pure"}, None)  # maps unreadable: the report alone
    with pytest.raises(TargetError, match="asked for the compiled core, the process runs pure"):
        check_core("k", "compiled", {"core": "pure"}, set())
    with pytest.raises(TargetError, match="asked for the pure core"):
        check_core("k", "pure", {"core": "compiled"}, all5)
    with pytest.raises(TargetError, match="mapped"):  # the report contradicts the process
        check_core("k", None, {"core": "compiled"}, {"wire"})
    with pytest.raises(TargetError, match="no core reported"):
        check_core("k", None, {}, None)


def test_parse_core_modules_from_maps():
    from krabfast.bench.procstat import mapped_core_modules, parse_core_modules

    maps = ("7f00-7f01 r-xp 00000000 08:01 42 /w/krabfast/_core/listener.cpython-311-x86_64-linux-gnu.so\n"
            "7f02-7f03 r--p 00000000 08:01 43 /w/krabfast/_core/wire.cpython-311-x86_64-linux-gnu.so\n"
            "7f04-7f05 r--p 00000000 08:01 44 /usr/lib/libc.so.6\n"
            "7f06-7f07 rw-p 00000000 00:00 0\n")
    assert parse_core_modules(maps) == {"listener", "wire"}
    import krabfast._core as core

    mine = mapped_core_modules(os.getpid())
    assert mine is not None and (len(mine) == len(core.MODULES)) == core.COMPILED
    assert mapped_core_modules(2**22 + 12345) is None


def test_common_flags_repeatable_and_typed():
    a = parse("rpc", "--fail-under", "req_per_s=100", "--fail-under", "requests=5",
              "--fail-over", "p99_ms=3", "--params", '{"a":1}', "--server-pid", "42",
              "--processes", "3", "--vs-reference", "--json", "--plot", "x.png")
    assert a.fail_under == ["req_per_s=100", "requests=5"]
    assert a.fail_over == ["p99_ms=3"]
    assert a.params == {"a": 1} and a.server_pid == 42 and a.processes == 3
    assert a.vs_reference and a.json and a.plot == "x.png"


@pytest.mark.parametrize("argv", [["rpc", "--params", "{nope"], ["handshake", "-n", "0"],
                                  ["rpc", "--duration", "-1"], ["nosuch"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


def test_url_defaults_like_every_client_command(monkeypatch, capsys):
    import socket

    from krabfast.bench import cli as bench_cli
    from krabfast.cli import main

    monkeypatch.delenv("KRABFAST_BENCH_URL", raising=False)
    with socket.socket() as s:  # bound, not listening: refused
        s.bind(("127.0.0.1", 0))
        assert "connection refused" in bench_cli._unreachable("127.0.0.1", s.getsockname()[1])
    probed = []
    monkeypatch.setattr(bench_cli, "_unreachable", lambda host, port: probed.append((host, port))
                        or "connection refused (is the gateway running?)")
    assert main(["bench", "rpc"]) == 1
    assert probed == [("127.0.0.1", 18789)]
    err = capsys.readouterr().err
    assert "cannot connect to ws://127.0.0.1:18789: connection refused" in err, err
    assert main(["bench", "rpc", "--url", "127.0.0.1:1"]) == 2
    assert "use ws://127.0.0.1:1" in capsys.readouterr().err


def test_expect_ticks_needs_hold(capsys):
    from krabfast.cli import main

    assert main(["bench", "idle", "--url", "ws://127.0.0.1:1", "--expect-ticks"]) == 2
    assert "--hold" in capsys.readouterr().err


def test_bad_threshold_exits_2(capsys):
    from krabfast.cli import main

    assert main(["bench", "rpc", "--url", "ws://127.0.0.1:1", "--fail-under", "x"]) == 2
    assert "METRIC=VALUE" in capsys.readouterr().err


# -- thresholds -------------------------------------------------------------------------------

def test_parse_threshold():
    assert report.parse_threshold("req_per_s=1e4") == ("req_per_s", 10000.0)
    assert report.parse_threshold(" p99_ms = 2.5") == ("p99_ms", 2.5)
    for bad in ("x", "=3", "a=b", "a=nan"):
        with pytest.raises(report.ThresholdError):
            report.parse_threshold(bad)


def test_check_thresholds():
    m = {"req_per_s": 1000.0, "p99_ms": 4.0, "cpu_us_per_op": None, "errors": 0}
    assert report.check_thresholds(m, [("req_per_s", 900)], [("p99_ms", 5)]) == []
    assert report.check_thresholds(m, [("req_per_s", 1000)], [("p99_ms", 4)]) == []  # inclusive
    fails = report.check_thresholds(m, [("req_per_s", 1001)], [("p99_ms", 3.9)])
    assert len(fails) == 2 and "below" in fails[0] and "above" in fails[1]
    (missing,) = report.check_thresholds(m, [("nope", 1)], [])
    assert "no such metric" in missing and "req_per_s" in missing
    (na,) = report.check_thresholds(m, [], [("cpu_us_per_op", 10)])
    assert "n/a" in na


def test_threshold_metrics_include_ratios():
    from krabfast.bench.cli import _threshold_metrics

    results = {n: {"scenario": "rpc", "metrics": {"req_per_s": v}}
               for n, v in (("reference", 100.0), ("krabfast", 300.0), ("echo", 600.0))}
    m = _threshold_metrics(results, results["krabfast"])
    assert m["req_per_s"] == 300.0
    assert m["vs_reference.req_per_s"] == 3.0 and m["vs_echo.req_per_s"] == 0.5


# -- percentiles and histograms ----------------------------------------------------------------

def test_percentile_matches_numpy_linear():
    values = sorted([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 9.0
    assert percentile(values, 50) == pytest.approx(3.5)
    assert percentile(values, 90) == pytest.approx(6.9)
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_buckets_are_contiguous_and_contain_their_values():
    prev_high = 0
    for idx in range(64 * 40):
        low, high = bucket_bounds(idx)
        assert low == prev_high and high > low
        prev_high = high
    for us in [0, 1, 127, 128, 129, 1000, 65_432, 10**6, 10**9]:
        low, high = bucket_bounds(bucket_index(us))
        assert low <= us < high
        assert (high - low) / max(us, 1) <= 1 / 64 or us < 128


def test_histogram_percentiles_close_to_exact():
    rng = random.Random(7)
    samples = [rng.lognormvariate(-7, 1.0) for _ in range(20_000)]  # ~1 ms median, seconds
    h = Histogram()
    for s in samples:
        h.record(s)
    exact = sorted(samples)
    for q in (50, 90, 99):
        assert h.percentile_ms(q) == pytest.approx(percentile(exact, q) * 1000, rel=0.02)
    assert h.count == len(samples)
    assert h.max_us == int(max(samples) * 1e6)
    assert h.percentile_ms(100) == pytest.approx(max(samples) * 1000, rel=0.01)
    assert Histogram().summary_ms() == {"p50_ms": None, "p90_ms": None, "p99_ms": None,
                                        "max_ms": None, "mean_ms": None}


def test_histogram_merge_roundtrip_equals_single():
    rng = random.Random(1)
    parts = [Histogram() for _ in range(3)]
    whole = Histogram()
    for i in range(3000):
        v = rng.uniform(0, 0.05)
        parts[i % 3].record(v)
        whole.record(v)
    shipped = [orjson.loads(orjson.dumps(p.to_dict())) for p in parts]  # as from a worker
    merged = Histogram.merged(shipped)
    assert merged.counts == whole.counts
    assert (merged.count, merged.total_us, merged.max_us, merged.min_us) == \
        (whole.count, whole.total_us, whole.max_us, whole.min_us)
    assert merged.summary_ms() == whole.summary_ms()


def test_merge_counts_and_split():
    assert merge_counts([{"a": 1}, {"a": 2, "b": 1}, {}]) == {"a": 3, "b": 1}
    assert split(10, 3) == [4, 3, 3] and sum(split(19_000, 3)) == 19_000
    assert split(1, 2) == [1, 0]
    assert workers_for(19_000, 2) == 3 and workers_for(100, 2) == 2
    assert all(n <= MAX_SOCKETS_PER_WORKER for n in split(19_000, workers_for(19_000, 2)))


# -- /proc parsing -----------------------------------------------------------------------------

NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:4965 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 777777 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
"""


def test_parse_net_tcp_listen_only():
    assert parse_net_tcp(NET_TCP, 0x4965) == {123456}  # the ESTABLISHED row is ignored
    assert parse_net_tcp(NET_TCP, 8080) == {222}
    assert parse_net_tcp(NET_TCP, 1) == set()


def test_parse_stat_status_schedstat():
    stat = "4242 (python -m krab) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0"
    assert parse_stat_cpu_ticks(stat) == 287
    status = "Name:\tpython\nVmPeak:\t  200 kB\nVmRSS:\t   13684 kB\nRssAnon:\t 687 kB\n"
    assert parse_status_kib(status) == 13684
    assert parse_status_kib(status, "VmPeak") == 200
    assert parse_status_kib("Name: x\n") is None
    assert parse_schedstat_ns("552154752 398054 22\n") == 552154752


def test_cpu_delta_prefers_schedstat_unless_a_thread_exited():
    a = CpuSample(100, {1: 1_000_000_000, 2: 500_000_000})
    b = CpuSample(130, {1: 1_200_000_000, 2: 600_000_000, 3: 50_000_000})
    assert cpu_delta(a, b) == (pytest.approx(0.35), "schedstat")
    gone = CpuSample(130, {1: 1_200_000_000})
    assert cpu_delta(a, gone) == (pytest.approx(0.30), "stat")
    assert cpu_delta(CpuSample(1, None), CpuSample(11, None)) == (pytest.approx(0.1), "stat")
    assert cpu_delta(None, b) == (None, "n/a")


def test_live_proc_readers_on_this_process():
    import socket

    cpu = read_cpu(os.getpid())
    assert cpu is not None and cpu.ticks >= 0
    assert read_rss_kib(os.getpid()) > 1000
    assert read_cpu(2**22 + 12345) is None and read_rss_kib(2**22 + 12345) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert find_listening_pid(s.getsockname()[1]) == os.getpid()


def test_local_host_detection():
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert not is_local_host("example.invalid") and not is_local_host(None)


# -- wire helpers of the load client -----------------------------------------------------------

def test_connect_frame_and_request_parts():
    frame = orjson.loads(connect_frame("T"))
    assert frame["method"] == "connect" and frame["type"] == "req"
    p = frame["params"]
    assert p["client"]["id"] == "gateway-client" and p["client"]["mode"] == "backend"
    assert p["role"] == "operator" and p["scopes"] == ["operator.read", "operator.admin"]
    assert p["auth"] == {"token": "T"} and p["minProtocol"] == p["maxProtocol"] == 4
    assert "auth" not in orjson.loads(connect_frame(None))["params"]
    prefix, suffix = request_parts("system-event", {"text": "x"})
    assert orjson.loads(prefix + b"7" + suffix) == {"type": "req", "id": "7",
                                                    "method": "system-event",
                                                    "params": {"text": "x"}}


def test_parse_res_fast_and_fallback():
    assert parse_res(b'{"type":"res","id":"12","ok":true,"payload":[]}') == (b"12", True)
    assert parse_res(b'{"type":"res","id":"c1","ok":false,"error":{}}') == (b"c1", False)
    assert parse_res(b'{"ok":true,"id":"9","type":"res"}') == (b"9", True)


# -- aggregation and rendering -----------------------------------------------------------------

class _Probe:
    pid = 1
    cpu_source = "n/a"

    def cpu_seconds(self, before, after):
        return None if before is None else after - before


def test_soak_result_aggregates_workers_per_second():
    def worker(n):
        rows = []
        for t in range(2):
            h = Histogram()
            for _ in range(n):
                h.record(0.002)
            c = Histogram()
            c.record(0.01)
            rows.append({"t": t, "rpc": h.to_dict(), "rpc_errors": 1, "churn": c.to_dict(),
                         "churn_errors": 0})
        return {"series": rows, "errors": {"x": 1}}

    class A:
        rpc_rate, rpc_conns, churn, broadcast_every, receivers, method = 10, 2, 1, 1, 5, "m"

    samples = [(50.0, 0.0), (51.0, 0.5), (52.5, 1.0)]
    counters = [{"presence": 4, "open": 3}, {"presence": 6, "open": 2}]
    out = build_result(A, _Probe(), samples, [worker(3), worker(5)], counters, 5, {},
                       [2, 0], 2)
    m = out["metrics"]
    assert [s["rpc"] for s in out["series"]] == [8, 8]
    assert [s["rss_mb"] for s in out["series"]] == [51.0, 52.5]
    assert [s["cpu_pct"] for s in out["series"]] == [50.0, 50.0]
    assert m["rpc_requests"] == 16 and m["rpc_errors"] == 4 and m["churn_connects"] == 4
    assert m["deliveries"] == 10 and m["missed"] == 0 and m["receivers_open"] == 5
    assert m["rss_growth_mb"] == 2.5 and m["rss_max_mb"] == 52.5
    assert m["rpc_p50_ms"] == pytest.approx(2.0, rel=0.02)
    assert out["error_kinds"] == {"x": 2}


def _rpc_result(req, p99, cpu):
    return {"scenario": "rpc", "url": "ws://x", "server": {"pid": 1, "cpu_source": "stat"},
            "metrics": {"req_per_s": req, "p50_ms": 1.0, "p99_ms": p99, "errors": 0,
                        "server_cpu_s": 1.0, "cpu_us_per_op": cpu, "rss_before_mb": 30.0,
                        "rss_after_mb": 31.0},
            "error_kinds": {}}


def test_render_single_and_na():
    text = report.render_single(_rpc_result(12345.6, 2.5, None))
    assert "req/s" in text and "12,346" in text and "n/a" in text
    assert "server pid 1" in text
    r = _rpc_result(1.0, 1.0, 1.0)
    r["server"]["pid"] = None
    r["error_kinds"] = {"connect FORBIDDEN": 3}
    text = report.render_single(r)
    assert "pid not found" in text and "connect FORBIDDEN: 3" in text


def test_render_comparison_has_ratios():
    results = {"krabfast": _rpc_result(40_000.0, 2.0, 10.0),
               "reference": _rpc_result(10_000.0, 8.0, 80.0),
               "echo": _rpc_result(80_000.0, 1.0, 5.0)}
    text = report.render_comparison("rpc", results)
    header = text.splitlines()[1]
    assert header.split()[:4] == ["metric", "reference", "krabfast", "echo"]
    line = next(l for l in text.splitlines() if l.startswith("req/s"))
    assert "4.00x" in line and "0.50x" in line
    line = next(l for l in text.splitlines() if l.startswith("CPU us/req"))
    assert "0.12x" in line and "2.00x" in line
    ratios = report.comparison_ratios(results)
    assert ratios["krabfast/reference"]["req_per_s"] == 4.0
    assert ratios["krabfast/echo"]["p99_ms"] == 2.0


def test_format_value():
    assert report.format_value(None) == "n/a"
    assert report.format_value(12345) == "12,345"
    assert report.format_value(0.0) == "0"
    assert report.format_value(0.12345) == "0.123"
    assert report.format_value(123.45) == "123.5"
    assert report.format_ratio(None) == "n/a" and report.format_ratio(2) == "2.00x"


def test_render_series():
    result = {"series": [{"t": i, "rss_mb": 30.0 + i, "cpu_pct": 1.0, "rpc": 10, "rpc_p50_ms": 0.5,
                          "rpc_p99_ms": 1.0, "rpc_errors": 0, "churn": 2} for i in range(1, 61)]}
    lines = report.render_series(result, limit=30).splitlines()
    assert len(lines) == 2 + 30 and lines[2].split()[0] == "2"


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from krabfast.bench.plot import plot

    results = {"krabfast": _rpc_result(4.0, 2.0, 1.0), "reference": _rpc_result(1.0, 3.0, 2.0)}
    plot(results, str(tmp_path / "rpc.png"))
    soak = {"scenario": "soak", "metrics": {}, "series": [
        {"t": 1, "rss_mb": 30.0, "cpu_pct": 2.0, "rpc_p50_ms": 0.3, "rpc_p99_ms": 1.0},
        {"t": 2, "rss_mb": 31.0, "cpu_pct": None, "rpc_p50_ms": 0.2, "rpc_p99_ms": 2.0}]}
    plot({"k": soak}, str(tmp_path / "soak.png"))
    for name in ("rpc.png", "soak.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_sums_workers_and_resets_per_command():
    import io

    from krabfast.bench.progress import Progress

    out = io.StringIO()
    p = Progress(True, stream=out, after_s=0, every_s=0)
    p.start("krabfast")
    p.from_worker(0, {"type": "progress", "cmd": "open", "done": 10, "of": 100})
    p.from_worker(1, {"type": "progress", "cmd": "open", "done": 5, "of": 100})
    p.from_worker(0, {"type": "progress", "cmd": "hold", "open": 7})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("10/100") and lines[1].endswith("15/200")
    assert lines[2].endswith("open 7")
    quiet = Progress(True, stream=io.StringIO(), after_s=3600)
    quiet.start("x")
    quiet.update("not yet")
    assert quiet.stream.getvalue() == ""


# -- repetitions, provenance ---------------------------------------------------------------------

def _run(req, cpu, errors=0, **extra):
    return {"scenario": "rpc", "params": {}, "server": {"pid": 1, "cpu_source": "schedstat"},
            "metrics": {"req_per_s": req, "cpu_us_per_op": cpu, "errors": errors, "p99_ms": None},
            "error_kinds": {"x": errors} if errors else {}, **extra}


def test_aggregate_median_min_max():
    from krabfast.bench.repeat import aggregate, median_min_max

    assert median_min_max([3, 1, 2]) == (2, 1, 3)
    assert median_min_max([1, 2]) == (1.5, 1, 2)
    assert median_min_max([2, 2]) == (2, 2, 2) and isinstance(median_min_max([2, 2])[0], int)
    assert median_min_max([None, None]) is None
    runs = [_run(100.0, 12.0), _run(300.0, 10.0, errors=2), _run(200.0, 11.0)]
    runs[1]["server"]["cpu_source"] = "stat"
    out = aggregate(runs)
    m = out["metrics"]
    assert (m["req_per_s"], m["cpu_us_per_op"], m["errors"], m["p99_ms"]) == (200.0, 11.0, 0, None)
    assert out["spread"]["req_per_s"] == [100.0, 300.0] and out["spread"]["errors"] == [0, 2]
    assert "p99_ms" not in out["spread"]
    assert out["repeat"] == 3 and [r["metrics"]["req_per_s"] for r in out["runs"]] == \
        [100.0, 300.0, 200.0]
    assert out["error_kinds"] == {"x": 2} and out["server"]["cpu_source"] == "stat"
    single = aggregate([_run(5.0, 1.0)])
    assert single["metrics"]["req_per_s"] == 5.0 and single["repeat"] == 1
    ok = aggregate([_run(1.0, 1.0, ok=True), _run(1.0, 1.0, ok=False)])
    assert ok["ok"] is False


def test_paired_ratio_spread_pairs_runs_of_one_repetition():
    from krabfast.bench.repeat import aggregate, paired_ratio_spread

    compiled = aggregate([_run(100.0, 10.0), _run(120.0, 8.0)])
    pure = aggregate([_run(80.0, 20.0), _run(100.0, 10.0)])
    spread = paired_ratio_spread(compiled, pure)
    assert spread["cpu_us_per_op"] == [0.5, 0.8]  # 10/20 and 8/10, not 8/20 or 10/10
    assert spread["req_per_s"] == [1.2, 1.25]
    assert "p99_ms" not in spread


def test_render_with_spread_and_core_table():
    from krabfast.bench.repeat import aggregate

    compiled = aggregate([_run(100.0, 10.0), _run(120.0, 8.0), _run(110.0, 9.0)])
    pure = aggregate([_run(80.0, 20.0), _run(100.0, 10.0), _run(90.0, 15.0)])
    echo = aggregate([_run(130.0, 7.0), _run(140.0, 6.0), _run(150.0, 5.0)])
    for r, core in ((compiled, "compiled"), (pure, "pure"), (echo, "compiled")):
        r["env"] = {"core": core}
    results = {"krabfast": compiled, "krabfast-pure": pure, "echo": echo}
    assert report.format_cell(compiled, "req_per_s") == "110.0 (100.0-120.0)"
    text = report.render_comparison("rpc", results)
    lines = text.splitlines()
    assert "median (min-max) of 3 runs" in lines[0]
    assert lines[1].split()[:4] == ["metric", "krabfast", "krabfast-pure", "echo"]
    assert "krabfast/pure" in lines[1] and "krabfast/echo" in lines[1]
    assert "cores: krabfast compiled, krabfast-pure pure, echo compiled" in text
    head = next(i for i, l in enumerate(lines) if "compiled vs pure-Python core" in l)
    rows = lines[head + 3:]
    cpu = next(l for l in rows if l.startswith("CPU us/req"))
    # median 9 vs 15: 0.60x; per repetition 10/20, 8/10, 9/15
    assert "9 (8-10.00)" in cpu and "15.00 (10.00-20.00)" in cpu
    assert "0.60x" in cpu and "0.50x-0.80x" in cpu
    assert any(l.startswith("req/s") for l in rows)
    ratios = report.comparison_ratios(results)
    assert ratios["krabfast/krabfast-pure"]["cpu_us_per_op"] == 0.6
    single = report.render_single(dict(compiled, url="ws://x"))
    assert "median (min-max) of 3 runs" in single and "core compiled" in single
    assert "110.0 (100.0-120.0)" in single


def test_provenance_records_commit_machine_and_command():
    from krabfast.bench.repeat import command_line, provenance

    p = provenance(["/x/bin/krabfast", "bench", "rpc", "--params", '{"a": 1}'])
    assert p["command"] == "krabfast bench rpc --params '{\"a\": 1}'"
    assert p["cpu_count"] == os.cpu_count() and p["argv"][1:3] == ["bench", "rpc"]
    assert "krabfast_commit" in p and "krabfast_dirty" in p
    if p["krabfast_commit"] is not None:  # a git checkout
        assert len(p["krabfast_commit"]) == 40 and isinstance(p["krabfast_dirty"], bool)
    assert command_line(["/r/krabfast/__main__.py", "bench"]) == "krabfast bench"
    assert command_line(["python", "x.py"]) == "python x.py"


# -- the echo server ------------------------------------------------------------------------------

class _FakeSink:
    def __init__(self):
        self.sent, self.closed = [], None

    def send(self, data):
        self.sent.append(bytes(data))

    def buffered(self):
        return 0

    def close(self, code, reason):
        self.closed = (code, reason)


def test_echo_answers_with_krabfasts_sizes():
    from krabfast.bench import echo
    from krabfast.gateway.server import GatewayServer

    cfg = echo.config_for("127.0.0.1", 0, 30_000)
    from krabfast.gateway.loopmon import LoopMonitor

    krab_hub = GatewayServer(cfg).hub  # what krabfast would answer with the same settings
    krab_hub.refresh_health(LoopMonitor(None).snapshot())  # as the started gateway
    hub = echo.EchoHub(cfg, echo.Answers(GatewayServer(cfg).hub))
    a, b = _FakeSink(), _FakeSink()
    conns = [echo.EchoConn(hub, a), echo.EchoConn(hub, b)]
    for conn in conns:
        conn.start()
    challenge = orjson.loads(a.sent[0])
    assert challenge["event"] == "connect.challenge" and len(challenge["payload"]["nonce"]) == 32
    for conn in conns:
        conn.receive_text(connect_frame("any"), False)
        assert conn.state == echo.OPEN
    res = orjson.loads(a.sent[1])
    assert res["type"] == "res" and res["id"] == "c1" and res["ok"] is True
    hello = res["payload"]
    assert hello["type"] == "hello-ok" and hello["policy"]["tickIntervalMs"] == 30_000
    expected = krab_hub.hello.encode("0123456789abcdef-1", 4, "operator", echo.SCOPES, True)
    assert abs(len(a.sent[1]) - len(expected) - 45) < 40, (len(a.sent[1]), len(expected))
    assert orjson.loads(b.sent[1])["payload"]["server"]["connId"] != hello["server"]["connId"]

    prefix, suffix = request_parts("system-presence", {})
    hub.receive(conns[0], prefix + b"7" + suffix)
    rows = orjson.loads(a.sent[-1])["payload"]
    assert orjson.loads(a.sent[-1])["id"] == "7"
    assert len(orjson.dumps(rows)) == len(bytes(krab_hub.presence_json()))
    prefix, suffix = request_parts("system-event", {"text": "bench-x"})
    hub.receive(conns[0], prefix + b"8" + suffix)
    for sink in (a, b):  # the presence event to every socket, each with its own seq
        event = orjson.loads(sink.sent[-2] if sink is a else sink.sent[-1])
        assert event["event"] == "presence" and event["seq"] == 1
        assert [r.get("text") for r in event["payload"]["presence"]][1:] == ["bench-x"]
        assert event["stateVersion"]["presence"] == 2
    assert orjson.loads(a.sent[-1]) == {"type": "res", "id": "8", "ok": True,
                                        "payload": {"ok": True}}
    prefix, suffix = request_parts("system.echo", {"text": "hi"})
    hub.receive(conns[1], prefix + b"9" + suffix)
    assert orjson.loads(b.sent[-1])["payload"] == {"ok": True, "text": "hi"}
    hub.tick()
    assert orjson.loads(a.sent[-1])["event"] == "tick" and orjson.loads(a.sent[-1])["seq"] == 2
    conns[1].transport_closed()
    assert hub.tick() == 1  # closed sockets leave the fan-out


def test_echo_refuses_a_first_request_other_than_connect():
    from krabfast.bench import echo
    from krabfast.gateway.server import GatewayServer

    cfg = echo.config_for("127.0.0.1", 0, 30_000)
    hub = echo.EchoHub(cfg, echo.Answers(GatewayServer(cfg).hub))
    sink = _FakeSink()
    conn = echo.EchoConn(hub, sink)
    prefix, suffix = request_parts("health", {})
    conn.receive_text(prefix + b"1" + suffix, False)
    assert sink.closed[0] == 1008 and conn.state == echo.CLOSED
    sink2 = _FakeSink()
    echo.EchoConn(hub, sink2).receive_text(b"{nope", False)
    assert sink2.closed[0] == 1008


def test_the_harness_knows_every_compiled_module():
    import krabfast._core as core
    from krabfast.bench.targets import CORE_MODULES

    assert set(CORE_MODULES) == set(core.MODULES)


# -- chat ---------------------------------------------------------------------------------------

def test_chat_defaults_and_echo_not_applicable(capsys):
    from krabfast.bench.cli import _target_names
    from krabfast.cli import main

    a = parse("chat")
    assert (a.watchers, a.runners, a.concurrency, a.duration, a.runs, a.chunks,
            a.chunk_delay, a.repeat) == (50, 4, 8, 8.0, None, 20, 0.005, 3)
    assert _target_names(a) == ["reference", "krabfast"]  # no echo: it has no chat
    assert main(["bench", "chat", "--vs-reference", "--targets", "krabfast,echo"]) == 2
    assert "not applicable" in capsys.readouterr().err


def test_chat_result_metrics():
    import argparse
    import asyncio

    from krabfast.bench.chat import RunState, chat_result

    async def runs():
        out = []
        for i, (state, first, deltas) in enumerate([("final", 0.020, 2), ("final", 0.030, 3),
                                                     ("error", None, 0)]):
            r = RunState(f"kfb-{i:016x}")
            r.t_send, r.state, r.deltas = 100.0, state, deltas
            r.t_first = None if first is None else 100.0 + first
            r.t_end = 100.2
            out.append(r)
        return out

    done = asyncio.run(runs())
    timings = {"kfb-0000000000000000": (50.0, 50.005), "kfb-0000000000000001": (60.0, 60.005)}
    a = argparse.Namespace(runners=1, concurrency=2, duration=1.0, runs=None, chunks=20,
                           chunk_delay=0.005)
    counters = [{"chat_deltas": 10, "chat_finals": 3}, {"chat_deltas": 0, "chat_finals": 1}]
    res = chat_result(a, 2, 2, done, 5, counters, timings, [0.006, 0.004], 2.0, 0.03, {})
    m = res["metrics"]
    assert (m["runs"], m["finals"], m["errors"], m["runs_per_s"]) == (3, 2, 1, 1.5)
    assert res["error_kinds"] == {"error": 1}
    assert m["deltas_delivered"] == 15 and m["watcher_deltas"] == 10
    assert m["watcher_finals_missed"] == 0  # 2 finals x 2 watchers = 4 received
    assert m["cpu_us_per_delta"] == 2000.0 and m["cpu_us_per_run"] == 10000.0
    assert m["model_ttfc_ms"] == pytest.approx(5.0, abs=0.01)
    assert m["added_first_delta_p50_ms"] == pytest.approx(20.0, abs=0.01)
    assert m["first_delta_p50_ms"] == pytest.approx(25.0, abs=0.01)
    assert m["model_direct_ttfc_ms"] == pytest.approx(5.0, abs=0.01)
    assert report.rows_for("chat", m)  # has table rows


def test_chat_watchers_count_chat_deltas_and_finals():
    import asyncio

    from krabfast.bench.loadclient import OPEN, BenchConn, Counters

    async def go():
        counters = Counters()
        conn = BenchConn(b"", counters=counters)
        conn.state = OPEN
        for state in ("delta", "delta", "final", "status"):
            conn._on_open_frame(orjson.dumps({"type": "event", "event": "chat", "payload": {
                "runId": "r", "state": state}}))
        conn._on_open_frame(orjson.dumps({"event": "chat", "type": "event",
                                          "payload": {"state": "delta"}}))  # other key order
        conn._on_open_frame(orjson.dumps({"type": "event", "event": "agent",
                                          "payload": {"state": "delta"}}))
        return counters

    c = asyncio.run(go())
    assert (c.chat_deltas, c.chat_finals, c.events) == (3, 1, 6)


def test_fake_model_streams_and_reports_timings():
    import asyncio

    from krabfast.bench.fakemodel import MODEL_ID, PROVIDER_ID, FakeModel

    fake = FakeModel.start(chunks=3, delay=0.001)
    try:
        cfg = fake.config()
        provider = cfg["models"]["providers"][PROVIDER_ID]
        assert provider["baseUrl"] == fake.base_url and provider["apiKey"]
        assert cfg["agents"]["defaults"]["model"]["primary"] == f"{PROVIDER_ID}/{MODEL_ID}"

        async def go():
            ttfc = await fake.direct_ttfc(2)
            reader, writer = await asyncio.open_connection(fake.host, fake.port)
            body = orjson.dumps({"model": MODEL_ID, "stream": True, "messages": [
                {"role": "user", "content": "kfb-0123456789abcdef hi"}]})
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (len(body), body))
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                data += await reader.read(65536)
            writer.close()
            return ttfc, data, await fake.timings(), await fake.timings()

        ttfc, data, timings, again = asyncio.run(go())
    finally:
        fake.stop()
    assert len(ttfc) == 2 and all(t > 0 for t in ttfc)
    assert data.count(b'"content":"tok') == 3 and b"data: [DONE]" in data
    t_req, t_first = timings["kfb-0123456789abcdef"]
    assert t_first >= t_req and again == {}


def test_fake_model_times_a_request_from_the_arrival_of_its_first_bytes():
    """Its own parsing is the model server's time: a request whose body comes 0.2 s after
    its head is timed from the head (and the next request on the connection from its own
    first bytes)."""
    import asyncio
    import time

    from krabfast.bench.fakemodel import MODEL_ID, FakeModel

    fake = FakeModel.start(chunks=1, delay=0.0)

    async def request(reader, writer, marker: str, pause: float):
        body = orjson.dumps({"model": MODEL_ID, "stream": True, "messages": [
            {"role": "user", "content": f"{marker} hi"}]})
        t0 = time.monotonic()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                     b"\r\n\r\n" % len(body))
        await writer.drain()
        await asyncio.sleep(pause)
        t1 = time.monotonic()
        writer.write(body)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += await reader.read(65536)
        return t0, t1

    async def go():
        reader, writer = await asyncio.open_connection(fake.host, fake.port)
        first = await request(reader, writer, "kfb-00000000000000a1", 0.2)
        await asyncio.sleep(0.2)
        second = await request(reader, writer, "kfb-00000000000000a2", 0.0)
        writer.close()
        return first, second, await fake.timings()

    try:
        (t0, t1), (u0, _u1), timings = asyncio.run(go())
    finally:
        fake.stop()
    assert t0 <= timings["kfb-00000000000000a1"][0] < t1
    assert timings["kfb-00000000000000a2"][0] >= u0  # not the first request's stamp
