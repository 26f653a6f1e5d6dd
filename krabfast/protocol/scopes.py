"""Roles, operator scopes, and the implication rules between them.

Scopes are also kept as bit masks so event fan-out can filter with one AND per socket.
"""

from __future__ import annotations

ROLE_OPERATOR = "operator"
ROLE_NODE = "node"
ROLES = (ROLE_OPERATOR, ROLE_NODE)

READ = "operator.read"
WRITE = "operator.write"
ADMIN = "operator.admin"
APPROVALS = "operator.approvals"
QUESTIONS = "operator.questions"
PAIRING = "operator.pairing"
TALK = "operator.talk"
TALK_SECRETS = "operator.talk.secrets"

OPERATOR_SCOPES = (READ, WRITE, ADMIN, APPROVALS, QUESTIONS, PAIRING, TALK, TALK_SECRETS)
SCOPE_BIT = {scope: 1 << i for i, scope in enumerate(OPERATOR_SCOPES)}
ALL_OPERATOR_BITS = (1 << len(OPERATOR_SCOPES)) - 1

# Pseudo-scopes in the method table: the caller must hold the node role; or the handler
# decides from the params (an operator role is still required).
NODE_ROLE_SCOPE = "node"
DYNAMIC_SCOPE = "dynamic"

# What a held scope also satisfies (besides itself).
_IMPLIES = {
    ADMIN: OPERATOR_SCOPES,
    WRITE: (READ, TALK),
}


def scope_mask(scopes) -> int:
    """Bit mask of everything the granted scopes satisfy (implications applied)."""
    mask = 0
    for scope in scopes:
        for implied in _IMPLIES.get(scope, (scope,)):
            mask |= SCOPE_BIT.get(implied, 0)
        mask |= SCOPE_BIT.get(scope, 0)
    return mask


def satisfies(granted: frozenset[str] | set[str], mask: int, required: str) -> bool:
    """True when the granted scopes satisfy `required`.

    Unknown `operator.*` scopes need an exact grant unless the caller holds admin."""
    bit = SCOPE_BIT.get(required)
    if bit is not None:
        return bool(mask & bit)
    return required in granted or ADMIN in granted


def covers(granted, requested) -> bool:
    """Every requested operator scope is satisfied by the granted set (implications apply);
    other scopes need an exact grant."""
    mask = scope_mask(granted)
    for scope in requested:
        bit = SCOPE_BIT.get(scope)
        if bit is not None:
            if not mask & bit:
                return False
        elif scope not in granted and "operator.admin" not in granted:
            return False
    return True


def normalized(scopes) -> list[str]:
    """Sorted, de-duplicated, with admin/write expanded to what they imply (as token
    summaries show them)."""
    out = set(scopes)
    if "operator.admin" in out:
        out |= {"operator.read", "operator.write"}
    if "operator.write" in out:
        out.add("operator.read")
    return sorted(out)
