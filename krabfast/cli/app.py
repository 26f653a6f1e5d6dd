"""The `krabfast` parser: one subcommand per command module, and `main`."""

from __future__ import annotations

import argparse
import os
import sys

from krabfast import __version__
from krabfast.bench import add_parser as add_bench
from krabfast.cli import calls, chat, devices, gateway, nodes, protocol
from krabfast.cli.common import CliParser
from krabfast.reference import add_parser as add_reference


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="krabfast", description="krabfast gateway and tools")
    parser.add_argument("--version", action="version", version=f"krabfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    gateway.add_parser(sub)
    calls.add_parsers(sub)
    chat.add_parser(sub)
    protocol.add_parser(sub)
    devices.add_parser(sub)
    nodes.add_parsers(sub)
    add_reference(sub)
    add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
