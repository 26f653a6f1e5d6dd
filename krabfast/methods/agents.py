"""Agent family: agent (two answers on one request id), agent.wait, agents.list,
agent.identity.get. krabfast hosts one agent, `main` (the reference's default)."""

from __future__ import annotations

from msgspec import UNSET

from krabfast.protocol import agents as A
from krabfast.protocol.errors import ErrorCode, GatewayError, invalid_request
from krabfast.protocol.methods import MethodTable, Reply
from krabfast.protocol.scopes import DYNAMIC_SCOPE, READ, WRITE

table = MethodTable()

# The reference's identity of an agent its config names nothing for.
DEFAULT_IDENTITY = {"name": "Assistant", "nameSource": "default", "avatar": "A"}
DEFAULT_WAIT_MS = 30_000
AGENT_TIMEOUT_S = 600


def _conv(call):
    return call.services.conversations


def _write_scope(params) -> str:
    """The reference's `agent` scope is params-dependent (`dynamic`); the turns krabfast
    runs (no delivery to channels, no elevated tools) need operator.write."""
    return WRITE


@table.method("agent", A.AgentParams, A.AgentResult, DYNAMIC_SCOPE, scope_for=_write_scope,
              summary="run an agent turn: `accepted` at once, the outcome as a second answer")
def agent(call, params):
    conv = _conv(call)
    key, agent_id = conv.normalize_key(params.session_key or None, params.agent_id or None)
    if agent_id != "main":
        raise invalid_request(f"unknown agent id: {agent_id}")
    run_id = params.idempotency_key
    run = conv.runs.get(run_id)
    launch = None
    refusal = conv.thinking_refusal(key, params.thinking) if run is None else None
    if refusal is not None:  # as the reference: accepted, then refused; no run, no model
        accepted = {"runId": run_id, "sessionKey": key, "agentId": agent_id,
                    "status": "accepted", "acceptedAt": conv.clock_ms()}
        return Reply(accepted, final=_refused(run_id, refusal))
    if run is None:
        try:
            run, _ = conv.runs.submit(key, agent_id, params.message, run_id, kind="agent",
                                      origin=call.conn_id, launch=False,
                                      thinking=params.thinking or None)
        except conv.ProviderError as exc:
            raise GatewayError(ErrorCode.UNAVAILABLE, str(exc), retryable=True) from None
        # As chat.send: "accepted" first, then the run starts eagerly (the model request
        # goes out in this turn).
        launch = lambda: conv.runs.launch(run, eager=True)  # noqa: E731
    accepted = {"runId": run.run_id, "sessionKey": run.session_key, "agentId": run.agent_id,
                "status": "accepted", "acceptedAt": conv.clock_ms()}
    timeout_s = params.timeout if params.timeout is not UNSET else AGENT_TIMEOUT_S
    return Reply(accepted, after=launch, final=_final(conv, run, timeout_s))


async def _final(conv, run, timeout_s: float) -> dict:
    outcome = await conv.runs.wait(run.run_id, int(timeout_s * 1000))
    status = outcome["status"]
    if status == "error" and run.error and run.error_kind == "bad_response":
        # As the reference: a stream it could not read is a completed answer with an error
        # payload, not a failed answer.
        return {"runId": run.run_id, "status": "error", "summary": "failed",
                "result": {"payloads": [{"text": run.error, "isError": True, "mediaUrl": None}]}}
    if status == "error" and run.error:
        raise _failed(run.run_id, run.error)  # the CLI prints the error
    if status == "aborted":
        status = "error"  # the reference reports an aborted agent run as an error
    final = {"runId": run.run_id, "status": status, "summary": _summary(status)}
    if status == "ok":
        final["result"] = {"payloads": [{"text": run.text}]}
    elif run.error:
        final["error"] = run.error
    return final


async def _refused(run_id: str, message: str):
    raise _failed(run_id, message)


def _failed(run_id: str, message: str) -> GatewayError:
    """`agent`'s failed second answer, as the reference's: UNAVAILABLE, with the outcome as
    its payload."""
    return GatewayError(ErrorCode.UNAVAILABLE, message,
                        payload={"runId": run_id, "status": "error", "summary": message})


def _summary(status: str) -> str:
    return {"ok": "completed", "timeout": "timed out"}.get(status, "failed")


@table.method("agent.wait", A.AgentWaitParams, A.AgentWaitResult, WRITE,
              summary="wait for a run's outcome (a timeout does not stop the run)")
async def agent_wait(call, params):
    timeout = params.timeout_ms if params.timeout_ms is not UNSET else DEFAULT_WAIT_MS
    return await _conv(call).runs.wait(params.run_id, timeout)


@table.method("agents.list", A.AgentsListParams, A.AgentsListResult, READ,
              summary="the agents this gateway hosts (one: main)")
def agents_list(call, params):
    # As the reference lists its one default agent: no name of its own, its model and the
    # thinking levels that model offers.
    model = _conv(call).models.default
    return {"defaultId": "main", "ownership": "sole", "selectionRequired": False,
            "mainKey": "main", "scope": "per-sender",
            "agents": [{"id": "main", **model.thinking.wire_fields(),
                        "model": {"primary": model.id}}]}


@table.method("agent.identity.get", A.AgentIdentityParams, A.AgentIdentityResult, READ,
              summary="the agent's display identity")
def agent_identity_get(call, params):
    agent_id = params.agent_id or "main"
    if agent_id != "main":
        raise invalid_request(f"unknown agent id: {agent_id}")
    return {"agentId": "main", **DEFAULT_IDENTITY}
