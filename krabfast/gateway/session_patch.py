"""sessions.patch as the reference applies it: params -> the store fields to change, every
check first (a refused patch changes nothing). Pure: the caller stores the result.
"""

from __future__ import annotations

from msgspec import UNSET

from krabfast.gateway import session_levels as levels
from krabfast.models.thinking import normalize_think_level
from krabfast.gateway.session_rows import camel as _camel
from krabfast.protocol.errors import invalid_request

# Stored verbatim in the session's settings (null clears one) and shown in its row.
PLAIN_SETTINGS = (
    "icon", "color", "category", "board_face", "context_window", "fast_mode",
    "permission_mode", "send_policy", "group_activation", "tool_overrides",
)
# Level settings: normalized as the reference does (session_levels), null clears one.
# Subagent wiring: krabfast runs no subagents, so these can only be cleared (null).
_SUBAGENT_ONLY = ("completion_owner_session_key", "inherited_tool_policy_version",
                  "inherited_tool_allow", "inherited_tool_deny")
AGENT_STATUS_TTL_MINUTES = 30  # the reference's default
AGENT_STATUS_NOTE_MAX = 120


def _given(params, name: str) -> bool:
    return getattr(params, name) is not UNSET


def _changed(key: str):
    return invalid_request(f"Session {key} changed before patch. Retry.",
                           details={"reason": "session-changed"})


def _check_expected(params, key: str, record) -> None:
    """The optimistic-concurrency fields: each must equal the session's current value
    (krabfast keeps no lifecycle revision, sandbox mode or native-runtime consent: null)."""
    settings = record.settings if record is not None else {}
    current = {
        "expected_session_id": record.session_id if record is not None else None,
        "expected_lifecycle_revision": None,
        "expected_sandbox_mode": None,
        "expected_native_runtime_consent": None,
        "expected_permission_mode": settings.get("permission_mode"),
        "expected_tool_overrides": settings.get("tool_overrides"),
        "expected_marked_unread_at": settings.get("marked_unread_at"),
    }
    for name, value in current.items():
        if _given(params, name) and getattr(params, name) != value:
            raise _changed(key)


def _agent_status(params, settings: dict, now: int):
    """The new `agent_status` setting (a dict, or None to clear it)."""
    note, attention = params.status_note, params.attention
    if note is None or attention is None:
        if note not in (None, UNSET) or attention not in (None, UNSET):
            raise invalid_request("cannot clear and set agent status in the same patch")
        return None
    current = settings.get("agent_status") or {}
    if current.get("expiresAt", 0) <= now:
        current = {}
    if note is UNSET:
        note = current.get("note")
    else:
        note = " ".join(note.split())[:AGENT_STATUS_NOTE_MAX].rstrip()
    if not note:
        raise invalid_request("statusNote required before setting attention or ttlMinutes")
    if attention is UNSET:
        attention = current.get("attention")
    ttl = params.ttl_minutes if _given(params, "ttl_minutes") else AGENT_STATUS_TTL_MINUTES
    status = {"note": note, "expiresAt": now + ttl * 60_000}
    if attention:
        status["attention"] = attention
    return status


def _level_changes(params, record, changes: dict, think_profile) -> None:
    """The level settings of the patch, normalized; execNode trimmed (clearing it drops an
    execHost "node"); thinkingLevel checked against the session's model."""
    settings = record.settings if record is not None else {}
    model_now = record.model if record is not None else None
    for name in levels.LEVEL_FIELDS:
        if _given(params, name):
            value = getattr(params, name)
            changes[name] = None if value is None else levels.normalize_level(name, value)
    if _given(params, "exec_node"):
        node = (params.exec_node or "").strip() if params.exec_node is not None else None
        if node == "":
            raise invalid_request("invalid execNode: empty")
        changes["exec_node"] = node
        host = changes["exec_host"] if "exec_host" in changes else settings.get("exec_host")
        if node is None and host == "node":
            changes["exec_host"] = None
    asked = _given(params, "thinking_level")
    if asked and params.thinking_level is not None:
        level = normalize_think_level(params.thinking_level)
        if level is None:  # listed for the model the session has before this patch
            raise levels.refuse_unknown_think_level(think_profile(model_now)[1])
        changes["thinking_level"] = level
    elif asked:
        changes["thinking_level"] = None
    if asked or _given(params, "model"):
        level = changes["thinking_level"] if asked else settings.get("thinking_level")
        if level is not None:
            ref = changes["model"] if _given(params, "model") else model_now
            model, offered = think_profile(ref)
            level = levels.supported_think_level(level, offered, asked=asked, model=model)
            if asked or level != settings.get("thinking_level"):
                changes["thinking_level"] = level


def patch_changes(params, record, *, key: str, now: int, label_in_use, think_profile) -> dict:
    """The SessionStore.patch fields for `params` on `record` (None: the session does not
    exist yet). Raises the reference's errors; `label_in_use(label)`: another session of
    the agent has it; `think_profile(model)`: ("provider/model", its thinking levels) for
    a session model (None: the default model)."""
    if _given(params, "exec_security") or _given(params, "exec_ask"):
        raise invalid_request("execSecurity/execAsk are retired; set permissionMode "
                              "(read-only|guarded|workspace|full) instead")
    for name in _SUBAGENT_ONLY:
        if getattr(params, name) not in (UNSET, None):
            raise invalid_request(f"{_camel(name)}: krabfast runs no subagents")
    _check_expected(params, key, record)
    if _given(params, "archived") and record is None:
        raise invalid_request(f"session not found: {key}")
    if _given(params, "archived") and not _given(params, "expected_session_id"):
        raise invalid_request(f"expectedSessionId required for session lifecycle patch: {key}")
    settings = record.settings if record is not None else {}
    changes: dict = {}
    if _given(params, "label"):
        label = params.label.strip() if params.label is not None else None
        if label and label_in_use(label):
            raise invalid_request(f"label already in use: {label}")
        changes["label"] = label or None
    if _given(params, "model"):
        changes["model"] = params.model or None
    for name in PLAIN_SETTINGS:
        if _given(params, name):
            value = getattr(params, name)
            changes[name] = None if value == "" else value
    _level_changes(params, record, changes, think_profile)
    if any(_given(params, n) for n in ("status_note", "attention", "ttl_minutes")):
        changes["agent_status"] = _agent_status(params, settings, now)
    archived = bool(record.archived) if record is not None else False
    if _given(params, "archived"):
        archived = params.archived
        changes["archived"] = archived
        if archived:
            if "archived_at" not in settings:
                changes["archived_at"] = now
            changes["pinned"], changes["pinned_at"] = False, None  # archiving unpins
        else:
            changes["archived_at"] = None
    if _given(params, "pinned"):
        if params.pinned:
            if archived:
                raise invalid_request("cannot pin an archived session; restore it first")
            changes["pinned"] = True
            if "pinned_at" not in settings:
                changes["pinned_at"] = now
        else:
            changes["pinned"], changes["pinned_at"] = False, None
    if _given(params, "unread"):
        if params.unread:
            changes["unread"] = True
            changes["marked_unread_at"] = max(now, (settings.get("marked_unread_at") or 0) + 1)
        else:
            changes["unread"] = False
            changes["last_read_at"] = now
            changes["marked_unread_at"] = None
            changes["agent_status"] = None
    return changes
