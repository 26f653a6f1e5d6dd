"""Chat family: chat.send, chat.history, chat.startup, chat.message.get, chat.abort,
chat.inject (the reference's names and shapes; the run itself: gateway/runs.py).

Slash commands krabfast implements in `chat.send` (also listed by `commands.list`):
`/new` and `/reset` start the session over (a new session id, an empty transcript), `/stop`
aborts the session's runs.
"""

from __future__ import annotations

from msgspec import UNSET

from krabfast.protocol import chat as C
from krabfast.protocol.errors import ErrorCode, GatewayError, invalid_request
from krabfast.protocol.methods import MethodTable, Reply
from krabfast.protocol.scopes import ADMIN, READ, WRITE

table = MethodTable()

HISTORY_DEFAULT_LIMIT = 200
HISTORY_MAX_LIMIT = 1000

# name -> what it does (commands.list describes these).
SLASH_COMMANDS = {
    "new": "Start a new session (clears the conversation)",
    "reset": "Reset the current session (clears the conversation)",
    "stop": "Stop the running reply",
}


def _conv(call):
    return call.services.conversations


def _key(call, params) -> tuple[str, str]:
    agent = getattr(params, "agent_id", None)
    return _conv(call).normalize_key(params.session_key, agent if isinstance(agent, str) else None)


def _provider_failure(exc) -> GatewayError:
    return GatewayError(ErrorCode.UNAVAILABLE, str(exc), retryable=True)


@table.method("chat.send", C.ChatSendParams, C.ChatSendResult, WRITE,
              summary="send a message to a session; the reply streams as `chat` events")
def chat_send(call, params):
    conv = _conv(call)
    key, agent = _key(call, params)
    text = params.message
    command = _slash(text)
    if command is not None:
        return _run_command(call, conv, key, agent, command, params.idempotency_key)
    run = conv.runs.get(params.idempotency_key)
    if run is not None:  # a retry: never a second model request
        status = "in_flight" if run.done is not None and not run.done.done() else "ok"
        return {"runId": run.run_id, "status": status}
    try:
        run, _ = conv.runs.submit(key, agent, text, params.idempotency_key, kind="chat",
                                  origin=call.conn_id, launch=False,
                                  thinking=params.thinking or None)
    except conv.ProviderError as exc:
        raise _provider_failure(exc) from None
    # Answered first, then started eagerly: the model request goes out in this same turn
    # and no event of the run can reach the caller before its `started`.
    return Reply({"runId": run.run_id, "status": "started"},
                 after=lambda: conv.runs.launch(run, eager=True))


def _slash(text: str) -> str | None:
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    name = stripped[1:].split(None, 1)[0].lower() if len(stripped) > 1 else ""
    return name if name in SLASH_COMMANDS else None


def _run_command(call, conv, key: str, agent: str, command: str, run_id: str) -> dict:
    if command == "stop":
        conv.runs.abort(key)
        return {"runId": run_id, "status": "ok"}
    conv.runs.abort(key)
    conv.sessions.ensure(key, agent)
    conv.sessions.reset(key)
    conv.sessions_changed(key, "new" if command == "new" else "reset")  # the reference's reasons
    # Watchers see the command's answer as a final chat message, as the reference's
    # command replies arrive.
    conv.bus.publish("chat", {"runId": run_id, "sessionKey": key, "agentId": agent, "seq": 1,
                              "state": "final", "message": {
                                  "role": "assistant", "timestamp": conv.clock_ms(),
                                  "content": [{"type": "text", "text": "New session started."}]}})
    return {"runId": run_id, "status": "ok"}


@table.method("chat.history", C.ChatHistoryParams, C.ChatHistoryResult, READ,
              summary="a session's transcript, newest `limit` messages, oldest first")
def chat_history(call, params):
    conv = _conv(call)
    key, _agent = _key(call, params)
    return _history_page(conv, key, params)


def _history_page(conv, key: str, params) -> dict:
    """chat.history's page of `key` for params' limit/offset (chat.startup's too)."""
    record = conv.sessions.get(key)
    if record is None:
        return {"sessionKey": key, "messages": [], "hasMore": False, "totalMessages": 0}
    limit = params.limit if params.limit is not UNSET else HISTORY_DEFAULT_LIMIT
    limit = max(1, min(int(limit), HISTORY_MAX_LIMIT))
    offset = params.offset if params.offset is not UNSET else 0
    # Pages count back from the newest message: offset 0 is the newest `limit`; the next
    # page starts at `nextOffset`. Sequence numbers are 1..total within a session id.
    every = conv.sessions.messages(key)
    total = len(every)
    end = max(0, total - offset)
    page = every[max(0, end - limit):end]
    out = {"sessionKey": key, "sessionId": record.session_id,
           "messages": [conv.message_json(m) for m in page], "offset": offset,
           "hasMore": end - len(page) > 0, "totalMessages": total}
    if out["hasMore"]:
        out["nextOffset"] = offset + len(page)
    return out


@table.method("chat.startup", C.ChatStartupParams, C.ChatStartupResult, READ,
              summary="what a chat page needs before its first message (session, model)")
def chat_startup(call, params):
    conv = _conv(call)
    key, agent = _key(call, params)
    model = conv.models.default
    # chat.history's page (ChatStartupResult): the reference's Control UI shows a chat it
    # opens from this answer alone, so without the messages a reload showed it empty.
    out = _history_page(conv, key, params)
    out.update({"agentId": agent, "ready": True, "model": model.id,
                "modelConfigured": conv.models.configured})
    return out


@table.method("chat.message.get", C.ChatMessageGetParams, C.ChatMessageGetResult, READ,
              summary="one transcript message by id")
def chat_message_get(call, params):
    conv = _conv(call)
    key, _agent = _key(call, params)
    message = conv.sessions.message(key, params.message_id)
    if message is None:
        raise invalid_request("unknown messageId")
    return {"sessionKey": key, "message": conv.message_json(message)}


@table.method("chat.abort", C.ChatAbortParams, C.ChatAbortResult, WRITE,
              summary="stop a session's run (or all of its runs)")
def chat_abort(call, params):
    conv = _conv(call)
    key, _agent = _key(call, params)
    run_ids = conv.runs.abort(key, params.run_id or None)
    return {"ok": True, "aborted": bool(run_ids), "runIds": run_ids}


@table.method("chat.inject", C.ChatInjectParams, C.ChatInjectResult, ADMIN,
              summary="add an assistant message to a transcript without a model run")
def chat_inject(call, params):
    conv = _conv(call)
    key, agent = _key(call, params)
    conv.sessions.ensure(key, agent)
    now = conv.clock_ms()
    text = params.message
    message = conv.sessions.append_message(key, "assistant", [{"type": "text", "text": text}],
                                           stop_reason="injected", ts=now)
    run_id = f"inject-{message.message_id}"
    conv.bus.publish("chat", {"runId": run_id, "sessionKey": key, "agentId": agent, "seq": 1,
                              "state": "final", "message": conv.message_json(message)})
    conv.session_message(key, message)
    return {"ok": True, "messageId": message.message_id}

