"""Agent runs and agents: agent, agent.wait, the `agent` event, agents.list and
agent.identity.get (reference names). Re-exported for convenience: models.list /
commands.list / system.info (defined in chat) and `SessionDefaults`
(hello-ok.snapshot.sessionDefaults, defined with the handshake).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

# models.list, commands.list and system.info live with chat (re-exported here).
from krabfast.protocol.chat import (CommandArg, CommandEntry, CommandsListParams,  # noqa: F401
                                    CommandsListResult, FastMode, ModelChoice, ModelsListParams,
                                    ModelsListResult, ModelsProviderOutcome, ModelsSnapshotEvent,
                                    ModelsSnapshotScope, Open, PermissionMode, SystemInfoParams,
                                    SystemInfoResult, ThinkingLevel)
# hello-ok.snapshot.sessionDefaults is defined with the handshake; re-exported here.
from krabfast.protocol.handshake import SessionDefaults
from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt, PosInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType



# -- agent -----------------------------------------------------------------------------------

class AgentParams(Model):
    """Run the agent on `message`. `idempotencyKey` is the run id: the first answer is
    `AgentAcceptedResult`, the second (same request id) `AgentFinalResult`; a retry answers
    the cached outcome."""

    message: NonEmptyStr
    idempotency_key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    provider: str | Unset = UNSET
    model: str | Unset = UNSET
    to: str | Unset = UNSET
    reply_to: str | Unset = UNSET
    session_id: str | Unset = UNSET
    session_key: str | Unset = UNSET
    expected_existing_session_id: NonEmptyStr | Unset = UNSET
    thinking: str | Unset = UNSET
    deliver: bool | Unset = UNSET
    attachments: list[Any] | Unset = UNSET
    channel: str | Unset = UNSET
    reply_channel: str | Unset = UNSET
    account_id: str | Unset = UNSET
    reply_account_id: str | Unset = UNSET
    thread_id: str | Unset = UNSET
    group_id: str | Unset = UNSET
    group_channel: str | Unset = UNSET
    group_space: str | Unset = UNSET
    timeout: NonNegInt | Unset = UNSET
    best_effort_deliver: bool | Unset = UNSET
    lane: str | Unset = UNSET
    cwd: NonEmptyStr | Unset = UNSET
    cleanup_bundle_mcp_on_run_end: bool | Unset = UNSET
    model_run: bool | Unset = UNSET
    prompt_mode: Literal["full", "minimal", "none"] | Unset = UNSET
    extra_system_prompt: str | Unset = UNSET
    bootstrap_context_mode: Literal["full", "lightweight"] | Unset = UNSET
    bootstrap_context_run_kind: Literal["default", "heartbeat", "cron"] | Unset = UNSET
    acp_turn_source: Literal["manual_spawn"] | Unset = UNSET
    internal_runtime_handoff_id: NonEmptyStr | Unset = UNSET
    internal_execution_identity_retry: bool | Unset = UNSET
    internal_execution_identity_recovery_attempt: PosInt | Unset = UNSET
    exec_approval_followup_expected_session_id: NonEmptyStr | Unset = UNSET
    internal_events: list[dict[str, Any]] | Unset = UNSET
    input_provenance: dict[str, Any] | Unset = UNSET
    suppress_prompt_persistence: bool | Unset = UNSET
    session_effects: Literal["visible", "internal"] | Unset = UNSET
    source_reply_delivery_mode: Literal["automatic", "message_tool_only"] | Unset = UNSET
    disable_message_tool: bool | Unset = UNSET
    swarm_collector: bool | Unset = UNSET
    swarm_output_schema: dict[str, Any] | Unset = UNSET
    force_restart_safe_tools: bool | Unset = UNSET
    force_code_mode_tools: bool | Unset = UNSET
    voice_wake_trigger: str | Unset = UNSET
    label: Annotated[str, Meta(min_length=1, max_length=512)] | Unset = UNSET


class AgentAcceptedResult(Model):
    """The first answer to `agent`, at once (an interim ack for clients expecting a final)."""

    run_id: NonEmptyStr
    status: Literal["accepted"]
    accepted_at: NonNegInt
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET


class AgentPayload(Open):
    """One reply payload of a finished run."""

    text: str | Unset = UNSET
    media_url: str | None | Unset = UNSET


class AgentRunOutput(Open):
    payloads: list[AgentPayload]
    meta: dict[str, Any] | Unset = UNSET


class AgentFinalResult(Model):
    """The second answer to `agent` (same request id) when the run ends."""

    run_id: NonEmptyStr
    status: Literal["ok", "error", "timeout", "aborted"]
    summary: str
    result: AgentRunOutput | Unset = UNSET
    error: str | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET


class AgentResult(Model):
    """Either answer to `agent`, as one shape (the method's declared result): the first has
    `status: "accepted"` and `acceptedAt` (`AgentAcceptedResult`), the second the outcome
    (`AgentFinalResult`: `summary`, `result` or `error`)."""

    run_id: NonEmptyStr
    status: Literal["accepted", "ok", "error", "timeout", "aborted"]
    accepted_at: NonNegInt | Unset = UNSET
    summary: str | Unset = UNSET
    result: AgentRunOutput | Unset = UNSET
    error: str | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET


class AgentWaitParams(Model):
    """Wait for a run to end (default 30 s; a timeout does not stop the run)."""

    run_id: NonEmptyStr
    timeout_ms: NonNegInt | Unset = UNSET


class AgentWaitResult(Model):
    """`timeout` also for a run the gateway does not know."""

    run_id: NonEmptyStr
    status: Literal["ok", "error", "timeout", "aborted"]
    started_at: NonNegInt | Unset = UNSET
    ended_at: NonNegInt | Unset = UNSET
    error: str | Unset = UNSET


# -- agent events ----------------------------------------------------------------------------

class AgentLifecycleData(Model):
    phase: Literal["start", "end", "error"]
    started_at: NonNegInt | Unset = UNSET
    ended_at: NonNegInt | Unset = UNSET
    error: str | Unset = UNSET
    aborted: bool | Unset = UNSET
    stop_reason: str | Unset = UNSET


class AgentAssistantData(Model):
    """`text` is the reply so far, `delta` what this event adds."""

    text: str
    delta: str


class AgentToolData(Open):
    phase: Literal["start", "update", "result"]
    name: NonEmptyStr
    tool_call_id: NonEmptyStr
    args: Any = UNSET
    partial_result: Any = UNSET
    result: Any = UNSET
    is_error: bool | Unset = UNSET


class AgentEvent(Model):
    """The `agent` event, any stream (`lifecycle`, `assistant`, `tool`, ...). `seq` counts
    per run. The reference's published schema has no sessionKey/agentId here, though its
    clients read them when present."""

    run_id: NonEmptyStr
    seq: NonNegInt
    stream: NonEmptyStr
    ts: NonNegInt
    data: dict[str, Any]
    spawned_by: NonEmptyStr | Unset = UNSET
    is_heartbeat: bool | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET  # on lifecycle events, as the reference sends


class _AgentStreamEvent(Model, tag_field="stream"):
    run_id: NonEmptyStr
    seq: NonNegInt
    ts: NonNegInt
    spawned_by: NonEmptyStr | Unset = UNSET
    is_heartbeat: bool | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET  # on lifecycle events, as the reference sends


class AgentLifecycleEvent(_AgentStreamEvent, tag="lifecycle", kw_only=True):
    """`agent` event, stream `lifecycle`: the run started, ended or failed."""

    data: AgentLifecycleData


class AgentAssistantEvent(_AgentStreamEvent, tag="assistant", kw_only=True):
    """`agent` event, stream `assistant`: more reply text."""

    data: AgentAssistantData


class AgentToolEvent(_AgentStreamEvent, tag="tool", kw_only=True):
    """`agent` event, stream `tool` (only to sockets with caps ["tool-events"])."""

    data: AgentToolData


# -- agents.list / agent.identity.get --------------------------------------------------------

class AgentsListParams(Model):
    pass


class AgentIdentity(Model):
    name: NonEmptyStr | Unset = UNSET
    theme: NonEmptyStr | Unset = UNSET
    emoji: NonEmptyStr | Unset = UNSET
    avatar: NonEmptyStr | Unset = UNSET
    avatar_url: NonEmptyStr | Unset = UNSET


class AgentModel(Model):
    primary: NonEmptyStr | Unset = UNSET
    fallbacks: list[NonEmptyStr] | Unset = UNSET


class AgentSummary(Model):
    id: NonEmptyStr
    kind: Literal["agent", "system"] | Unset = UNSET
    created_via: Literal["operator", "agent", "claw"] | Unset = UNSET
    creator_agent_id: NonEmptyStr | None | Unset = UNSET
    created_at: NonNegInt | Unset = UNSET
    name: NonEmptyStr | Unset = UNSET
    identity: AgentIdentity | Unset = UNSET
    workspace: NonEmptyStr | Unset = UNSET
    workspace_git: bool | Unset = UNSET
    model: AgentModel | Unset = UNSET
    thinking_levels: list[ThinkingLevel] | Unset = UNSET
    thinking_options: list[NonEmptyStr] | Unset = UNSET
    thinking_default: NonEmptyStr | Unset = UNSET
    default_permission_mode: PermissionMode | Unset = UNSET


class AgentsListResult(Model):
    default_id: NonEmptyStr
    main_key: NonEmptyStr
    scope: Literal["per-sender", "global"]
    agents: list[AgentSummary]
    ownership: Literal["sole", "legacy", "explicit"] | Unset = UNSET
    selection_required: bool | Unset = UNSET


class AgentIdentityParams(Model):
    agent_id: NonEmptyStr | Unset = UNSET
    session_key: str | Unset = UNSET


class AgentIdentityResult(Model):
    agent_id: NonEmptyStr
    name: NonEmptyStr | Unset = UNSET
    name_source: Literal["config", "agent", "workspace", "default"] | Unset = UNSET
    avatar: NonEmptyStr | Unset = UNSET
    avatar_source: NonEmptyStr | Unset = UNSET
    avatar_status: Literal["none", "local", "remote", "data"] | Unset = UNSET
    avatar_reason: NonEmptyStr | Unset = UNSET
    emoji: NonEmptyStr | Unset = UNSET


AgentStreamEvent = Union[AgentLifecycleEvent, AgentAssistantEvent, AgentToolEvent]

__all__ = [name for name in list(globals()) if name[:1].isupper() and not name.startswith("_")]
