"""Chat: chat.send/history/startup/message.get/abort/inject params and results, the `chat`
event, and what a chat client lists before it talks: models.list (+ the `models.snapshot`
event), commands.list, system.info (reference names).

Params list every field the reference accepts (its JSON schema plus the few its gateway
accepts beyond it, e.g. `ChatHistoryParams.maxBytes`), so what its clients send decodes; the
ones krabfast does not act on are typed loosely. Messages on the wire: user content is the
raw string, assistant content a list of parts `[{"type": "text", "text": ...}]`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt, PosInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType

RunIdStr = Annotated[str, Meta(min_length=1, max_length=256)]
HistoryLimit = Annotated[int, Meta(ge=1, le=1000)]
Preview300 = Annotated[str, Meta(max_length=300)]
Str200 = Annotated[str, Meta(min_length=1, max_length=200)]
PermissionMode = Literal["read-only", "guarded", "workspace", "full"]
FastMode = Union[bool, Literal["auto"]]


class Open(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Wire object whose unknown keys are accepted (and dropped)."""


# -- messages --------------------------------------------------------------------------------

class ChatContentPart(Open):
    """One part of a message's content; krabfast writes `{"type": "text", "text": ...}`."""

    type: NonEmptyStr
    text: str | Unset = UNSET


class ChatMessageMeta(Model):
    """Transcript position the reference attaches to history messages (`__openclaw`)."""

    id: NonEmptyStr | Unset = UNSET
    seq: PosInt | Unset = UNSET
    idempotency_key: NonEmptyStr | Unset = UNSET


