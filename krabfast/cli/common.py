"""What every command module of the command line shares: the parser classes, --log-level,
the client options (--url/--token/--password/--timeout/--json) and one request on a fresh CLI
connection (`run_call`). It imports none of the command modules."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from krabfast.gateway.config import DEFAULT_PORT, PASSWORD_ENV_VARS, TOKEN_ENV_VARS, env_first


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


def env_names(names) -> str:
    return " / ".join(f"${n}" for n in names)


def add_client_args(p) -> None:
    p.add_argument("--url", default=None,
                   help=f"gateway URL, ws:// or wss:// (default $KRABFAST_URL, else {DEFAULT_URL})")
    p.add_argument("--token", default=None,
                   help=f"the gateway's shared token (or {env_names(TOKEN_ENV_VARS)})")
    p.add_argument("--password", default=None,
                   help=f"the gateway's shared password (or {env_names(PASSWORD_ENV_VARS)})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway")
    add_tls_fingerprint_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON result")


def add_tls_fingerprint_arg(p) -> None:
    p.add_argument("--tls-fingerprint", default=None, metavar="SHA256",
                   help="wss:// only: accept exactly the certificate with this SHA-256 "
                        "fingerprint (64 hex digits or colon pairs, optional sha256: prefix; "
                        "the gateway logs it at start); without it the certificate must be "
                        "trusted by the system's CAs ($SSL_CERT_FILE) and name the host")


def client_url(args) -> str:
    return args.url or os.environ.get("KRABFAST_URL") or DEFAULT_URL


class _Explained(Exception):
    def __init__(self, text: str, error) -> None:
        super().__init__(text)
        self.text = text
        self.error = error


def run_client(args, body, *, what: str) -> tuple[int, object]:
    """Run `await body(client)` on a fresh CLI connection: (exit code, result). Errors are
    printed as one line."""
    from krabfast.client import GatewayClient, GatewayClientError, RequestError
    from krabfast.client.hints import explain_request_error

    token = args.token or env_first(TOKEN_ENV_VARS)
    password = args.password or env_first(PASSWORD_ENV_VARS)

    async def go():
        async with GatewayClient(client_url(args), token=token, password=password,
                                 client_id="cli", mode="cli", scopes=["operator.admin"],
                                 timeout=args.timeout,
                                 tls_fingerprint=getattr(args, "tls_fingerprint", None)) as client:
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
