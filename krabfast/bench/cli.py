"""`krabfast bench SCENARIO`: argument parsing, running against one URL or side by side
(--vs-reference), output (table or --json), --plot, and --fail-under/--fail-over."""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

SCENARIOS = ("handshake", "rpc", "fanout", "idle", "soak", "chat")
TOKEN_ENV = ("OPENCLAW_GATEWAY_TOKEN", "KRABKRAB_GATEWAY_TOKEN")
URL_ENV = "KRABFAST_BENCH_URL"
DEFAULT_URL = "ws://127.0.0.1:18789"  # as every other client command
VS_TOKEN = "krabfast-bench-token"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text}")
    return value


def _json_params(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--params is not valid JSON: {exc}") from None


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("target and output")
    g.add_argument("--url", default=None,
                   help=f"gateway URL, ws://HOST:PORT (default ${URL_ENV}, else {DEFAULT_URL})")
    g.add_argument("--token", default=None, help=f"shared token (or ${TOKEN_ENV[0]} / ${TOKEN_ENV[1]})")
    g.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    g.add_argument("--fail-under", action="append", default=[], metavar="METRIC=VALUE",
                   help="exit 1 when a higher-is-better metric is below VALUE (repeatable)")
    g.add_argument("--fail-over", action="append", default=[], metavar="METRIC=VALUE",
                   help="exit 1 when a lower-is-better metric (p99_ms, cpu_us_per_op...) is "
                        "above VALUE (repeatable)")
    g.add_argument("--plot", default=None, metavar="PATH.png", help="write a chart (matplotlib)")
    g.add_argument("--server-pid", type=int, default=None,
                   help="server process for CPU/RSS (default: whoever listens on the URL's port)")
    g.add_argument("--processes", type=_positive_int, default=min(2, os.cpu_count() or 1),
                   help="load client processes (default %(default)s)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    v = p.add_argument_group("side by side")
    v.add_argument("--vs-reference", action="store_true",
                   help="start the reference gateway, a krabfast gateway and the bare echo "
                        "server, run the scenario against each, print a table with ratios")
    v.add_argument("--targets", default=None,
                   help="with --vs-reference: which of reference,krabfast,echo (default all; "
                        "with --core alone: krabfast)")
    v.add_argument("--target-tick-interval-ms", type=_positive_int, default=None,
                   help="with --vs-reference: tick interval for the krabfast and echo servers")
    v.add_argument("--core", choices=("compiled", "pure", "both"), default=None,
                   help="core of the krabfast (and echo) servers the harness starts: compiled "
                        "(fails when it is not built), pure (KRABFAST_NO_EXTENSIONS=1), or "
                        "both side by side, interleaved (echo stays compiled). Default: "
                        "whatever is built. Without --vs-reference it starts krabfast only; "
                        "it cannot be combined with --url")
    return p


def _repeatable() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--repeat", type=_positive_int, default=3, metavar="N",
                   help="run the scenario N times (each target: a fresh server each time, "
                        "targets interleaved); figures are the median, with min-max "
                        "(default %(default)s)")
    return p


def _method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="system-presence", help="request method (default %(default)s)")
    p.add_argument("--params", type=_json_params, default={}, help="request params as JSON (default {})")