class ChatMessage(Model):
    """A transcript message as chat.history, chat events and session.message carry it."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ChatContentPart]
    timestamp: NonNegInt | Unset = UNSET
    stop_reason: str | Unset = UNSET
    usage: dict[str, Any] | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    # what answered an assistant message
    api: str | Unset = UNSET
    provider: str | Unset = UNSET
    model: str | Unset = UNSET
    meta: ChatMessageMeta | Unset = msgspec.field(default=UNSET, name="__openclaw")


def text_parts(text: str) -> list[ChatContentPart]:
    """Assistant content for `text`."""
    return [ChatContentPart(type="text", text=text)]


# -- chat.send -------------------------------------------------------------------------------

class ChatAttachment(Open):
    type: str | Unset = UNSET
    mime_type: str | Unset = UNSET
    file_name: str | Unset = UNSET
    content: Any = UNSET
    size_bytes: float | Unset = UNSET
    duration_ms: float | Unset = UNSET
    width: float | Unset = UNSET
    height: float | Unset = UNSET


class ChatSendParams(Model):
    """Send a user message to a session; the assistant's reply streams as `chat` events.
    `idempotencyKey` is the run id: a retry during the run answers `in_flight`, after it
    `ok`, without a second model request."""

    session_key: Annotated[str, Meta(min_length=1, max_length=512)]
    message: str
    idempotency_key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET
    intent: dict[str, Any] | Unset = UNSET
    thinking: str | Unset = UNSET
    fast_mode: FastMode | Unset = UNSET
    fast_auto_on_seconds: PosInt | Unset = UNSET
    queue_mode: Literal["steer", "followup", "collect", "interrupt"] | Unset = UNSET
    deliver: bool | Unset = UNSET
    originating_channel: str | Unset = UNSET
    originating_to: str | Unset = UNSET
    originating_account_id: str | Unset = UNSET
    originating_thread_id: str | Unset = UNSET
    reply_to_id: NonEmptyStr | Unset = UNSET
    attachments: list[ChatAttachment] | Unset = UNSET
    tool_bindings: dict[str, Any] | Unset = UNSET
    timeout_ms: NonNegInt | Unset = UNSET
    system_input_provenance: dict[str, Any] | Unset = UNSET
    system_provenance_receipt: str | Unset = UNSET
    suppress_command_interpretation: bool | Unset = UNSET
    expected_leaf_entry_id: NonEmptyStr | None | Unset = UNSET
    expected_session_routing_contract: NonEmptyStr | Unset = UNSET
    expected_permission_mode: PermissionMode | None | Unset = UNSET
    expected_tool_overrides: dict[str, Any] | None | Unset = UNSET
    work_context: Any = UNSET
    mentions: Any = UNSET


class ChatSendResult(Model):
    """`started` at once; a retry of a running send `in_flight`, of a finished one `ok`
    (or `error`)."""

    run_id: NonEmptyStr
    status: Literal["started", "in_flight", "ok", "error", "aborted"]


# -- chat.history / chat.startup -------------------------------------------------------------

class ChatHistoryParams(Model):
    """A page of a session's transcript (the newest `limit` messages; `offset` counts back
    from the newest)."""

    session_key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    cursor: str | Unset = UNSET
    limit: HistoryLimit | Unset = UNSET
    max_bytes: Annotated[int, Meta(ge=1024)] | Unset = UNSET
    offset: NonNegInt | Unset = UNSET
    pending_before: PosInt | Unset = UNSET
    input_run_ids: Annotated[list[RunIdStr], Meta(min_length=1, max_length=50)] | Unset = UNSET
    message_id: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET
    max_chars: Annotated[int, Meta(ge=1, le=500_000)] | Unset = UNSET


class ChatStartupParams(Model):
    """The Control UI's first history read: `chat.history` params, or a short link
    (`shortId` with `agentId`) to resolve first. It also subscribes the socket to session
    events; without a `chat.startup` answer the UI queues messages and never sends them."""

    session_key: NonEmptyStr | Unset = UNSET
    short_id: NonEmptyStr | Unset = UNSET
    slug_hint: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    cursor: str | Unset = UNSET
    limit: HistoryLimit | Unset = UNSET
    max_bytes: Annotated[int, Meta(ge=1024)] | Unset = UNSET
    offset: NonNegInt | Unset = UNSET
    pending_before: PosInt | Unset = UNSET
    input_run_ids: Annotated[list[RunIdStr], Meta(min_length=1, max_length=50)] | Unset = UNSET
    message_id: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET
    max_chars: Annotated[int, Meta(ge=1, le=500_000)] | Unset = UNSET

    def __post_init__(self) -> None:
        if self.session_key is UNSET:
            if self.short_id is UNSET or self.agent_id is UNSET:
                raise ValueError("needs sessionKey, or shortId with agentId")
        elif self.short_id is not UNSET or self.slug_hint is not UNSET:
            raise ValueError("sessionKey and shortId are exclusive")


class ChatPendingInput(Model):
    """Accepted input still waiting for a turn."""

    id: NonEmptyStr
    message: Any
    accepted_at: float
    state: Literal["queued", "cancelled", "interrupted"]
    run_id: RunIdStr | Unset = UNSET


class ChatPendingInputs(Model):
    items: Annotated[list[ChatPendingInput], Meta(max_length=20)]
    total: NonNegInt
    next_before: PosInt | Unset = UNSET


class ChatInFlightRun(Open):
    """The run still streaming into the session when history was read."""

    run_id: NonEmptyStr
    text: str | Unset = UNSET
    started_at: NonNegInt | Unset = UNSET


class ChatHistoryResult(Model):
    """A `chat.history` page (no cursor). An unknown session answers with no messages."""

    session_key: NonEmptyStr
    messages: list[ChatMessage]
    session_id: NonEmptyStr | Unset = UNSET
    pending_inputs: ChatPendingInputs | Unset = UNSET
    delta_cursor: str | Unset = UNSET
    offset: NonNegInt | Unset = UNSET
    next_offset: NonNegInt | Unset = UNSET
    has_more: bool | Unset = UNSET
    total_messages: NonNegInt | Unset = UNSET
    defaults: dict[str, Any] | Unset = UNSET
    session_info: dict[str, Any] | Unset = UNSET
    thinking_level: str | Unset = UNSET
    fast_mode: FastMode | Unset = UNSET
    verbose_level: str | Unset = UNSET
    in_flight_run: ChatInFlightRun | Unset = UNSET


class ChatStartupResult(ChatHistoryResult, kw_only=True):
    """`chat.history`'s answer, with how a short link resolved (a `SessionsResolveResult`)."""

    resolution: dict[str, Any] | Unset = UNSET


class ChatHistoryDeltaResult(Model):
    """`chat.history` with a `cursor`: what changed since it."""

    kind: Literal["delta"]
    messages: list[ChatMessage]
    delta_cursor: str
    session_info: Any
    in_flight_run: ChatInFlightRun | Unset = UNSET
    metadata: Any = UNSET
    pending_inputs: ChatPendingInputs | Unset = UNSET


class ChatHistoryResetResult(Model):
    """`chat.history` with a cursor the gateway cannot continue: reload from scratch."""

    kind: Literal["reset"]


# -- chat.message.get / chat.abort / chat.inject ---------------------------------------------

class ChatMessageGetParams(Model):
    session_key: NonEmptyStr
    message_id: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    max_chars: Annotated[int, Meta(ge=1, le=2_000_000)] | Unset = UNSET


