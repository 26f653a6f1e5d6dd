"""`krabfast node run` (a node host) and `krabfast nodes ...` (operate nodes on a gateway)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from functools import partial

from krabfast.cli.common import (HelpFormatter, add_client_args, add_tls_fingerprint_arg,
                                 log_level, run_call)
from krabfast.gateway.config import PASSWORD_ENV_VARS, TOKEN_ENV_VARS, env_first


def add_parsers(sub) -> None:
    p = sub.add_parser("node", help="run a headless node host")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="connect to a gateway as a node and serve commands",
                             formatter_class=HelpFormatter,
                             description="Connect to a gateway as a node (in the foreground, "
                                         "reconnecting with backoff) and serve its commands. "
                                         "The gateway is --url, or --host/--port/--tls.")
    run.add_argument("--url", default=None,
                     help="gateway URL, ws:// or wss:// (default: built from --host, --port, --tls)")
    run.add_argument("--host", default=None, help="gateway host (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=None, help="gateway port (default 18789)")
    run.add_argument("--tls", action="store_true", help="use wss://")
    add_tls_fingerprint_arg(run)
    run.add_argument("--token", default=None,
                     help="the gateway's shared token (or " + " / ".join(f"${n}" for n in TOKEN_ENV_VARS) + ")")
    run.add_argument("--password", default=None,
                     help="the gateway's shared password (or "
                          + " / ".join(f"${n}" for n in PASSWORD_ENV_VARS) + ")")
    run.add_argument("--state-dir", default=None,
                     help="device identity and token (default ~/.krabfast/node, or "
                          "$KRABFAST_NODE_STATE_DIR)")
    run.add_argument("--display-name", default=None, help="name shown in node lists (default: hostname)")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import MODULE and call its register(registry) (repeatable)")
    run.add_argument("--log-level", type=log_level, default="info", metavar="LEVEL",
                     help="debug, info, warning, error or critical")
    run.set_defaults(func=_cmd_node_run)

    n = sub.add_parser("nodes", help="list, approve and invoke nodes on a running gateway")
    nactions = n.add_subparsers(dest="action", required=True)
    for name, positional, help_text in (
            ("list", None, "connected and paired nodes"),
            ("pending", None, "node command-surface requests waiting for approval"),
            ("approve", "request_id", "approve a node's declared commands"),
            ("reject", "request_id", "reject a node's command-surface request")):
        q = nactions.add_parser(name, help=help_text)
        if positional:
            q.add_argument(positional)
        add_client_args(q)
        q.set_defaults(func=_cmd_nodes)
    inv = nactions.add_parser("invoke", help="run a command on a node")
    inv.add_argument("--node", required=True)
    inv.add_argument("--command", required=True)
    inv.add_argument("--params", default="{}")
    inv.add_argument("--invoke-timeout-ms", type=int, default=None)
    add_client_args(inv)
    inv.set_defaults(func=_cmd_nodes)


def node_url(args) -> str | None:
    """The gateway URL of `node run` (--url, else --host/--port/--tls); None after printing
    why the arguments do not make one."""
    from krabfast.client import GatewayConnectError, check_url

    if args.url is not None:
        if args.host is not None or args.port is not None or args.tls:
            print("krabfast node run: give --url or --host/--port/--tls, not both", file=sys.stderr)
            return None
        url = args.url
    else:
        host = args.host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        url = f"{'wss' if args.tls else 'ws'}://{host}:{18789 if args.port is None else args.port}"
    try:
        check_url(url)
    except GatewayConnectError as exc:
        print(f"krabfast node run: {exc}", file=sys.stderr)
        return None
    return url


def _cmd_node_run(args) -> int:
    from krabfast.node import NodeHost, default_registry

    url = node_url(args)
    if url is None:
        return 2
    if args.tls_fingerprint:  # checked now: the host would retry a bad pin forever
        from krabfast.client.tls import NEEDS_WSS, normalize_fingerprint

        try:
            normalize_fingerprint(args.tls_fingerprint)
            if not url.lower().startswith("wss://"):
                raise ValueError(f"{NEEDS_WSS} (got {url})")
        except ValueError as exc:
            print(f"krabfast node run: --tls-fingerprint: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)  # per-connection INFO noise
    registry = default_registry()
    for module in args.plugin:
        registry.load_plugin(module)
    host = NodeHost(url,
                    token=args.token or env_first(TOKEN_ENV_VARS),
                    password=args.password or env_first(PASSWORD_ENV_VARS),
                    state_dir=args.state_dir or os.environ.get("KRABFAST_NODE_STATE_DIR"),
                    registry=registry, display_name=args.display_name,
                    tls_fingerprint=args.tls_fingerprint)
    print(f"node {host.node_id} serving {', '.join(registry.names())}", flush=True)
    try:
        asyncio.run(host.run())
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_nodes(args) -> int:
    action = args.action
    if action == "invoke":
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            print(f"krabfast nodes invoke: --params is not valid JSON: {exc}", file=sys.stderr)
            return 2
        request = {"nodeId": args.node, "command": args.command, "params": params,
                   "idempotencyKey": str(uuid.uuid4())}
        if args.invoke_timeout_ms is not None:
            request["timeoutMs"] = args.invoke_timeout_ms
        method = "node.invoke"
    elif action in ("approve", "reject"):
        method, request = f"node.pair.{action}", {"requestId": args.request_id}
    elif action == "pending":
        method, request = "node.pair.list", {}
    else:
        method, request = "node.list", {}
    code, result = run_call(args, method, request, what=f"nodes {action}",
                            explain=partial(_explain_invoke, args.node) if action == "invoke" else None)
    if code:
        return code
    if action == "pending":
        result = result["pending"]
    if args.json or action in ("invoke",):
        print(json.dumps(result, indent=2))
    elif action == "list":
        for node in result["nodes"]:
            state = "connected" if node["connected"] else f"offline ({node.get('lastSeenReason', '-')})"
            print(f"{node['nodeId']}  {node.get('displayName', '-')}  {state}  "
                  f"{node['approvalState']}  commands: {', '.join(node['commands']) or '-'}")
        if not result["nodes"]:
            print("(no nodes)")
    elif action == "pending":
        for req in result:
            print(f"{req['requestId']}  node {req['nodeId'][:16]}...  commands: "
                  f"{', '.join(req['commands'])}  needs: {', '.join(req['requiredApproveScopes'])}")
        if not result:
            print("(nothing pending)")
    else:
        print(f"{'Approved' if action == 'approve' else 'Rejected'} {result['requestId']}")
    return 0


async def _explain_invoke(node_id: str, client, exc) -> str | None:
    """The gateway answers an invoke on an unknown or unapproved node with PAIRING_CHANGED,
    as the reference does: look the node up to say which it is."""
    from krabfast.client import RequestError

    details = exc.details if isinstance(exc.details, dict) else {}
    if details.get("code") != "PAIRING_CHANGED":
        return None
    try:
        node = await client.request("node.describe", {"nodeId": node_id})
    except RequestError as err:
        if "unknown nodeId" in err.message:
            return (f"unknown node {node_id!r}: no node with this id is connected or paired "
                    "(see `krabfast nodes list`)")
        return None
    if not isinstance(node, dict):
        return None
    state, pending = node.get("approvalState"), node.get("pendingRequestId")
    wire = f"{exc.code}: {exc.message}"
    if pending:
        return (f"{wire}: node {node_id} waits for approval of its commands: "
                f"`krabfast nodes approve {pending}`")
    if state and state != "approved":
        return f"{wire}: node {node_id} has no approved commands ({state})"
    return None
