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


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_URL = f"ws://127.0.0.1:{DEFAULT_PORT}"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after an option's help, except for unset and on/off defaults."""

    def _get_help_string(self, action):
        if action.default is None or action.default == "" or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def log_level(text: str) -> str:
    """argparse type for --log-level: one of LOG_LEVELS, any case."""
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"unknown log level {text!r} (use {', '.join(LOG_LEVELS)})")
    return value


def _env_names(names) -> str:
    return " / ".join(f"${n}" for n in names)


GATEWAY_DESCRIPTION = f"""\
Run the gateway in the foreground, logging to stdout (stop it with Ctrl-C or SIGTERM: clients
get a `shutdown` event, then a 1012 close). No config file is needed: with no secret it
serves ws://{DEFAULT_BIND}:{DEFAULT_PORT} without auth (loopback only). The token may come from
{_env_names(TOKEN_ENV_VARS)}, the password from {_env_names(PASSWORD_ENV_VARS)}."""


def _add_gateway(sub) -> None:
    p = sub.add_parser("gateway", help="run the gateway in the foreground (logs to stdout)",
                       description=GATEWAY_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("action", nargs="?", default="run", choices=["run"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="TCP port to listen on (0: any free port)")
    p.add_argument("--bind", default=DEFAULT_BIND, help="address to listen on")
    p.add_argument("--auth", choices=["none", "token", "password"], default=None,
                   help="auth mode (default: token if a token is set, else password if set, else none)")
    p.add_argument("--token", default=None,
                   help=f"shared token clients must send (or {_env_names(TOKEN_ENV_VARS)})")
    p.add_argument("--password", default=None,
                   help=f"shared password clients must send (or {_env_names(PASSWORD_ENV_VARS)})")
    p.add_argument("--tick-interval-ms", type=int, default=30_000,
                   help="how often every client gets a `tick` event")
    p.add_argument("--max-buffered-bytes", type=int, default=52_428_800,
                   help="a socket queueing more than this for an event it cannot miss is closed "
                        "(1008 slow consumer)")
    p.add_argument("--drop-if-slow-bytes", type=int, default=65_536,
                   help="a socket queueing more than this gets only the newest presence event "
                        "once it drains, and misses pairing notices")
    p.add_argument("--state-dir", default=None,
                   help="where pairing state lives (default ~/.krabfast or $KRABFAST_STATE_DIR; "
                        "':memory:' keeps it in memory); checked at start")
    p.add_argument("--no-auto-approve-local", dest="auto_approve_local", action="store_false",
                   help="make devices on this machine wait for approval like remote ones")
    p.add_argument("--node-commands-allow", default="", metavar="CMD,...",
                   help="opt in to privacy-heavy node commands (camera.snap, screen.record, ...)")
    p.add_argument("--node-commands-deny", default="", metavar="CMD,...",
                   help="node commands never invoked, whatever a node declares")
    p.add_argument("--log-level", type=log_level, default="info", metavar="LEVEL",
                   help=f"one of {', '.join(LOG_LEVELS)}; at info and debug, client connects, "
                        "disconnects and refused connects are logged (rate limited)")
    p.set_defaults(func=_cmd_gateway)


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def check_state_dir(state_dir: str | None) -> str | None:
    """None when the state directory can hold the database (it is created, and the database
    opened and migrated, now rather than at the first device connect); else why not."""
    if state_dir == ":memory:":
        return None
    import sqlite3
    from pathlib import Path

    from krabfast.store.db import Database, default_state_dir

    root = Path(state_dir) if state_dir else default_state_dir()
    try:
        Database.in_state_dir(root).close()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
        return f"cannot use state directory {root}: {exc.strerror or exc}{where}"
    except (sqlite3.Error, RuntimeError) as exc:
        return f"cannot use state directory {root}: {root / 'gateway.sqlite3'}: {exc}"
    return None


def _ignored_secrets(args, cfg) -> list[str]:
    """Warnings for secrets the chosen auth mode does not use."""
    def source(flag, value, env_vars):
        if value:
            return flag
        return next((f"${n}" for n in env_vars if os.environ.get(n)), flag)

    unused = []
    if cfg.token and cfg.auth_mode != "token":
        unused.append(("token", source("--token", args.token, TOKEN_ENV_VARS)))
    if cfg.password and cfg.auth_mode != "password":
        unused.append(("password", source("--password", args.password, PASSWORD_ENV_VARS)))
    effect = ("clients connect without auth" if cfg.auth_mode == "none"
              else f"clients authenticate with the {cfg.auth_mode}")
    return [f"warning: --auth {cfg.auth_mode}: the {what} from {where} is ignored ({effect})"
            for what, where in unused]


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
    problem = check_state_dir(cfg.state_dir)
    if problem:
        print(f"krabfast gateway: {problem} (choose another with --state-dir or "
              "$KRABFAST_STATE_DIR)", file=sys.stderr)
        return 2
    for warning in _ignored_secrets(args, cfg):
        print(f"krabfast gateway: {warning}", file=sys.stderr, flush=True)
    try:
        run(cfg)
    except OSError as exc:
        print(f"krabfast gateway: cannot listen on {cfg.bind}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def add_client_args(p) -> None:
    p.add_argument("--url", default=None,
                   help=f"gateway URL, ws:// or wss:// (default $KRABFAST_URL, else {DEFAULT_URL})")
    p.add_argument("--token", default=None,
                   help=f"the gateway's shared token (or {_env_names(TOKEN_ENV_VARS)})")
    p.add_argument("--password", default=None,
                   help=f"the gateway's shared password (or {_env_names(PASSWORD_ENV_VARS)})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")


def _add_calls(sub) -> None:
    p = sub.add_parser("call", help="call a gateway method and print its result",
                       description="Call one method on a running gateway. `--list` prints the "
                                   "methods krabfast serves and the scope each needs (no gateway "
                                   "needed); with an explicit --url it lists what that gateway "
                                   "advertises in hello-ok.features.methods.")
    p.add_argument("method", nargs="?", help="method name (see --list)")
    p.add_argument("--params", default=None, help="JSON object of params")
    p.add_argument("--list", action="store_true", help="list the methods and their scopes")
    add_client_args(p)
    p.set_defaults(func=_cmd_call, what=None)
    for name in ("health", "status"):
        q = sub.add_parser(name, help=f"call `{name}` on a running gateway")
        add_client_args(q)
        q.set_defaults(func=_cmd_call, method=name, params=None, list=False, what=name)


def client_url(args) -> str:
    return args.url or os.environ.get("KRABFAST_URL") or DEFAULT_URL


# details.code of a refused connect -> what to do about it, in krabfast's terms (the wire
# message stays the reference's, which names the reference's config keys).
AUTH_HINTS = {
    "AUTH_TOKEN_MISSING": f"the gateway needs its token: pass --token or set ${TOKEN_ENV_VARS[0]}",
    "AUTH_TOKEN_MISMATCH": "pass the token the gateway was started with: --token or "
                           f"${TOKEN_ENV_VARS[0]} (or ${TOKEN_ENV_VARS[-1]})",
    "AUTH_PASSWORD_MISSING": "the gateway needs its password: pass --password or set "
                             f"${PASSWORD_ENV_VARS[0]}",
    "AUTH_PASSWORD_MISMATCH": "pass the password the gateway was started with: --password or "
                              f"${PASSWORD_ENV_VARS[0]} (or ${PASSWORD_ENV_VARS[-1]})",
    "DEVICE_IDENTITY_REQUIRED": "the gateway needs auth: pass its token with --token (or "
                                f"${TOKEN_ENV_VARS[0]}), or its password with --password",
}


def explain_request_error(exc) -> str:
    """One line for a gateway error answer, with krabfast's flags for auth failures."""
    details = exc.details if isinstance(exc.details, dict) else {}
    detail = details.get("code")
    message = exc.message
    hint = AUTH_HINTS.get(detail) if isinstance(detail, str) else None
    if hint is None and detail == "AUTH_RATE_LIMITED" and exc.retry_after_ms:
        hint = f"retry in {max(1, round(exc.retry_after_ms / 1000))} s"
    if hint is None:
        return f"{exc.code}: {message}"
    # The reference's own hint names its config keys (gateway.auth.token, ...): drop it.
    if "(" in message and "gateway." in message.rsplit("(", 1)[1]:
        message = message.rsplit("(", 1)[0].rstrip()
    return f"{detail}: {message}: {hint}"


class _Explained(Exception):
    def __init__(self, text: str, error) -> None:
        super().__init__(text)
        self.text = text
        self.error = error


def run_client(args, body, *, what: str) -> tuple[int, object]:
    """Run `await body(client)` on a fresh CLI connection: (exit code, result). Errors are
    printed as one line."""
    from krabfast.client import GatewayClient, GatewayClientError, RequestError

    token = args.token or env_first(TOKEN_ENV_VARS)
    password = args.password or env_first(PASSWORD_ENV_VARS)

    async def go():
        async with GatewayClient(client_url(args), token=token, password=password,
                                 client_id="cli", mode="cli", scopes=["operator.admin"],
                                 timeout=args.timeout) as client:
            return await body(client)

    def details_json(exc) -> None:
        if args.json and exc.details is not None:
            print(json.dumps({"code": exc.code, "message": exc.message, "details": exc.details}))

    try:
        return 0, asyncio.run(go())
    except _Explained as exc:
        print(f"krabfast {what}: {exc.text}", file=sys.stderr)
        details_json(exc.error)
        return 1, None
    except RequestError as exc:
        print(f"krabfast {what}: {explain_request_error(exc)}", file=sys.stderr)
        details_json(exc)
        return 1, None
    except asyncio.TimeoutError:
        print(f"krabfast {what}: no answer from {client_url(args)} within {args.timeout:g} s",
              file=sys.stderr)
        return 1, None
    except (GatewayClientError, OSError) as exc:
        print(f"krabfast {what}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1, None


def run_call(args, method: str, params, *, what: str, explain=None) -> tuple[int, object]:
    """One request on a fresh CLI connection: (exit code, result). Errors are printed.

    `explain(client, error)`, when given, may return a better line for a RequestError
    (it can make more requests on the same connection first)."""
    from krabfast.client import RequestError

    async def body(client):
        try:
            return await client.request(method, params, timeout=args.timeout)
        except RequestError as exc:
            text = await explain(client, exc) if explain is not None else None
            if text:
                raise _Explained(text, exc) from None
            raise

    return run_client(args, body, what=what)


def scope_label(spec) -> str:
    from krabfast.protocol.scopes import DYNAMIC_SCOPE, NODE_ROLE_SCOPE

    if spec.scope == NODE_ROLE_SCOPE:
        return "node role"
    if spec.scope == DYNAMIC_SCOPE:
        least = spec.scope_for(None) if spec.scope_for is not None else "?"
        return f"{least} or more (depends on params)"
    return spec.scope + (" (any authenticated socket)" if spec.open_to_all else "")


def method_table(names=None) -> str:
    """Method names with the scope each needs (krabfast's table; names it does not know
    are listed with '?')."""
    from krabfast.protocol.methods import METHODS

    names = sorted(METHODS) if names is None else list(names)
    width = max((len(n) for n in names), default=0)
    lines = []
    for name in names:
        spec = METHODS.get(name)
        scope = scope_label(spec) if spec is not None else "?"
        summary = f"  {spec.summary}" if spec is not None and spec.summary else ""
        lines.append(f"{name.ljust(width)}  {scope}{summary}".rstrip())
    return "\n".join(lines)


def _cmd_list(args) -> int:
    if args.url is None:
        from krabfast.protocol.methods import METHODS

        names = sorted(METHODS)
        if args.json:
            print(json.dumps([{"method": n, "scope": scope_label(METHODS[n])} for n in names],
                             indent=2))
        else:
            print(method_table(names))
        return 0

    async def features(client):
        return list(client.hello.features.methods)

    code, names = run_client(args, features, what="call --list")
    if code:
        return code
    if args.json:
        print(json.dumps(names, indent=2))
    else:
        print(method_table(names))
    return 0


def _cmd_call(args) -> int:
    if args.list:
        return _cmd_list(args)
    if not args.method:
        print("krabfast call: name a method (`krabfast call --list` shows them)", file=sys.stderr)
        return 2
    what = args.what or f"call {args.method}"
    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            print(f"krabfast {what}: --params is not valid JSON: {exc}", file=sys.stderr)
            return 2
    code, result = run_call(args, args.method, params, what=what)
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
    parser = CliParser(prog="krabfast", description="krabfast gateway and tools")
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