def add_parser(sub) -> None:
    """Register `bench` on the `krabfast` subparsers."""
    common = _common()
    rep = _repeatable()
    bench = sub.add_parser("bench", help="load benchmarks against any OpenClaw-compatible gateway",
                           description="Load benchmarks: handshake, rpc, fanout, idle, soak, chat.")
    scen = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    p = scen.add_parser("handshake", parents=[common, rep], help="connect -> hello-ok -> close, N times")
    p.add_argument("--connects", "-n", type=_positive_int, default=2000)
    p.add_argument("--concurrency", "-c", type=_positive_int, default=10)

    p = scen.add_parser("rpc", parents=[common, rep], help="C sockets x W requests in flight for S seconds")
    p.add_argument("--conns", "-c", type=_positive_int, default=20)
    p.add_argument("--inflight", "-w", type=_positive_int, default=4)
    p.add_argument("--duration", "-d", type=_positive_float, default=10.0, help="seconds measured")
    p.add_argument("--warmup", type=_nonneg_float, default=1.0, help="seconds before measuring")
    _method_args(p)

    p = scen.add_parser("fanout", parents=[common, rep], help="system-event broadcast to N idle receivers")
    p.add_argument("--receivers", "-n", type=_positive_int, default=4000)
    p.add_argument("--broadcasts", "-b", type=_positive_int, default=5,
                   help="broadcasts per run (default %(default)s)")
    p.add_argument("--open-concurrency", type=_positive_int, default=30)
    p.add_argument("--pause", type=_nonneg_float, default=0.5, help="seconds between broadcasts")
    p.add_argument("--timeout", type=_positive_float, default=30.0, help="per broadcast, seconds")

    p = scen.add_parser("idle", parents=[common, rep], help="memory of N authenticated idle sockets")
    p.add_argument("--sockets", "-n", type=_positive_int, default=2000)
    p.add_argument("--hold", type=_nonneg_float, default=0.0, help="keep them open S seconds")
    p.add_argument("--expect-ticks", action="store_true",
                   help="with --hold: every socket must get every tick (else exit 1)")
    p.add_argument("--open-concurrency", type=_positive_int, default=30)
    p.add_argument("--settle", type=_nonneg_float, default=1.0, help="seconds before each RSS read")

    p = scen.add_parser("soak", parents=[common], help="mixed load over time, sampled each second")
    p.add_argument("--duration", "-d", type=_positive_float, default=60.0)
    p.add_argument("--receivers", "-n", type=int, default=200)
    p.add_argument("--rpc-rate", type=_nonneg_float, default=50.0, help="requests per second")
    p.add_argument("--rpc-conns", type=_positive_int, default=4)
    p.add_argument("--churn", type=_nonneg_float, default=5.0, help="connect+close per second")
    p.add_argument("--broadcast-every", type=_nonneg_float, default=2.0, help="seconds (0: none)")
    p.add_argument("--open-concurrency", type=_positive_int, default=30)
    _method_args(p)

    p = scen.add_parser("chat", parents=[common, rep],
                        help="streamed chat runs (a fake model) fanned out to M watchers")
    p.add_argument("--watchers", "-m", type=_positive_int, default=50,
                   help="operator.read sockets counting chat events (default %(default)s)")
    p.add_argument("--runners", "-r", type=_positive_int, default=4,
                   help="sockets sending chat.send (default %(default)s)")
    p.add_argument("--concurrency", "-c", type=_positive_int, default=8,
                   help="runs in flight at once, spread over the runners (default %(default)s)")
    p.add_argument("--duration", "-d", type=_positive_float, default=8.0,
                   help="seconds of starting new runs (default %(default)s)")
    p.add_argument("--runs", "-n", type=_positive_int, default=None,
                   help="this many runs in all instead of --duration")
    p.add_argument("--chunks", type=_positive_int, default=20,
                   help="chunks the fake model streams per answer (default %(default)s)")
    p.add_argument("--chunk-delay", type=_nonneg_float, default=0.005,
                   help="seconds before each chunk, the first one too (default %(default)s)")
    p.add_argument("--timeout", type=_positive_float, default=60.0,
                   help="per run, seconds (default %(default)s)")
    p.add_argument("--warmup-timeout", type=_positive_float, default=120.0,
                   help="per warm-up run, seconds (default %(default)s)")
    p.add_argument("--open-concurrency", type=_positive_int, default=30)

    for name, parser in scen.choices.items():
        parser.set_defaults(func=cmd_bench)


