"""One line for a gateway's error answer, naming krabfast's flags for auth failures.

Shared by the command line (`krabfast.cli`) and the node host (`krabfast.node.host`).
"""

from __future__ import annotations

from krabfast.envvars import PASSWORD_ENV_VARS, TOKEN_ENV_VARS

# details.code of a refused connect -> what to do about it, in krabfast's terms (the wire
# message stays the reference's, which names the reference's config keys).
AUTH_HINTS = {
    "AUTH_TOKEN_MISSING": f"the gateway needs its token: pass --token or set ${TOKEN_ENV_VARS[0]}",
    "AUTH_TOKEN_MISMATCH": "pass the token the gateway was started with: --token or "
                           f"${TOKEN_ENV_VARS[0]} (or ${TOKEN_ENV_VARS[-1]})",
    "AUTH_PASSWORD_MISSING": "the gateway needs its password: pass --password or set "
                             f"${PASSWORD_ENV_VARS[0]}",
    "AUTH_PASSWORD_MISMATCH": "pass the password the gateway was started with: --password or "
                              f"${PASSWORD_ENV_VARS[0]} (or ${PASSWORD_ENV_VARS[-1]})",
    "DEVICE_IDENTITY_REQUIRED": "the gateway needs auth: pass its token with --token (or "
                                f"${TOKEN_ENV_VARS[0]}), or its password with --password",
}


def explain_request_error(exc) -> str:
    """One line for a gateway error answer, with krabfast's flags for auth failures."""
    details = exc.details if isinstance(exc.details, dict) else {}
    detail = details.get("code")
    message = exc.message
    hint = AUTH_HINTS.get(detail) if isinstance(detail, str) else None
    if hint is None and detail == "AUTH_RATE_LIMITED" and exc.retry_after_ms:
        hint = f"retry in {max(1, round(exc.retry_after_ms / 1000))} s"
    if hint is None:
        return f"{exc.code}: {message}"
    # The reference's own hint names its config keys (gateway.auth.token, ...): drop it.
    if "(" in message and "gateway." in message.rsplit("(", 1)[1]:
        message = message.rsplit("(", 1)[0].rstrip()
    return f"{detail}: {message}: {hint}"
