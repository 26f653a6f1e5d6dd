"""Protocol version constants.

The wire protocol integer is versioned separately from the package. General clients speak
the current version; nodes (and probes) may use the previous one during rolling upgrades.
"""

PROTOCOL_VERSION = 4
MIN_CLIENT_PROTOCOL = 4
MIN_NODE_PROTOCOL = 3

# What we report as server.version: the reference release we are wire-compatible with is
# pinned in the README; our own version goes in server.version so clients can tell.
COMPAT_REFERENCE_VERSION = "2026.9.6"


def accepted_range(role: str, mode: str) -> tuple[int, int]:
    """Inclusive protocol range this gateway accepts: nodes and probes may lag by one."""
    low = MIN_NODE_PROTOCOL if (role == "node" or mode == "probe") else MIN_CLIENT_PROTOCOL
    return low, PROTOCOL_VERSION