def _scenario_runner(name: str):
    from krabfast.bench import chat, scenarios, soak

    return {"handshake": scenarios.run_handshake, "rpc": scenarios.run_rpc,
            "fanout": scenarios.run_fanout, "idle": scenarios.run_idle,
            "soak": soak.run_soak, "chat": chat.run_chat}[name]


def is_local_host(host: str | None) -> bool:
    import socket

    if not host:
        return False
    if host in ("localhost", "::1", "0.0.0.0", "::") or host.startswith("127."):
        return True
    return host in (socket.gethostname(), socket.getfqdn())


def server_pid_for(url: str, explicit: int | None) -> int | None:
    from krabfast.bench.procstat import find_listening_pid

    if explicit is not None:
        return explicit
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return find_listening_pid(port) if is_local_host(parts.hostname) else None


async def run_one(args, url: str, token: str | None, pid: int | None, progress,
                  label: str = "", fake_model=None) -> dict:
    from krabfast.bench.procstat import ServerProbe
    from krabfast.bench.scenarios import RunContext

    ctx = RunContext(url, token, ServerProbe(pid), args.processes, progress, fake_model)
    progress.start(label or args.scenario)
    result = await _scenario_runner(args.scenario)(ctx, args)
    result["url"] = url
    return result


def target_plan(names: list[str], core: str | None) -> list[tuple[str, str, str | None]]:
    """(label, kind, core) per target server: with --core both, krabfast twice (compiled as
    "krabfast", pure as "krabfast-pure") and the echo server compiled; otherwise krabfast and
    echo on the core asked for (None: whatever is built)."""
    from krabfast.bench.report import PURE

    plan = []
    for name in names:
        if name == "reference":
            plan.append((name, name, None))
        elif core == "both":
            plan.append((name, name, "compiled"))
            if name == "krabfast":
                plan.append((PURE, "krabfast", "pure"))
        else:
            plan.append((name, name, core))
    return plan


def _target_names(args) -> list[str]:
    from krabfast.bench.targets import TARGET_NAMES

    default = "reference,krabfast" if args.scenario == "chat" else "reference,krabfast,echo"
    names = [n.strip() for n in (args.targets or default).split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown or not names:
        raise ValueError(f"--targets: unknown {unknown or 'empty'} (use {','.join(TARGET_NAMES)})")
    if args.scenario == "chat" and "echo" in names:
        raise ValueError("--targets: the echo server has no chat (no chat.send, no model): "
                         "not applicable to the chat scenario (use reference,krabfast)")
    return names


def start_fake_model(args, progress):
    """The chat scenario's model server (None for other scenarios)."""
    if args.scenario != "chat":
        return None
    from krabfast.bench.fakemodel import FakeModel

    fake = FakeModel.start(args.chunks, args.chunk_delay)
    progress.note(f"fake model server at {fake.base_url} ({args.chunks} chunks, "
                  f"{args.chunk_delay * 1000:g} ms apart)")
    return fake


async def run_vs_reference(args, progress) -> dict[str, dict]:
    """Every target, `--repeat` times: each repetition starts a fresh server per target and
    runs them one after the other, the order rotated by one each repetition (so no target
    always runs first); results are aggregated per target (median, min-max)."""
    from krabfast.bench.repeat import aggregate

    plan = target_plan(_target_names(args), args.core)
    reference = None
    if any(kind == "reference" for _, kind, _ in plan):
        from krabfast.reference import ensure_installed

        progress.note("locating the reference packages (installs them on first use)")
        reference = ensure_installed(quiet=args.quiet)
    repeat = getattr(args, "repeat", 1)
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in plan}
    envs: dict[str, dict] = {}
    fake = start_fake_model(args, progress)
    try:
        for r in range(repeat):
            shift = r % len(plan)
            for label, kind, core in plan[shift:] + plan[:shift]:
                result, info = await _run_target(args, progress, reference, fake, r, repeat,
                                                 label, kind, core)
                seen = envs.setdefault(label, info)
                if seen.get("core") != info.get("core"):
                    raise RuntimeError(f"{label}: core changed between runs ({seen.get('core')} "
                                       f"-> {info.get('core')})")
                result["target"] = label
                runs[label].append(result)
    finally:
        if fake is not None:
            fake.stop()
    return {label: {**aggregate(runs[label]), "target": label, "env": dict(envs[label])}
            for label, _, _ in plan}


