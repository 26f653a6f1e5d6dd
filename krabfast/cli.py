"""Command line: `krabfast gateway`, `call`, `health`, `status`, `protocol gen|check`.

`krabkrab` is the same entry point under the seeds' name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from krabfast import __version__
from krabfast.gateway.config import DEFAULT_BIND, DEFAULT_PORT, PASSWORD_ENV_VARS, TOKEN_ENV_VARS, env_first


def _add_gateway(sub) -> None:
    p = sub.add_parser("gateway", help="run the gateway in the foreground (logs to stdout)")
    p.add_argument("action", nargs="?", default="run", choices=["run"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--bind", default=DEFAULT_BIND, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--auth", choices=["none", "token", "password"], default=None,
                   help="auth mode (default: token if a token is set, else password if set, else none)")
    p.add_argument("--token", default=None, help=f"shared token (or ${TOKEN_ENV_VARS[0]})")
    p.add_argument("--password", default=None, help="shared password")
    p.add_argument("--tick-interval-ms", type=int, default=30_000)
    p.add_argument("--max-buffered-bytes", type=int, default=52_428_800,
                   help="a socket queueing more than this for an event it cannot miss is closed "
                        "(1008 slow consumer)")
    p.add_argument("--drop-if-slow-bytes", type=int, default=65_536,
                   help="a socket queueing more than this gets only the newest presence event "
                        "once it drains, and misses pairing notices")
    p.add_argument("--state-dir", default=None,
                   help="where pairing state lives (default ~/.krabfast or $KRABFAST_STATE_DIR)")
    p.add_argument("--no-auto-approve-local", dest="auto_approve_local", action="store_false",
                   help="make devices on this machine wait for approval like remote ones")
    p.add_argument("--node-commands-allow", default="", metavar="CMD,...",
                   help="opt in to privacy-heavy node commands (camera.snap, screen.record, ...)")
    p.add_argument("--node-commands-deny", default="", metavar="CMD,...",
                   help="node commands never invoked, whatever a node declares")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_cmd_gateway)


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def _cmd_gateway(args) -> int:
    from krabfast.gateway.config import GatewayConfig
    from krabfast.gateway.server import run

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = GatewayConfig.resolve(auth=args.auth, token=args.token, password=args.password,
                                    bind=args.bind, port=args.port,
                                    tick_interval_ms=args.tick_interval_ms,
                                    max_buffered_bytes=args.max_buffered_bytes,
                                    drop_if_slow_bytes=args.drop_if_slow_bytes,
                                    state_dir=args.state_dir,
                                    auto_approve_local=args.auto_approve_local,
                                    node_commands_allow=_names(args.node_commands_allow),
                                    node_commands_deny=_names(args.node_commands_deny))
    except ValueError as exc:
        print(f"krabfast gateway: {exc}", file=sys.stderr)
        return 2
    try:
        run(cfg)
    except OSError as exc:
        print(f"krabfast gateway: cannot listen on {cfg.bind}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def add_client_args(p) -> None:
    p.add_argument("--url", default=None, help=f"gateway URL (default ws://127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--token", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")


def _add_calls(sub) -> None:
    p = sub.add_parser("call", help="call a gateway method and print its result")
    p.add_argument("method")
    p.add_argument("--params", default=None, help="JSON object of params")
    add_client_args(p)
    p.set_defaults(func=_cmd_call)
    for name in ("health", "status"):
        q = sub.add_parser(name, help=f"call `{name}` on a running gateway")
        add_client_args(q)
        q.set_defaults(func=_cmd_call, method=name, params=None)


def run_call(args, method: str, params, *, what: str) -> tuple[int, object]:
    """One request on a fresh CLI connection: (exit code, result). Errors are printed."""
    from krabfast.client import GatewayClient, GatewayClientError, RequestError

    url = args.url or os.environ.get("KRABFAST_URL") or f"ws://127.0.0.1:{DEFAULT_PORT}"
    token = args.token or env_first(TOKEN_ENV_VARS)
    password = args.password or env_first(PASSWORD_ENV_VARS)

    async def go():
        async with GatewayClient(url, token=token, password=password, client_id="cli", mode="cli",
                                 scopes=["operator.admin"], timeout=args.timeout) as client:
            return await client.request(method, params, timeout=args.timeout)

    try:
        return 0, asyncio.run(go())
    except RequestError as exc:
        print(f"krabfast {what}: {exc.code}: {exc.message}", file=sys.stderr)
        if args.json and exc.details is not None:
            print(json.dumps({"code": exc.code, "message": exc.message, "details": exc.details}))
        return 1, None
    except (GatewayClientError, OSError, asyncio.TimeoutError) as exc:
        print(f"krabfast {what}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1, None


def _cmd_call(args) -> int:
    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            print(f"krabfast call: --params is not valid JSON: {exc}", file=sys.stderr)
            return 2
    code, result = run_call(args, args.method, params, what=f"call {args.method}")
    if code:
        return code
    if args.json or not isinstance(result, (dict, list)):
        print(json.dumps(result, indent=2))
    else:
        _print_human(args.method, result)
    return 0


def _print_human(method: str, result) -> None:
    if isinstance(result, list):
        for item in result:
            print(json.dumps(item, separators=(", ", ": ")))
        if not result:
            print("(empty)")
        return
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        shown = value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)
        print(f"{key.ljust(width)}  {shown}")


def _add_protocol(sub) -> None:
    p = sub.add_parser("protocol", help="export or check the protocol JSON Schema")
    p.add_argument("action", choices=["gen", "check"])
    p.add_argument("--out", default="dist/protocol.schema.json")
    p.add_argument("--swift-out", default="dist/GatewayModels.swift")
    p.set_defaults(func=_cmd_protocol)


def _cmd_protocol(args) -> int:
    from krabfast.protocol.jsonschema import build_schema, render_schema
    from krabfast.protocol.swift import render_swift

    outputs = {args.out: render_schema(), args.swift_out: render_swift(build_schema())}
    if args.action == "gen":
        for path, text in outputs.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote {path}")
        return 0
    stale = 0
    for path, text in outputs.items():
        try:
            with open(path, encoding="utf-8") as fh:
                current = fh.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{path} is {'missing' if current is None else 'stale'}: run `krabfast protocol gen` "
                  "and commit it", file=sys.stderr)
            stale += 1
    if stale:
        return 1
    print("generated protocol files are up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="krabfast", description="krabfast gateway and tools")
    parser.add_argument("--version", action="version", version=f"krabfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_gateway(sub)
    _add_calls(sub)
    _add_protocol(sub)
    from krabfast.devices_cli import add_parser as _add_devices

    _add_devices(sub)
    from krabfast.nodes_cli import add_parsers as _add_nodes

    _add_nodes(sub)
    from krabfast.reference import add_parser as _add_reference

    _add_reference(sub)
    from krabfast.bench import add_parser as _add_bench
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