class ChatMessageGetResult(Model):
    ok: bool
    message: ChatMessage | Unset = UNSET
    unavailable_reason: Literal["not_found", "oversized", "not_visible"] | Unset = UNSET


class ChatAbortParams(Model):
    """Abort `runId`, or without it every run of the session."""

    session_key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    preserve_side_runs: bool | Unset = UNSET


class ChatAbortResult(Model):
    ok: bool
    aborted: bool
    run_ids: list[NonEmptyStr]


class ChatInjectParams(Model):
    """Append an assistant message to the transcript without a model run (admin)."""

    session_key: NonEmptyStr
    message: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    label: Annotated[str, Meta(max_length=100)] | Unset = UNSET


class ChatInjectResult(Model):
    ok: bool
    message_id: NonEmptyStr


# -- the `chat` event ------------------------------------------------------------------------

ChatRunStartupPhase = Literal["preparing_workspace", "naming_worktree", "creating_worktree",
                              "running_setup", "provisioning_environment", "preparing_context",
                              "starting_model"]
ChatErrorKind = Literal["refusal", "timeout", "rate_limit", "context_length", "unknown"]


class _ChatEvent(Model, tag_field="state"):
    """Common to every `chat` event. `seq` is the run's, only non-decreasing."""

    run_id: NonEmptyStr
    session_key: NonEmptyStr
    seq: NonNegInt
    agent_id: NonEmptyStr | Unset = UNSET
    spawned_by: NonEmptyStr | Unset = UNSET


class ChatStatusEvent(_ChatEvent, tag="status", kw_only=True):
    """A start-up phase of the run, before the model answers."""

    phase: ChatRunStartupPhase


class ChatDeltaEvent(_ChatEvent, tag="delta", kw_only=True):
    """More of the reply: `deltaText` is the new suffix, `message` the reply so far."""

    delta_text: str
    message: ChatMessage | Unset = UNSET
    replace: bool | Unset = UNSET
    usage: dict[str, Any] | Unset = UNSET


class ChatFinalEvent(_ChatEvent, tag="final", kw_only=True):
    """The reply is complete (also what `chat.inject` broadcasts)."""

    message: ChatMessage | Unset = UNSET
    usage: dict[str, Any] | Unset = UNSET
    stop_reason: str | Unset = UNSET


class ChatAbortedEvent(_ChatEvent, tag="aborted", kw_only=True):
    """The run was aborted (`stopReason: "rpc"` after chat.abort); `message` is the partial
    reply, if any."""

    message: ChatMessage | Unset = UNSET
    error_message: str | Unset = UNSET
    stop_reason: str | Unset = UNSET


class ChatErrorDetail(Model):
    provider: Preview300 | Unset = UNSET
    model: Preview300 | Unset = UNSET
    failover_reason: Preview300 | Unset = UNSET
    provider_runtime_failure_kind: Preview300 | Unset = UNSET
    provider_error_type: Preview300 | Unset = UNSET
    http_status: Annotated[int, Meta(ge=100, le=599)] | Unset = UNSET
    provider_error_message_preview: Preview300 | Unset = UNSET


class ChatErrorEvent(_ChatEvent, tag="error", kw_only=True):
    """The run failed."""

    message: ChatMessage | Unset = UNSET
    error_message: str | Unset = UNSET
    error_kind: ChatErrorKind | Unset = UNSET
    error_detail: ChatErrorDetail | Unset = UNSET
    usage: dict[str, Any] | Unset = UNSET
    stop_reason: str | Unset = UNSET


# -- models.list / models.snapshot (agents re-exports these) -------------------------------

class ThinkingLevel(Model):
    """A thinking (reasoning effort) level a model offers."""

    id: NonEmptyStr
    label: NonEmptyStr


class ModelsListParams(Model):
    """The models a session can pick (view "configured": what the config names)."""

    agent_id: NonEmptyStr | Unset = UNSET
    include_provider_capabilities: bool | Unset = UNSET
    prepared_only: bool | Unset = UNSET
    refresh: bool | Unset = UNSET
    view: Literal["default", "configured", "provider-config", "all"] | Unset = UNSET
    # accepted by the reference gateway beyond its published schema
    session_key: NonEmptyStr | Unset = UNSET
    provider: NonEmptyStr | Unset = UNSET
    include_default_models: bool | Unset = UNSET
    include_details: bool | Unset = UNSET
    auth_profile_id: NonEmptyStr | Unset = UNSET


