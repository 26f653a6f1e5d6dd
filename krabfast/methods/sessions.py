"""Sessions family: sessions.list, .subscribe, .messages.subscribe/.unsubscribe,
.describe, .resolve, .create, .patch, .reset, .delete, .abort (the reference's names).

Session keys have the reference's form, `agent:<agentId>:<name>`; a bare name belongs to
the default agent `main`. `sessions.changed` goes to the sockets that subscribed;
`session.message` to the sockets subscribed to that session's messages only (an event-bus
topic each: no scan of every socket).
"""

from __future__ import annotations

import uuid

from msgspec import UNSET

from krabfast.protocol import sessions as S
from krabfast.protocol.errors import invalid_request
from krabfast.protocol.methods import MethodTable
from krabfast.protocol.scopes import ADMIN, DYNAMIC_SCOPE, READ, WRITE

table = MethodTable()

def _conv(call):
    return call.services.conversations


def _write_scope(params) -> str:
    """The reference's scope here is params-dependent (`dynamic`): what krabfast's sessions
    can change (label, model, settings, archived/pinned/unread) needs operator.write."""
    return WRITE


def _known(conv, key: str):
    record = conv.sessions.get(key)
    if record is None:
        raise invalid_request(f"unknown session: {key}")
    return record


@table.method("sessions.list", S.SessionsListParams, S.SessionsListResult, READ,
              summary="sessions, most recently updated first, a page at a time")
def sessions_list(call, params):
    conv = _conv(call)
    rows, paging = conv.list_sessions(params)
    model = conv.models.default
    # `defaults` is required (SessionsListResult): the reference's Control UI reads
    # defaults.modelSelectionTarget unguarded and stops rendering the chat without it.
    defaults = {"modelProvider": model.provider, "model": model.model_id or model.id,
                "contextTokens": model.context_window}
    # `owners`: the reference's owner facet; krabfast sessions have no owners.
    return {"ts": conv.clock_ms(), "count": len(rows), **paging, "owners": [],
            "defaults": defaults, "sessions": rows}


@table.method("sessions.subscribe", S.SessionsSubscribeParams, S.SessionsSubscribeResult, READ,
              summary="get `sessions.changed` events on this socket")
def sessions_subscribe(call, params):
    call.services.bus.subscribe(_conv(call).SESSIONS_TOPIC, call.conn_id)
    return {"subscribed": True}


@table.method("sessions.messages.subscribe", S.SessionsMessagesSubscribeParams,
              S.SessionsMessagesSubscribeResult, READ,
              summary="get `session.message` events of one session on this socket")
