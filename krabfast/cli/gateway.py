"""`krabfast gateway`: run the gateway in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from krabfast.cli.common import LOG_LEVELS, HelpFormatter, env_names, log_level
from krabfast.gateway.config import DEFAULT_BIND, DEFAULT_PORT, PASSWORD_ENV_VARS, TOKEN_ENV_VARS


GATEWAY_DESCRIPTION = f"""\
Run the gateway in the foreground, logging to stdout (stop it with Ctrl-C or SIGTERM: clients
get a `shutdown` event, then a 1012 close). No config file is needed: with no secret it
serves ws://{DEFAULT_BIND}:{DEFAULT_PORT} without auth (loopback only). The token may come from
{env_names(TOKEN_ENV_VARS)}, the password from {env_names(PASSWORD_ENV_VARS)}.

--config FILE (or $KRABFAST_CONFIG, or the reference's $OPENCLAW_CONFIG_PATH) reads an
openclaw.json (JSON5): gateway.port, gateway.bind (loopback, lan, auto, custom with
gateway.customBindHost, or an IP address), gateway.auth.mode/token/password/rateLimit,
gateway.nodes.pairing.autoApproveLocal, gateway.nodes.commands.allow/deny,
gateway.tls.enabled/autoGenerate/certPath/keyPath/caPath, models.providers and
agents.defaults.model; other keys are listed once and ignored. "${{VAR}}" in a string is taken
from the environment. Options given here override the file; the file's token and password
override the environment's; the port is --port, else $OPENCLAW_GATEWAY_PORT, else
gateway.port (as the reference).

--tls serves wss:// and https:// on the same port (TLS 1.3 only, as the reference) with a
self-signed certificate made on first start: <state dir>/gateway/tls/gateway-cert.pem and
gateway-key.pem (RSA 2048, 10 years, CN openclaw-gateway). The start-up log prints its
SHA-256 fingerprint: clients pin it (`krabfast call --tls-fingerprint FP`, the reference's
gateway.remote.tlsFingerprint). --tls-cert FILE --tls-key FILE serve a certificate of your
own instead (never generated)."""


def add_parser(sub) -> None:
    p = sub.add_parser("gateway", help="run the gateway in the foreground (logs to stdout)",
                       description=GATEWAY_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("action", nargs="?", default="run", choices=["run"], help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="openclaw.json to read (JSON5; default $KRABFAST_CONFIG, else "
                        "$OPENCLAW_CONFIG_PATH, else none: the embedded defaults)")
    p.add_argument("--port", type=int, default=None,
                   help=f"TCP port to listen on (0: any free port; else $OPENCLAW_GATEWAY_PORT, "
                        f"else the config's gateway.port) (default: {DEFAULT_PORT})")
    p.add_argument("--bind", default=None,
                   help="address to listen on, or a bind mode: loopback, lan, auto, custom "
                        f"(else the config's gateway.bind) (default: {DEFAULT_BIND})")
    p.add_argument("--auth", choices=["none", "token", "password"], default=None,
                   help="auth mode (default: token if a token is set, else password if set, else none)")
    p.add_argument("--token", default=None,
                   help=f"shared token clients must send (or {env_names(TOKEN_ENV_VARS)})")
    p.add_argument("--password", default=None,
                   help=f"shared password clients must send (or {env_names(PASSWORD_ENV_VARS)})")
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
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                   help="serve wss:// (and https://) with the certificate under the state dir, "
                        "generated on first start (else the config's gateway.tls.enabled)")
    p.add_argument("--tls-cert", default=None, metavar="FILE",
                   help="PEM certificate (chain) to serve; implies --tls; needs --tls-key")
    p.add_argument("--tls-key", default=None, metavar="FILE",
                   help="PEM private key of --tls-cert")
    p.add_argument("--control-ui-root", default=None, metavar="DIR",
                   help="serve the reference's Control UI from DIR (an installed openclaw "
                        "package's dist/control-ui) at / (else the config's "
                        "gateway.controlUi.root, else node_modules/openclaw/dist/control-ui "
                        "found in the current directory or a parent, or the reference install "
                        "of the interop tests)")
    p.add_argument("--no-auto-approve-local", dest="auto_approve_local", action="store_false",
                   default=None,
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
        name = flag[2:]
        if getattr(args, "file_secrets", {}).get(name) == getattr(cfg, name):
            return f"the config's gateway.auth.{name}"
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


def gateway_settings(args, env=None) -> tuple[dict, list[str]]:
    """GatewayConfig.resolve keyword arguments from the options and the config file (the
    options win; see GATEWAY_DESCRIPTION), and the file's warnings (one line each).
    Raises ConfigFileError (the file) or ValueError (an option)."""
    from krabfast.gateway.config_file import (ConfigFileError, find_config_path,
                                              load_config_file, resolve_bind)

    env = os.environ if env is None else env
    path, _where = find_config_path(args.config, env)
    kw: dict = {}
    warnings: list[str] = []
    custom_host = None
    if path is not None:
        settings = load_config_file(path, env)
        kw.update(settings.values)
        kw["config_path"] = str(Path(path).expanduser().resolve())
        custom_host = settings.custom_bind_host
        warnings.extend(settings.warnings)
        if settings.ignored:
            warnings.append(f"config {path}: ignoring keys krabfast does not use: "
                            + ", ".join(settings.ignored))
        if settings.both_secrets and args.auth is None:
            raise ConfigFileError(f"config {path}: gateway.auth: both token and password are "
                                  "set: set gateway.auth.mode (or --auth) to token or password")
    if args.auth is not None:
        kw["auth_mode"] = args.auth
    if args.token:
        kw["token"] = args.token
    if args.password:
        kw["password"] = args.password
    if args.port is not None:
        kw["port"] = args.port
    elif env.get("OPENCLAW_GATEWAY_PORT"):
        text = env["OPENCLAW_GATEWAY_PORT"].strip()
        if not text.isdigit():
            raise ValueError(f"$OPENCLAW_GATEWAY_PORT: expected an integer 0-65535, got {text!r}")
        kw["port"] = int(text)
    if args.bind is not None:
        kw["bind"] = resolve_bind(args.bind, custom_host, key="--bind") \
            if args.bind in ("loopback", "lan", "all", "auto", "custom", "tailnet") else args.bind
    if args.auto_approve_local is not None:
        kw["auto_approve_local"] = args.auto_approve_local
    if getattr(args, "control_ui_root", None):
        kw["control_ui_root"] = args.control_ui_root
    for name in ("node_commands_allow", "node_commands_deny"):
        if getattr(args, name):
            kw[name] = _names(getattr(args, name))
    kw.update(_tls_settings(args))
    kw.update(tick_interval_ms=args.tick_interval_ms, max_buffered_bytes=args.max_buffered_bytes,
              drop_if_slow_bytes=args.drop_if_slow_bytes, state_dir=args.state_dir)
    return kw, warnings


def _tls_settings(args) -> dict:
    """GatewayConfig TLS fields from --tls/--no-tls/--tls-cert/--tls-key (over the file's)."""
    tls, cert, key = getattr(args, "tls", None), getattr(args, "tls_cert", None), \
        getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together (the certificate and its key)")
    if cert and tls is False:
        raise ValueError("--no-tls with --tls-cert: choose one")
    if cert:
        # A certificate of one's own: a typo in its path must not become a self-signed one.
        return {"tls_enabled": True, "tls_cert_path": cert, "tls_key_path": key,
                "tls_auto_generate": False}
    return {} if tls is None else {"tls_enabled": tls}


def _cmd_gateway(args) -> int:
    from krabfast.gateway.config import GatewayConfig
    from krabfast.gateway.config_file import ConfigFileError
    from krabfast.gateway.server import run
    from krabfast.gateway.tls import TlsError

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        kw, warnings = gateway_settings(args)
    except ConfigFileError as exc:
        print(f"krabfast gateway: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"krabfast gateway: {exc}", file=sys.stderr)
        return 2
    args.file_secrets = {n: kw[n] for n in ("token", "password")
                         if n in kw and not getattr(args, n)}
    try:
        cfg = GatewayConfig.resolve(auth=kw.pop("auth_mode", None), token=kw.pop("token", None),
                                    password=kw.pop("password", None), **kw)
    except ValueError as exc:
        print(f"krabfast gateway: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"krabfast gateway: warning: {warning}", file=sys.stderr, flush=True)
    problem = check_state_dir(cfg.state_dir)
    if problem:
        print(f"krabfast gateway: {problem} (choose another with --state-dir or "
              "$KRABFAST_STATE_DIR)", file=sys.stderr)
        return 2
    for warning in _ignored_secrets(args, cfg):
        print(f"krabfast gateway: {warning}", file=sys.stderr, flush=True)
    try:
        run(cfg)
    except TlsError as exc:
        print(f"krabfast gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"krabfast gateway: cannot listen on {cfg.bind}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    return 0
