"""Rendering results (one target, or side by side with ratios) and --fail-under/--fail-over."""

from __future__ import annotations

import math

#: Table rows per scenario, in order: (metric key, label).
ROWS: dict[str, list[tuple[str, str]]] = {
    "handshake": [("connects_per_s", "connects/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                  ("errors", "errors"), ("server_cpu_s", "server CPU s"),
                  ("cpu_us_per_op", "CPU us/connect"), ("rss_before_mb", "RSS before MB"),
                  ("rss_after_mb", "RSS after MB")],
    "rpc": [("req_per_s", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
            ("errors", "errors"), ("server_cpu_s", "server CPU s"),
            ("cpu_us_per_op", "CPU us/req"), ("rss_before_mb", "RSS before MB"),
            ("rss_after_mb", "RSS after MB")],
    "fanout": [("receivers", "receivers"), ("broadcast_p50_ms", "broadcast p50 ms"),
               ("broadcast_max_ms", "broadcast max ms"), ("delivery_p50_ms", "delivery p50 ms"),
               ("delivery_p99_ms", "delivery p99 ms"), ("deliveries", "deliveries"),
               ("missed", "missed"), ("errors", "errors"), ("server_cpu_s", "server CPU s"),
               ("cpu_us_per_delivery", "CPU us/delivery"), ("rss_after_mb", "RSS MB")],
    "idle": [("sockets", "sockets"), ("errors", "errors"), ("base_rss_mb", "base RSS MB"),
             ("rss_after_mb", "RSS after MB"), ("rss_per_socket_kib", "KiB/socket"),
             ("hold_s", "hold s"), ("tick_interval_ms", "tick interval ms"),
             ("expected_ticks", "expected ticks"), ("sockets_open", "sockets open"),
             ("sockets_ok", "sockets ok"), ("min_ticks", "min ticks/socket"),
             ("hold_cpu_us_per_socket", "hold CPU us/socket")],
    "chat": [("runs", "runs"), ("runs_per_s", "runs/s"), ("finals", "finals"),
             ("errors", "errors"), ("watcher_finals_missed", "watcher finals missed"),
             ("deltas_per_run", "deltas/run (sender)"), ("deltas_delivered", "deltas delivered"),
             ("server_cpu_s", "server CPU s"), ("cpu_us_per_delta", "CPU us/delta"),
             ("cpu_us_per_run", "CPU us/run"), ("first_delta_p50_ms", "first delta p50 ms"),
             ("first_delta_p99_ms", "first delta p99 ms"), ("model_ttfc_ms", "model TTFC ms"),
             ("added_first_delta_p50_ms", "added first delta p50 ms"),
             ("added_first_delta_p99_ms", "added first delta p99 ms"),
             ("model_direct_ttfc_ms", "model TTFC direct ms"), ("run_p50_ms", "run p50 ms"),
             ("rss_after_mb", "RSS after MB")],
    "soak": [("duration_s", "duration s"), ("rpc_requests", "rpc requests"),
             ("rpc_p50_ms", "rpc p50 ms"), ("rpc_p99_ms", "rpc p99 ms"),
             ("churn_connects", "connects"), ("churn_p99_ms", "connect p99 ms"),
             ("broadcasts", "broadcasts"), ("deliveries", "deliveries"), ("missed", "missed"),
             ("errors", "errors"), ("cpu_pct", "server CPU %"), ("rss_before_mb", "RSS start MB"),
             ("rss_after_mb", "RSS end MB"), ("rss_max_mb", "RSS max MB"),
             ("rss_growth_mb", "RSS growth MB")],
}

#: The order targets appear in with --vs-reference, and the ratios printed.
PURE = "krabfast-pure"  # the pure-Python-core krabfast of `--core both`
TARGET_ORDER = ("reference", "krabfast", PURE, "echo")
RATIOS = (("krabfast", "reference"), ("krabfast", "echo"), ("krabfast", PURE))

#: Rows of the compiled-vs-pure table (`--core both`): server CPU per operation, then wall.
CORE_ROWS: dict[str, list[str]] = {
    "handshake": ["cpu_us_per_op", "connects_per_s", "p50_ms", "p99_ms"],
    "rpc": ["cpu_us_per_op", "req_per_s", "p50_ms", "p99_ms"],
    "fanout": ["cpu_us_per_delivery", "broadcast_p50_ms", "broadcast_max_ms", "delivery_p99_ms"],
    "idle": ["rss_per_socket_kib", "base_rss_mb", "hold_cpu_us_per_socket"],
    "chat": ["cpu_us_per_delta", "cpu_us_per_run", "added_first_delta_p50_ms",
             "added_first_delta_p99_ms", "runs_per_s"],
}


class ThresholdError(ValueError):
    pass


def parse_threshold(text: str) -> tuple[str, float]:
    """`METRIC=VALUE` -> (metric, value)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ThresholdError(f"expected METRIC=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise ThresholdError(f"not a number in {text!r}") from None
    if math.isnan(number):
        raise ThresholdError(f"not a number in {text!r}")
    return name, number


def check_thresholds(metrics: dict, under: list[tuple[str, float]],
                     over: list[tuple[str, float]]) -> list[str]:
    """Failure messages: a higher-is-better metric below its --fail-under value, a
    lower-is-better one above its --fail-over value, or a metric missing / n/a."""
    failures = []
    for kind, checks in (("under", under), ("over", over)):
        for name, limit in checks:
            if name not in metrics:
                known = ", ".join(sorted(k for k, v in metrics.items() if _is_number(v)))
                failures.append(f"--fail-{kind} {name}: no such metric (have: {known})")
                continue
            value = metrics[name]
            if not _is_number(value):
                failures.append(f"--fail-{kind} {name}: value is n/a")
            elif kind == "under" and value < limit:
                failures.append(f"{name} = {format_value(value)} is below {format_value(limit)}")
            elif kind == "over" and value > limit:
                failures.append(f"{name} = {format_value(value)} is above {format_value(limit)}")
    return failures


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def format_value(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 10:
            return f"{v:.2f}"
        return f"{v:.3f}".rstrip("0").rstrip(".") if v else "0"
    return str(v)


def ratio(a, b) -> float | None:
    if not (_is_number(a) and _is_number(b)) or b == 0:
        return None
    return a / b


def format_ratio(r: float | None) -> str:
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r < 100 else f"{r:,.0f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def rows_for(scenario: str, metrics: dict) -> list[tuple[str, str]]:
    rows = [(k, label) for k, label in ROWS.get(scenario, []) if k in metrics]
    known = {k for k, _ in rows}
    rows += [(k, k) for k in metrics if k not in known and _is_number(metrics[k])
             and scenario not in ROWS]
    return rows


def format_cell(result: dict, key: str) -> str:
    """A metric of a result: the value, or `median (min-max)` over several runs."""
    value = result["metrics"].get(key)
    spread = (result.get("spread") or {}).get(key)
    if (result.get("repeat") or 1) > 1 and spread is not None and _is_number(value):
        return f"{format_value(value)} ({format_value(spread[0])}-{format_value(spread[1])})"
    return format_value(value)


def _repeat_note(results: list[dict]) -> str:
    n = max((r.get("repeat") or 1) for r in results)
    return f"median (min-max) of {n} runs" if n > 1 else "one run"


def render_single(result: dict) -> str:
    metrics = result["metrics"]
    head = f"{result['scenario']} against {result.get('url', '?')}"
    pid = (result.get("server") or {}).get("pid")
    head += f" (server pid {pid}, CPU via {result['server']['cpu_source']})" if pid else \
        " (server pid not found: CPU n/a)"
    core = (result.get("env") or {}).get("core")
    head += f", {_repeat_note([result])}" + (f", core {core}" if core else "")
    rows = [[label, format_cell(result, k)] for k, label in rows_for(result["scenario"],
                                                                      metrics)]
    text = head + "\n" + _table(["metric", "value"], rows)
    return text + _extras(result)


def _error_kinds(result: dict) -> str:
    errs = result.get("error_kinds") or {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:6])


def _extras(result: dict) -> str:
    shown = _error_kinds(result)
    return f"\nerrors by kind: {shown}" if shown else ""


def comparison_ratios(results: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """{"krabfast/reference": {metric: ratio}, "krabfast/echo": {...}} for numeric metrics."""
    out: dict[str, dict[str, float | None]] = {}
    for a, b in RATIOS:
        if a in results and b in results:
            ma, mb = results[a]["metrics"], results[b]["metrics"]
            out[f"{a}/{b}"] = {k: (round(r, 4) if r is not None else None)
                               for k in ma if _is_number(ma[k]) or ma[k] is None
                               for r in [ratio(ma[k], mb.get(k))]}
    return out


def render_comparison(scenario: str, results: dict[str, dict]) -> str:
    names = [n for n in TARGET_ORDER if n in results] + [n for n in results if n not in TARGET_ORDER]
    pairs = [(a, b) for a, b in RATIOS if a in results and b in results]
    short = {"reference": "ref", PURE: "pure"}
    header = ["metric", *names, *(f"{a}/{short.get(b, b)}" for a, b in pairs)]
    keys: list[tuple[str, str]] = []
    for n in names:
        for k, label in rows_for(scenario, results[n]["metrics"]):
            if (k, label) not in keys:
                keys.append((k, label))
    rows = []
    for k, label in keys:
        cells = [label, *(format_cell(results[n], k) for n in names)]
        for a, b in pairs:
            cells.append(format_ratio(ratio(results[a]["metrics"].get(k),
                                            results[b]["metrics"].get(k))))
        rows.append(cells)
    lines = [f"{scenario}: side by side, {_repeat_note(list(results.values()))} (ratios are "
             "krabfast ÷ other, of the medians; for ms, CPU and RSS lower is better)",
             _table(header, rows)]
    cores = [f"{n} {results[n]['env']['core']}" for n in names
             if (results[n].get("env") or {}).get("core")]
    if cores:
        lines.append("cores: " + ", ".join(cores))
    for n in names:
        shown = _error_kinds(results[n])
        if shown:
            lines.append(f"{n} errors by kind: {shown}")
    if "krabfast" in results and PURE in results:
        lines += ["", render_cores(scenario, results["krabfast"], results[PURE])]
    return "\n".join(lines)


def render_cores(scenario: str, compiled: dict, pure: dict) -> str:
    """The compiled-vs-pure table of `--core both`: medians (min-max), the ratio of the
    medians and the range of the per-repetition ratios (runs of one repetition are paired)."""
    from krabfast.bench.repeat import paired_ratio_spread

    labels = dict(ROWS.get(scenario, []))
    keys = [k for k in CORE_ROWS.get(scenario, [k for k, _ in ROWS.get(scenario, [])])
            if k in compiled["metrics"]]
    paired = paired_ratio_spread(compiled, pure)
    rows = []
    for k in keys:
        spread = paired.get(k)
        rows.append([labels.get(k, k), format_cell(compiled, k), format_cell(pure, k),
                     format_ratio(ratio(compiled["metrics"].get(k), pure["metrics"].get(k))),
                     f"{format_ratio(spread[0])}-{format_ratio(spread[1])}" if spread else "n/a"])
    head = (f"{scenario}: compiled vs pure-Python core, {_repeat_note([compiled, pure])}, "
            "interleaved (ratio compiled ÷ pure; server CPU is utime+stime of the gateway "
            "process per operation)")
    return head + "\n" + _table(["metric", "compiled", "pure", "compiled/pure",
                                 "per-run ratio"], rows)


def render_series(result: dict, limit: int = 0) -> str:
    """The soak time series as a table (every row, or every n-th to stay under `limit`)."""
    series = result.get("series") or []
    if not series:
        return ""
    step = max(1, math.ceil(len(series) / limit)) if limit else 1
    rows = [[str(s["t"]), format_value(s["rss_mb"]), format_value(s["cpu_pct"]),
             format_value(s["rpc"]), format_value(s["rpc_p50_ms"]), format_value(s["rpc_p99_ms"]),
             format_value(s["rpc_errors"]), format_value(s["churn"])]
            for s in series[step - 1::step]]
    return _table(["t s", "RSS MB", "CPU %", "rpc", "p50 ms", "p99 ms", "rpc err", "connects"],
                  rows)


def render_saved(output: dict) -> str:
    """The text report of a saved `krabfast bench ... --json` result."""
    if "targets" in output:
        return render_comparison(output["scenario"], output["targets"])
    text = render_single(output)
    if output.get("scenario") == "soak":
        text += "\n" + render_series(output, limit=30)
    return text


if __name__ == "__main__":  # python -m krabfast.bench.report RESULT.json...
    import json
    import sys

    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as fh:
            print(render_saved(json.load(fh)))
        print()