def sessions_messages_subscribe(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    call.services.bus.subscribe(conv.session_topic(key), call.conn_id)
    return {"subscribed": True, "key": key}


@table.method("sessions.messages.unsubscribe", S.SessionsMessagesSubscribeParams,
              S.SessionsMessagesUnsubscribeResult, READ,
              summary="stop `session.message` events of one session on this socket")
def sessions_messages_unsubscribe(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    call.services.bus.unsubscribe(conv.session_topic(key), call.conn_id)
    return {"subscribed": False, "key": key}


@table.method("sessions.describe", S.SessionsDescribeParams, S.SessionsDescribeResult, READ,
              summary="one session's row")
def sessions_describe(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    record = conv.sessions.get(key)
    # An unknown key (the main session before its first turn too) is `session: null`, as
    # the reference answers, not an error.
    return {"session": conv.session_row(record, params) if record is not None else None}


@table.method("sessions.resolve", S.SessionsResolveParams, S.SessionsResolveResult, READ,
              summary="the full key of a session named by key, label or session id")
def sessions_resolve(call, params):
    conv = _conv(call)
    records = conv.sessions.list()
    wanted = params.key or params.label or params.session_id
    if not wanted:
        raise invalid_request("sessions.resolve needs key, label or sessionId")
    key, _agent = conv.normalize_key(wanted) if params.key else (None, None)
    for record in records:
        if (key and record.key == key) or (params.label and record.label == params.label) or \
                (params.session_id and record.session_id == params.session_id):
            out = {"ok": True, "key": record.key, "agentId": record.agent_id}
            if record.label:
                out["displayName"] = record.label
            return out
    raise invalid_request(f"no session matches {wanted!r}")


# sessions.create params for what krabfast sessions do not have (subagents, forks,
# projects, worktrees, incognito, ...): refused when set, never silently dropped.
_CREATE_UNSUPPORTED = (
    "incognito", "catalog_id", "parent_session_key", "spawn_depth", "fork", "fork_from",
    "emit_command_hooks", "succeeds_parent", "task", "attachments", "project_id",
    "project_git_url", "worktree", "worktree_base_ref", "worktree_name", "cwd", "agent_runtime",
    "mentions", "worktree_source", "title_source", "repository", "timeout_ms")
# sessions.create params that are sessions.patch settings of the new session.
_CREATE_SETTINGS = ("label", "category", "model", "context_window", "thinking_level",
                    "fast_mode", "permission_mode", "tool_overrides", "exec_node")


@table.method("sessions.create", S.SessionsCreateParams, S.SessionsCreateResult, DYNAMIC_SCOPE,
              scope_for=_write_scope, durable=True, idempotent=True,
              summary="create a session (a new key unless one is given), its first message "
                      "optionally")
def sessions_create(call, params):
    conv = _conv(call)
    for name in _CREATE_UNSUPPORTED:
        if getattr(params, name) not in (UNSET, None, False, [], ""):
            raise invalid_request(f"sessions.create: {name} is not supported by krabfast")
    if params.visibility not in (UNSET, "shared"):
        raise invalid_request("sessions.create: only visibility \"shared\" is supported")
    name = params.key or f"dashboard:{uuid.uuid4()}"  # the reference's form for a new one
    key, agent = conv.normalize_key(name, params.agent_id or None)
    created = conv.sessions.get(key) is None
    settings = {n: getattr(params, n) for n in _CREATE_SETTINGS if getattr(params, n) is not UNSET}
    extra = {"display_name": params.display_name} if params.display_name is not UNSET else None
    record = conv.patch_session(key, agent, S.SessionsPatchParams(key=key, **settings), extra)
    if created:
        conv.sessions_changed(key, "create")
    out = {"ok": True, "key": key, "sessionId": record.session_id}
    if params.message not in (UNSET, ""):
        run_id = params.idempotency_key or str(uuid.uuid4())
        try:
            run, _ = conv.runs.submit(key, agent, params.message, run_id, kind="chat",
                                      origin=call.conn_id)
        except conv.ProviderError as exc:
            out["runStarted"] = False
            out["runError"] = {"code": "UNAVAILABLE", "message": str(exc), "retryable": True}
        else:
            out.update(runStarted=True, runId=run.run_id)
            record = conv.sessions.get(key)
            if conv.runs.active.get(key) is run:  # its message is in the transcript now
                out["messageSeq"] = record.message_count
    out["entry"] = conv.session_row(record)
    return out


@table.method("sessions.patch", S.SessionsPatchParams, S.SessionsPatchResult, DYNAMIC_SCOPE,
              scope_for=_write_scope, durable=True,
              summary="change a session's label, model, settings, archived/pinned/unread state")
def sessions_patch(call, params):
    conv = _conv(call)
    key, agent = conv.normalize_key(params.key)
    record = conv.patch_session(key, agent, params)
    reason = "patch"
    if params.archived is not UNSET:
        reason = "archive" if params.archived else "unarchive"
    conv.sessions_changed(key, reason)
    entry = conv.session_row(record)
    return {"ok": True, "key": key, "entry": entry,
            "resolved": {"modelProvider": entry["modelProvider"], "model": entry["model"]}}


@table.method("sessions.reset", S.SessionsResetParams, S.SessionsResetResult, ADMIN,
              durable=True, summary="start a session over (new session id, empty transcript)")
def sessions_reset(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    _known(conv, key)
    conv.runs.abort(key)
    record = conv.sessions.reset(key)
    conv.sessions_changed(key, "reset")
    return {"ok": True, "key": key, "entry": conv.session_row(record)}


@table.method("sessions.delete", S.SessionsDeleteParams, S.SessionsDeleteResult, DYNAMIC_SCOPE,
              scope_for=_write_scope, durable=True, summary="delete a session and its transcript")
def sessions_delete(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    conv.runs.abort(key)
    deleted = conv.sessions.delete(key)
    if deleted:
        conv.sessions_changed(key, "delete")
    return {"ok": True, "key": key, "deleted": deleted}


@table.method("sessions.abort", S.SessionsAbortParams, S.SessionsAbortResult, WRITE,
              summary="stop every run of a session")
def sessions_abort(call, params):
    conv = _conv(call)
    key, _agent = conv.normalize_key(params.key)
    run_ids = conv.runs.abort(key)
    return {"ok": True, "aborted": bool(run_ids), "runIds": run_ids}