async def _run_target(args, progress, reference, fake, r, repeat, label, kind, core):
    """One repetition against a fresh server of one target: (result, what it runs)."""
    from krabfast.bench.targets import start_target

    tag = f"{label} {r + 1}/{repeat}" if repeat > 1 else label
    progress.note(f"starting the {tag} server" + (f" ({core} core)" if core else ""))
    target = await start_target(label, VS_TOKEN, reference=reference, core=core, kind=kind,
                                tick_interval_ms=args.target_tick_interval_ms,
                                config=fake.config() if fake is not None else None)
    try:
        progress.note(f"{args.scenario} against {tag} ({target.url}, pid {target.pid})")
        result = await run_one(args, target.url, VS_TOKEN, target.pid, progress, tag, fake)
    finally:
        target.stop()
    return result, target.info


async def run_repeated(args, url: str, token: str | None, pid: int | None, progress) -> dict:
    from krabfast.bench.repeat import aggregate

    repeat = getattr(args, "repeat", 1)
    runs = []
    for r in range(repeat):
        label = f"{args.scenario} {r + 1}/{repeat}" if repeat > 1 else ""
        runs.append(await run_one(args, url, token, pid, progress, label))
    return aggregate(runs)


def _threshold_metrics(results: dict[str, dict], primary: dict) -> dict:
    """The metrics thresholds apply to: the primary result's, plus in side-by-side mode
    `vs_reference.<m>` / `vs_echo.<m>` ratios."""
    from krabfast.bench.report import comparison_ratios

    metrics = dict(primary["metrics"])
    for pair, values in comparison_ratios(results).items():
        other = pair.split("/", 1)[1]
        for key, value in values.items():
            metrics[f"vs_{other}.{key}"] = value
    return metrics


