"""`krabfast call METHOD`, `call --list`, `health`, `status`: one method on a running gateway."""

from __future__ import annotations

import json
import sys

from krabfast.cli.common import add_client_args, run_call, run_client


def add_parsers(sub) -> None:
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
    from krabfast.methods import METHODS

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
        from krabfast.methods import METHODS

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

