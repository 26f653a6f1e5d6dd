"""`krabfast devices ...`: manage paired devices on a running gateway.

Each command is one request on its own CLI connection (client cli/cli, which keeps its
scopes on loopback with the shared secret), so approval works from a second terminal while
a device waits.
"""

from __future__ import annotations

import json
import time

from krabfast.cli.common import add_client_args, run_call


def add_parser(sub) -> None:
    p = sub.add_parser("devices", help="list, approve and manage paired devices")
    actions = p.add_subparsers(dest="action", required=True)
    specs = {
        "list": ([], "pending requests and paired devices"),
        "approve": (["request_id"], "approve a pending request"),
        "reject": (["request_id"], "reject a pending request"),
        "remove": (["device_id"], "forget a paired device (its sockets close)"),
        "rename": (["device_id", "label"], "set a device's label"),
        "rotate": (["device_id"], "issue a new device token (the old one stops working)"),
        "revoke": (["device_id"], "revoke a device token"),
    }
    for name, (positionals, help_text) in specs.items():
        q = actions.add_parser(name, help=help_text)
        for arg in positionals:
            q.add_argument(arg)
        if name in ("rotate", "revoke"):
            q.add_argument("--role", default="operator")
        if name == "rotate":
            q.add_argument("--scope", action="append", dest="scopes", default=None,
                           help="scopes of the new token (repeat; default: the current ones)")
        add_client_args(q)
        q.set_defaults(func=_cmd_devices)


def _request(args) -> tuple[str, dict]:
    action = args.action
    if action == "list":
        return "device.pair.list", {}
    if action in ("approve", "reject"):
        return f"device.pair.{action}", {"requestId": args.request_id}
    if action == "remove":
        return "device.pair.remove", {"deviceId": args.device_id}
    if action == "rename":
        return "device.pair.rename", {"deviceId": args.device_id, "label": args.label}
    params = {"deviceId": args.device_id, "role": args.role}
    if action == "rotate" and args.scopes is not None:
        params["scopes"] = args.scopes
    return f"device.token.{action}", params


def _cmd_devices(args) -> int:
    method, params = _request(args)
    code, result = run_call(args, method, params, what=f"devices {args.action}")
    if code:
        return code
    if args.json or args.action in ("rotate", "revoke"):
        print(json.dumps(result, indent=2))
    elif args.action == "list":
        print(render_list(result))
    elif args.action == "approve":
        print(f"Approved {result['device']['deviceId']} ({result['requestId']})")
    elif args.action == "reject":
        print(f"Rejected {result['deviceId']}")
    elif args.action == "remove":
        print(f"Removed {result['deviceId']}")
    elif args.action == "rename":
        print(f"Renamed {result['deviceId']} -> {result['label']}")
    return 0


def _age(ts_ms: int | None) -> str:
    if not ts_ms:
        return "-"
    seconds = max(0, int(time.time() - ts_ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def render_list(result: dict) -> str:
    pending, paired = result.get("pending", []), result.get("paired", [])
    out = [f"Pending ({len(pending)})"]
    if pending:
        out.append(_table(["Request", "Device", "Role", "Scopes", "IP", "Age", "Status"], [
            [p["requestId"], p.get("displayName") or p.get("clientId") or p["deviceId"][:12],
             p.get("role", "-"), ",".join(p.get("scopes", [])) or "-", p.get("remoteIp", "-"),
             _age(p.get("ts")), "repair" if p.get("isRepair") else "new pairing"]
            for p in pending]))
    out.append("")
    out.append(f"Paired ({len(paired)})")
    if paired:
        out.append(_table(["Device", "Device ID", "Roles", "Scopes", "Tokens", "Last seen"], [
            [d.get("operatorLabel") or d.get("displayName") or d.get("clientId") or "-",
             d["deviceId"][:16] + "...", ",".join(d.get("roles", [])) or "-",
             ",".join(d.get("scopes", [])) or "-",
             ",".join(t["role"] for t in d.get("tokens", [])) or "-", _age(d.get("lastSeenAtMs"))]
            for d in paired]))
        out.append("")
        out.append("Full device IDs:")
        out += [f"  {d['deviceId']}" for d in paired]
    return "\n".join(out)
