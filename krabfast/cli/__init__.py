"""Command line: `krabfast gateway`, `call`, `health`, `status`, `protocol gen|check`,
`devices ...`, `node run`, `nodes ...`, `reference install`, `bench ...`.

`krabkrab` is the same entry point under the seeds' name. `common` holds what the command
modules share and imports none of them; `app` builds the parser from the command modules.
"""

from krabfast.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