def _unreachable(host: str, port: int) -> str | None:
    """Why nothing can connect to host:port (checked once before any load starts), or None."""
    import socket

    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return "connection refused (is the gateway running? `krabfast gateway` starts one)"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def cmd_bench(args) -> int:
    from krabfast.bench import report

    try:
        under = [report.parse_threshold(t) for t in args.fail_under]
        over = [report.parse_threshold(t) for t in args.fail_over]
    except report.ThresholdError as exc:
        print(f"krabfast bench: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        from krabfast.bench.plot import PlotUnavailable, _pyplot

        try:
            _pyplot()
        except PlotUnavailable as exc:
            print(f"krabfast bench: {exc}", file=sys.stderr)
            return 2
    if args.scenario == "idle" and args.expect_ticks and not args.hold:
        print("krabfast bench: --expect-ticks needs --hold SECONDS", file=sys.stderr)
        return 2
    if args.core is not None and not args.vs_reference:
        if args.url:
            print("krabfast bench: --core applies to the gateways krabfast bench starts "
                  "(--vs-reference, or no --url); it cannot set the core of --url", file=sys.stderr)
            return 2
        args.vs_reference = True  # start krabfast (compiled and/or pure) here
        args.targets = args.targets or "krabfast"
    if args.vs_reference:
        problem = _core_problem(args)
        if problem:
            print(f"krabfast bench: {problem}", file=sys.stderr)
            return 2
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    if not args.vs_reference:
        from krabfast.client import GatewayConnectError, check_url

        try:
            host, port, _ = check_url(url)
        except GatewayConnectError as exc:
            print(f"krabfast bench: {exc}", file=sys.stderr)
            return 2
        problem = _unreachable(host, port)
        if problem:
            print(f"krabfast bench: cannot connect to {url}: {problem}", file=sys.stderr)
            return 1
    token = args.token or next((os.environ[k] for k in TOKEN_ENV if os.environ.get(k)), None)
    return _run_and_report(args, url, token, under, over)


def _core_problem(args) -> str | None:
    """Why the servers cannot run on the core asked for (checked before anything starts),
    or None. The started targets report their core again (and are checked) themselves."""
    try:
        names = _target_names(args)
    except ValueError as exc:
        return str(exc)
    if args.core not in ("compiled", "both") or not ({"krabfast", "echo"} & set(names)):
        return None
    from krabfast.bench.targets import TargetError, probe_core

    try:
        info = probe_core("compiled")
    except TargetError as exc:
        return str(exc)
    if info.get("core") != "compiled":
        return (f"--core {args.core}: krabfast's compiled core is not built (or does not "
                f"import) for {info.get('executable')}; build it with `python setup.py "
                "build_ext --inplace`, or use --core pure")
    return None


def _url_env(pid: int | None) -> dict:
    """What can be told of a server not started by the harness: its core from the
    compiled modules mapped into it (only for a local, readable pid)."""
    from krabfast.bench.procstat import mapped_core_modules
    from krabfast.bench.targets import CORE_MODULES

    mapped = mapped_core_modules(pid)
    if mapped is None:
        core = None
    else:
        core = "compiled" if set(CORE_MODULES) <= mapped else "not compiled (or not krabfast)"
    return {"core": core, "core_source": "/proc/PID/maps", "core_modules_mapped":
            None if mapped is None else sorted(mapped),
            "python": None, "picows": None, "uvloop": None, "msgspec": None,
            "note": "not started by krabfast bench: versions unknown"}


def _run_and_report(args, url, token, under, over) -> int:
    import uvloop

    from krabfast.bench import report
    from krabfast.bench.progress import Progress
    from krabfast.bench.repeat import paired_ratio_spread, provenance

    progress = Progress(enabled=not args.quiet)
    try:
        run_info = provenance()
        shared = {k: run_info[k] for k in ("krabfast_commit", "krabfast_dirty", "cpu_count",
                                           "command")}
        if args.vs_reference:
            results = uvloop.run(run_vs_reference(args, progress))
            for result in results.values():
                result["env"].update(shared)
            primary = results.get("krabfast") or next(iter(results.values()))
            output = {"scenario": args.scenario, "repeat": getattr(args, "repeat", 1),
                      "run": run_info, "targets": results,
                      "ratios": report.comparison_ratios(results),
                      "ratio_spread": {f"{a}/{b}": paired_ratio_spread(results[a], results[b])
                                       for a, b in report.RATIOS
                                       if a in results and b in results}}
        else:
            pid = server_pid_for(url, args.server_pid)
            primary = uvloop.run(run_repeated(args, url, token, pid, progress))
            primary["env"] = {**_url_env(pid), **shared}
            primary["run"] = run_info
            results = {urlsplit(url).netloc or url: primary}
            output = primary
    except KeyboardInterrupt:
        print("krabfast bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed run is reported, not a traceback
        if os.environ.get("KRABFAST_BENCH_DEBUG"):
            raise
        print(f"krabfast bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(output, indent=2))
    elif args.vs_reference:
        print(report.render_comparison(args.scenario, results))
    else:
        print(report.render_single(primary))
        if primary["scenario"] == "soak":
            print(report.render_series(primary, limit=30))
    if args.plot:
        from krabfast.bench.plot import plot

        plot(results, args.plot)
        print(f"krabfast bench: wrote {args.plot}", file=sys.stderr)
    failures = report.check_thresholds(_threshold_metrics(results, primary), under, over)
    if primary.get("ok") is False:
        failures.append("not every socket received every tick (see sockets_ok, min_ticks)")
    for failure in failures:
        print(f"krabfast bench: FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0