class ModelChoice(Model):
    """A model a session can use; `id` without the provider prefix."""

    id: NonEmptyStr
    name: NonEmptyStr
    provider: NonEmptyStr
    alias: NonEmptyStr | Unset = UNSET
    tags: list[NonEmptyStr] | Unset = UNSET
    available: bool | Unset = UNSET
    unavailable_reason: Literal["missing-auth", "auth-failed", "cooldown"] | Unset = UNSET
    unavailable_until: NonNegInt | Unset = UNSET
    context_window: PosInt | Unset = UNSET
    local: bool | Unset = UNSET  # with includeDetails: served from this machine
    reasoning: bool | Unset = UNSET
    thinking_levels: list[ThinkingLevel] | Unset = UNSET
    thinking_default: NonEmptyStr | Unset = UNSET
    effective_fast_mode: FastMode | Unset = UNSET
    supports_tools: bool | Unset = UNSET
    api_key_supported: bool | Unset = UNSET
    input: list[Literal["text", "image", "audio", "video", "document"]] | Unset = UNSET


class ModelsProviderOutcome(Model):
    provider: NonEmptyStr
    status: Literal["ready", "auth-rejected", "unavailable"]
    profile_id: NonEmptyStr | Unset = UNSET


class ModelsDefaultModels(Model):
    """view "configured": the models the gateway picks for its own work."""

    automatic_utility_model: NonEmptyStr | None


class ModelsListResult(Model):
    """Also the `catalog` of a `models.snapshot` event."""

    models: list[ModelChoice]
    provider_outcomes: list[ModelsProviderOutcome] | Unset = UNSET
    default_models: ModelsDefaultModels | Unset = UNSET


class ModelsSnapshotScope(Model):
    agent_id: NonEmptyStr | Unset = UNSET
    session_key: NonEmptyStr | Unset = UNSET


class ModelsSnapshotEvent(Model):
    """`models.snapshot`: the configured catalogue (`models.list` view "configured") for a
    scope, pushed to the Control UI."""

    catalog: ModelsListResult
    scope: ModelsSnapshotScope
    target: dict[str, Any] | Unset = UNSET


# -- commands.list ---------------------------------------------------------------------------

class CommandsListParams(Model):
    """The slash commands chat.send understands."""

    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    provider: NonEmptyStr | Unset = UNSET
    scope: Literal["text", "native", "both"] | Unset = UNSET
    include_args: bool | Unset = UNSET


class CommandArg(Model):
    name: Str200
    description: Annotated[str, Meta(max_length=500)]
    type: Literal["string", "number", "boolean"]
    required: bool | Unset = UNSET
    dynamic: bool | Unset = UNSET


class CommandEntry(Model):
    """A slash command (e.g. /new, /reset, /model)."""

    name: Str200
    description: Annotated[str, Meta(max_length=2000)]
    source: Literal["native", "skill", "plugin"]
    scope: Literal["text", "native", "both"]
    accepts_args: bool
    native_name: Str200 | Unset = UNSET
    text_aliases: Annotated[list[Str200], Meta(max_length=20)] | Unset = UNSET
    category: Literal["session", "options", "status", "management", "media",
                      "tools"] | Unset = UNSET
    args: Annotated[list[CommandArg], Meta(max_length=20)] | Unset = UNSET


class CommandsListResult(Model):
    commands: list[CommandEntry]


# -- system.info -----------------------------------------------------------------------------

class SystemInfoParams(Model):
    """No params."""


class SystemInfoResult(Model):
    """The gateway host (`nodeVersion` carries the Python version for krabfast)."""

    machine_name: str
    hostname: str
    platform: str
    release: str
    arch: str
    os_label: str
    node_version: str
    pid: int
    uptime_ms: int
    cpu_count: int
    memory_total_bytes: int
    memory_free_bytes: int
    lan_address: str | Unset = UNSET
    port: int | Unset = UNSET
    process_instance_id: NonEmptyStr | Unset = UNSET
    cpu_model: str | Unset = UNSET
    load_average: tuple[float, float, float] | Unset = UNSET
    disk_total_bytes: int | Unset = UNSET
    disk_available_bytes: int | Unset = UNSET
    disk_path: str | Unset = UNSET


ChatEvent = Union[ChatStatusEvent, ChatDeltaEvent, ChatFinalEvent, ChatAbortedEvent, ChatErrorEvent]

__all__ = [name for name in list(globals()) if name[:1].isupper() and not name.startswith("_")
           and name not in ("Annotated", "Any", "Literal", "Union", "Meta", "Model", "Unset")]
__all__ += ["text_parts", "UNSET"]
