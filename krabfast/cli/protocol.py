"""`krabfast protocol gen|check`: export or check the protocol JSON Schema and Swift models."""

from __future__ import annotations

import os
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("protocol", help="export or check the protocol JSON Schema")
    p.add_argument("action", choices=["gen", "check"])
    p.add_argument("--out", default="dist/protocol.schema.json")
    p.add_argument("--swift-out", default="dist/GatewayModels.swift")
    p.set_defaults(func=_cmd_protocol)


def _cmd_protocol(args) -> int:
    from krabfast.methods import METHOD_SPECS
    from krabfast.protocol.jsonschema import build_schema, render_schema
    from krabfast.protocol.swift import render_swift

    outputs = {args.out: render_schema(METHOD_SPECS),
               args.swift_out: render_swift(build_schema(METHOD_SPECS))}
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
