"""Which scopes approving a node's declared command surface takes (as the reference)."""

from __future__ import annotations

# Approving a surface that declares these needs operator.admin (they run code or read the
# host's files); invoking needs admin only for the proxy/upload/listing ones (as upstream).
APPROVE_ADMIN_COMMANDS = frozenset(("system.run", "system.run.prepare", "system.which",
                                    "browser.proxy", "browser.proxy.upload.v1", "fs.listDir",
                                    "terminal.upload"))
APPROVE_ADMIN_PREFIXES = ("system.execApprovals.",)


def approve_needs_admin(command: str) -> bool:
    return command in APPROVE_ADMIN_COMMANDS or command.startswith(APPROVE_ADMIN_PREFIXES)


def approve_scopes(commands) -> list[str]:
    """Scopes an operator needs to approve a node surface declaring `commands`."""
    commands = list(commands)
    if any(approve_needs_admin(c) for c in commands):
        return ["operator.pairing", "operator.admin"]
    if commands:
        return ["operator.pairing", "operator.write"]
    return ["operator.pairing"]
