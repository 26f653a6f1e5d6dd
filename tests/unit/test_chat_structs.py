"""Chat, session and agent Structs against the reference's published JSON schema: params
decode what the reference's clients send (and accept every field the reference does, with
the same required ones); results and events encode to JSON the reference validates."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import pytest

from krabfast.protocol import agents as A
from krabfast.protocol import chat as C
from krabfast.protocol import sessions as S
from tests import refschema

pytestmark = pytest.mark.skipif(not refschema.available(), reason="reference schema not installed")


def _defs() -> dict:
    return refschema._reference_schema()["definitions"]


def _wire_fields(cls) -> dict[str, bool]:
    """Wire name -> required, for a Struct (its tag field counts as required)."""
    out = {f.encode_name: f.required for f in msgspec.structs.fields(cls)}
    info = msgspec.inspect.type_info(cls)
    if info.tag_field is not None:
        out[info.tag_field] = True
    return out


# Params Struct -> reference definition.
PARAMS = {
    C.ChatSendParams: "ChatSendParams", C.ChatHistoryParams: "ChatHistoryParams",
    C.ChatMessageGetParams: "ChatMessageGetParams", C.ChatAbortParams: "ChatAbortParams",
    C.ChatInjectParams: "ChatInjectParams",
    A.AgentParams: "AgentParams", A.AgentWaitParams: "AgentWaitParams",
    A.AgentIdentityParams: "AgentIdentityParams", A.AgentsListParams: "AgentsListParams",
    A.ModelsListParams: "ModelsListParams", A.CommandsListParams: "CommandsListParams",
    A.SystemInfoParams: "SystemInfoParams",
    S.SessionsListParams: "SessionsListParams", S.SessionsCreateParams: "SessionsCreateParams",
    S.SessionsPatchParams: "SessionsPatchParams", S.SessionsResetParams: "SessionsResetParams",
    S.SessionsDeleteParams: "SessionsDeleteParams", S.SessionsAbortParams: "SessionsAbortParams",
    S.SessionsDescribeParams: "SessionsDescribeParams",
    S.SessionsResolveParams: "SessionsResolveParams",
    S.SessionsMessagesSubscribeParams: "SessionsMessagesSubscribeParams",
    S.SessionsMessagesUnsubscribeParams: "SessionsMessagesUnsubscribeParams",
}

# Result/event Struct -> reference definition (closed ones: every field we have must exist).
RESULTS = {
    C.ChatHistoryDeltaResult: "ChatHistoryDeltaResult",
    C.ChatHistoryResetResult: "ChatHistoryResetResult",
    C.ChatMessageGetResult: "ChatMessageGetResult",
    C.ChatStatusEvent: "ChatStatusEvent", C.ChatDeltaEvent: "ChatDeltaEvent",
    C.ChatFinalEvent: "ChatFinalEvent", C.ChatAbortedEvent: "ChatAbortedEvent",
    C.ChatErrorEvent: "ChatErrorEvent",
    A.AgentIdentityResult: "AgentIdentityResult", A.AgentsListResult: "AgentsListResult",
    A.AgentSummary: "AgentSummary", A.ModelsListResult: "ModelsListResult",
    A.ModelChoice: "ModelChoice", A.CommandsListResult: "CommandsListResult",
    A.CommandEntry: "CommandEntry", A.SystemInfoResult: "SystemInfoResult",
    S.SessionRow: "SessionRow", S.SessionsCreateResult: "SessionsCreateResult",
    S.SessionsDeleteResult: "SessionsDeleteResult",
    S.SessionsResolveCandidate: "SessionsResolveCandidate",
    A.AgentEvent: "AgentEvent", A.AgentLifecycleEvent: "AgentEvent",
    A.AgentAssistantEvent: "AgentEvent", A.AgentToolEvent: "AgentEvent",
}
# Our fields the reference's closed definition lacks, on purpose: what the live reference
# sends beyond its published schema (models.list: test_models_list_matches_reference).
EXTRA_OK = {"AgentEvent": {"sessionKey", "agentId", "sessionId"}, "ModelChoice": {"local"},
            "ModelsListResult": {"defaultModels"}}


@pytest.mark.parametrize("cls,name", PARAMS.items(), ids=lambda v: getattr(v, "__name__", v))
def test_params_accept_every_reference_field_and_require_the_same(cls, name):
    ref = _defs()[name]
    ours = _wire_fields(cls)
    missing = set(ref.get("properties", {})) - set(ours)
    assert not missing, f"{cls.__name__} rejects reference fields {sorted(missing)}"
    assert {k for k, req in ours.items() if req} == set(ref.get("required", []))


@pytest.mark.parametrize("cls,name", RESULTS.items(), ids=lambda v: getattr(v, "__name__", v))
def test_results_only_carry_fields_the_reference_knows(cls, name):
    ref = _defs()[name]
    ours = _wire_fields(cls)
    if ref.get("additionalProperties") is False:
        unknown = set(ours) - set(ref["properties"]) - EXTRA_OK.get(name, set())
        assert not unknown, f"{cls.__name__} has fields the reference refuses: {sorted(unknown)}"
    required = set(ref.get("required", []))
    assert required <= {k for k, req in ours.items() if req}, "reference-required field optional"


def _json(value) -> dict:
    return json.loads(msgspec.json.encode(value))


# -- frames the reference's clients send ---------------------------------------------------------

CLIENT_PARAMS = [
    # Control UI (dist/control-ui) chat
    ("chat.send", C.ChatSendParams, {"sessionKey": "agent:main:main", "message": "hello",
                                     "deliver": False, "expectedLeafEntryId": None,
                                     "idempotencyKey": "7d7c1f8e-0d0b-4a8e-9d39-3c1b8b4b8d51"}),
    ("chat.send", C.ChatSendParams, {"sessionKey": "agent:main:main", "message": "look",
                                     "idempotencyKey": "k2", "thinking": "low",
                                     "attachments": [{"type": "image", "mimeType": "image/png",
                                                      "fileName": "a.png", "content": "iVBOR"}]}),
    ("chat.history", C.ChatHistoryParams, {"sessionKey": "agent:main:main", "limit": 200}),
    ("chat.history", C.ChatHistoryParams, {"sessionKey": "agent:main:main", "limit": 50,
                                           "maxBytes": 4_000_000, "cursor": "c1"}),
    ("chat.startup", C.ChatStartupParams, {"sessionKey": "agent:main:main", "limit": 200}),
    ("chat.startup", C.ChatStartupParams, {"shortId": "ab12", "agentId": "main", "limit": 100}),
    ("chat.message.get", C.ChatMessageGetParams, {"sessionKey": "agent:main:main",
                                                  "messageId": "m1", "maxChars": 100000}),
    ("chat.abort", C.ChatAbortParams, {"sessionKey": "agent:main:main", "runId": "r1"}),
    ("chat.abort", C.ChatAbortParams, {"sessionKey": "agent:main:main"}),
    ("chat.inject", C.ChatInjectParams, {"sessionKey": "agent:main:main", "message": "note",
                                         "label": "system"}),
    # CLI / gateway-client agent runs
    ("agent", A.AgentParams, {"message": "hi", "idempotencyKey": "run-1", "agentId": "main",
                              "sessionKey": "agent:main:main", "deliver": False,
                              "timeout": 600, "channel": "webchat"}),
    ("agent.wait", A.AgentWaitParams, {"runId": "run-1", "timeoutMs": 30000}),
    ("agents.list", A.AgentsListParams, {}),
    ("agent.identity.get", A.AgentIdentityParams, {"sessionKey": "agent:main:main"}),
    ("models.list", A.ModelsListParams, {"view": "configured", "agentId": "main"}),
    ("commands.list", A.CommandsListParams, {"agentId": "main", "scope": "text",
                                             "includeArgs": True}),
    ("system.info", A.SystemInfoParams, {}),
    ("sessions.list", S.SessionsListParams, {"includeGlobal": True, "includeUnknown": True,
                                             "limit": 120, "includeDerivedTitles": True,
                                             "includeLastMessage": True, "archived": "all"}),
    ("sessions.subscribe", S.SessionsSubscribeParams, {}),
    ("sessions.messages.subscribe", S.SessionsMessagesSubscribeParams, {"key": "agent:main:main"}),
    ("sessions.messages.unsubscribe", S.SessionsMessagesUnsubscribeParams,
     {"key": "agent:main:main"}),
    ("sessions.describe", S.SessionsDescribeParams, {"key": "agent:main:main",
                                                     "includeLastMessage": True}),
    ("sessions.resolve", S.SessionsResolveParams, {"label": "Inbox", "agentId": "main",
                                                   "allowMissing": True}),
    ("sessions.create", S.SessionsCreateParams, {"agentId": "main", "label": "New chat",
                                                 "model": "openai/gpt-4o-mini"}),
    ("sessions.patch", S.SessionsPatchParams, {"key": "agent:main:main", "label": None,
                                               "model": "ollama/llama3", "thinkingLevel": "high",
                                               "pinned": True, "fastMode": "auto"}),
    ("sessions.reset", S.SessionsResetParams, {"key": "agent:main:main", "reason": "new"}),
    ("sessions.delete", S.SessionsDeleteParams, {"key": "agent:main:x", "deleteTranscript": True}),
    ("sessions.abort", S.SessionsAbortParams, {"key": "agent:main:main"}),
]

_METHOD_DEF = {"sessions.subscribe": None, "chat.startup": None}


@pytest.mark.parametrize("method,cls,params", CLIENT_PARAMS, ids=[c[0] for c in CLIENT_PARAMS])
def test_client_frames_decode(method, cls, params):
    frame = {"type": "req", "id": "1", "method": method, "params": params}
    decoded = msgspec.json.decode(json.dumps(frame["params"]).encode(), type=cls)
    again = _json(decoded)
    assert again == params
    name = _METHOD_DEF.get(method, cls.__name__)
    if name is not None and set(params) <= set(_defs()[name].get("properties", {})):
        refschema.check(name, params)  # the reference's published schema accepts it too


def test_params_refuse_what_the_reference_refuses():
    bad = [
        (C.ChatSendParams, {"sessionKey": "k", "message": "x"}),  # no idempotencyKey
        (C.ChatSendParams, {"sessionKey": "k", "message": "x", "idempotencyKey": "i", "zz": 1}),
        (C.ChatHistoryParams, {"sessionKey": "k", "limit": 0}),
        (C.ChatStartupParams, {"limit": 5}),
        (C.ChatStartupParams, {"shortId": "s"}),
        (A.AgentParams, {"message": "", "idempotencyKey": "i"}),
        (S.SessionsPatchParams, {"label": "x"}),
        (S.SessionsResolveResult, {"ok": True}),
    ]
    for cls, params in bad:
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps(params).encode(), type=cls)


def test_sessions_subscribe_tolerates_extra_keys():
    assert msgspec.json.decode(b'{"x":1}', type=S.SessionsSubscribeParams) == S.SessionsSubscribeParams()


# -- what krabfast sends -------------------------------------------------------------------------

USER = C.ChatMessage(role="user", content="hello", timestamp=1_700_000_000_000,
                     meta=C.ChatMessageMeta(id="m1", seq=1))
REPLY = C.ChatMessage(role="assistant", content=C.text_parts("Hi! How can I help?"),
                      timestamp=1_700_000_000_500, stop_reason="stop",
                      usage={"input": 12, "output": 7, "totalTokens": 19},
                      meta=C.ChatMessageMeta(id="m2", seq=2))
ROW = S.SessionRow(key="agent:main:main", kind="direct", session_id="3f0c", agent_id="main",
                   is_main=True, updated_at=1_700_000_000_500, label="Main", model="gpt-4o-mini",
                   model_provider="openai", thinking_level="low", message_count=2,
                   status="done", last_run_id="run-1", created_at=1_699_000_000_000)
BASE = {"run_id": "run-1", "session_key": "agent:main:main", "agent_id": "main"}

SAMPLES = [
    ("ChatHistoryDeltaResult", C.ChatHistoryDeltaResult(
        kind="delta", messages=[USER, REPLY], delta_cursor="c2", session_info=_json(ROW),
        pending_inputs=C.ChatPendingInputs(items=[], total=0))),
    ("ChatHistoryCursorResult", C.ChatHistoryResetResult(kind="reset")),
    ("ChatMessageGetResult", C.ChatMessageGetResult(ok=True, message=REPLY)),
    ("ChatMessageGetResult", C.ChatMessageGetResult(ok=False, unavailable_reason="not_found")),
    ("ChatEvent", C.ChatStatusEvent(**BASE, seq=0, phase="starting_model")),
    ("ChatEvent", C.ChatDeltaEvent(**BASE, seq=1, delta_text="Hi!", message=C.ChatMessage(
        role="assistant", content=C.text_parts("Hi!")))),
    ("ChatEvent", C.ChatFinalEvent(**BASE, seq=3, message=REPLY, usage={"input": 12},
                                   stop_reason="stop")),
    ("ChatEvent", C.ChatAbortedEvent(**BASE, seq=2, stop_reason="rpc", message=C.ChatMessage(
        role="assistant", content=C.text_parts("Hi")))),
    ("ChatEvent", C.ChatErrorEvent(**BASE, seq=2, error_message="No API key found for provider "
                                   "openai", error_kind="unknown",
                                   error_detail=C.ChatErrorDetail(provider="openai",
                                                                  http_status=401))),
    ("AgentEvent", A.AgentLifecycleEvent(run_id="run-1", seq=0, ts=1,
                                         data=A.AgentLifecycleData(phase="start", started_at=1))),
    ("AgentEvent", A.AgentAssistantEvent(run_id="run-1", seq=1, ts=2,
                                         data=A.AgentAssistantData(text="Hi", delta="Hi"))),
    ("AgentEvent", A.AgentToolEvent(run_id="run-1", seq=2, ts=3, data=A.AgentToolData(
        phase="start", name="exec", tool_call_id="t1", args={"cmd": "ls"}))),
    ("AgentEvent", A.AgentEvent(run_id="run-1", seq=3, ts=4, stream="lifecycle",
                                data={"phase": "end", "endedAt": 4})),
    ("AgentIdentityResult", A.AgentIdentityResult(agent_id="main", name="Krab", emoji="🦀",
                                                  name_source="default", avatar_status="none")),
    ("AgentsListResult", A.AgentsListResult(
        default_id="main", main_key="main", scope="per-sender", agents=[A.AgentSummary(
            id="main", name="Krab", kind="agent", identity=A.AgentIdentity(name="Krab", emoji="🦀"),
            model=A.AgentModel(primary="openai/gpt-4o-mini"),
            thinking_levels=[A.ThinkingLevel(id="low", label="Low")])])),
    ("ModelsListResult", A.ModelsListResult(models=[A.ModelChoice(
        id="gpt-4o-mini", name="GPT-4o mini", provider="openai", context_window=128000,
        available=True, input=["text", "image"], supports_tools=True)])),
    ("CommandsListResult", A.CommandsListResult(commands=[
        A.CommandEntry(name="new", description="Start a new session", source="native",
                       scope="both", accepts_args=False, category="session",
                       text_aliases=["/new"]),
        A.CommandEntry(name="model", description="Show or set the model", source="native",
                       scope="text", accepts_args=True, args=[A.CommandArg(
                           name="model", description="provider/model", type="string")])])),
    ("SystemInfoResult", A.SystemInfoResult(
        machine_name="box", hostname="box", platform="linux", release="6.8", arch="x64",
        os_label="Linux 6.8", node_version="python 3.12", pid=1, uptime_ms=5, cpu_count=2,
        memory_total_bytes=1 << 30, memory_free_bytes=1 << 29, load_average=(0.1, 0.2, 0.3))),
    ("SessionRow", ROW),
    ("SessionsCreateResult", S.SessionsCreateResult(ok=True, key="agent:main:x", session_id="s1",
                                                    entry=ROW, run_started=True, run_id="r",
                                                    message_seq=1)),
    ("SessionsCreateResult", S.SessionsCreateResult(
        ok=True, key="agent:main:x", run_started=False,
        run_error=S.SessionsRunError(code="UNAVAILABLE", message="no model"))),
    ("SessionsDeleteResult", S.SessionsDeleteResult(ok=True, key="agent:main:x", deleted=True,
                                                    archived=[])),
    ("SessionsResolveResult", S.SessionsResolveResult(ok=True, key="agent:main:main",
                                                      agent_id="main", display_name="Main")),
    ("SessionsResolveResult", S.SessionsResolveResult(ok=False, candidates=[
        S.SessionsResolveCandidate(key="agent:main:a", agent_id="main")])),
    ("SessionsResolveResult", S.SessionsResolveResult(ok=False)),
]


@pytest.mark.parametrize("name,value", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_samples_validate_against_the_reference(name, value):
    refschema.check(name, _json(value))


def test_session_defaults_validate_as_hello_ok_snapshot_field():
    defs = _defs()
    schema = dict(defs["Snapshot"]["properties"]["sessionDefaults"], definitions=defs)
    validator = jsonschema.Draft7Validator(schema)
    for value in (A.SessionDefaults(default_agent_id="main", main_key="main",
                                    main_session_key="agent:main:main", model_configured=False),
                  A.SessionDefaults(default_agent_id="main", main_key="main",
                                    main_session_key="agent:main:main", model_configured=True,
                                    scope="per-sender")):
        errors = list(validator.iter_errors(_json(value)))
        assert not errors, errors[0].message


def test_session_event_payloads_encode():
    changed = _json(S.SessionsChangedEvent(ts=5, session_key="agent:main:main", agent_id="main",
                                           reason="patch", session=ROW))
    assert changed["session"]["key"] == "agent:main:main" and changed["reason"] == "patch"
    msg = _json(S.SessionMessageEvent(session_key="agent:main:main", agent_id="main",
                                      message=REPLY, message_id="m2", message_seq=2, session=ROW))
    assert msg["message"]["__openclaw"] == {"id": "m2", "seq": 2} and msg["messageSeq"] == 2
    refschema.check("SessionRow", msg["session"])
    tool = _json(S.SessionToolEvent(run_id="r", seq=1, stream="tool", ts=1, data={"phase": "start"},
                                    session_key="agent:main:main"))
    assert tool["stream"] == "tool"
    snap = _json(A.ModelsSnapshotEvent(scope=A.ModelsSnapshotScope(agent_id="main"),
                                       catalog=A.ModelsListResult(models=[])))
    refschema.check("ModelsListResult", snap["catalog"])


def test_results_without_reference_definitions_encode_as_documented():
    assert _json(C.ChatSendResult(run_id="r", status="started")) == {"runId": "r", "status": "started"}
    assert _json(C.ChatAbortResult(ok=True, aborted=True, run_ids=["r"])) == {
        "ok": True, "aborted": True, "runIds": ["r"]}
    assert _json(C.ChatInjectResult(ok=True, message_id="m")) == {"ok": True, "messageId": "m"}
    hist = _json(C.ChatHistoryResult(session_key="agent:main:main", session_id="s",
                                     messages=[USER, REPLY], thinking_level="low"))
    assert hist["messages"][0]["content"] == "hello"
    assert hist["messages"][1]["content"] == [{"type": "text", "text": "Hi! How can I help?"}]
    assert _json(A.AgentAcceptedResult(run_id="r", status="accepted", accepted_at=5,
                                       session_key="agent:main:main", agent_id="main"))["status"] == "accepted"
    final = _json(A.AgentFinalResult(run_id="r", status="ok", summary="completed",
                                     result=A.AgentRunOutput(payloads=[A.AgentPayload(text="hi")])))
    assert final["result"] == {"payloads": [{"text": "hi"}]}
    assert _json(A.AgentWaitResult(run_id="r", status="timeout")) == {"runId": "r", "status": "timeout"}
    assert _json(S.SessionsListResult(ts=1, count=1, sessions=[ROW], defaults=S.SessionsDefaults(
        model_provider="openai", model="gpt-4o-mini")))["sessions"][0]["kind"] == "direct"
    assert _json(S.SessionsSubscribeResult(subscribed=True)) == {"subscribed": True}
    assert _json(A.AgentResult(run_id="r", status="accepted", accepted_at=5)) == {
        "runId": "r", "status": "accepted", "acceptedAt": 5}
    for result in (S.SessionsPatchResult(ok=True, key=ROW.key, entry=ROW),
                   S.SessionsResetResult(ok=True, key=ROW.key, entry=ROW)):
        refschema.check("SessionRow", _json(result)["entry"])
    assert _json(S.SessionsDescribeResult(session=None)) == {"session": None}
    decoded = msgspec.json.decode(msgspec.json.encode(C.ChatFinalEvent(**BASE, seq=1)),
                                  type=C.ChatEvent)
    assert isinstance(decoded, C.ChatFinalEvent)
