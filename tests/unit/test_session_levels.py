"""sessions.patch level settings, normalized and checked as the reference does (the
interop test `test_session_level_settings_match_reference` runs the same cases against the
reference gateway)."""

from __future__ import annotations

import pytest

from krabfast.gateway import session_levels as levels
from krabfast.gateway.session_patch import patch_changes
from krabfast.models.thinking import BASE_LEVELS as BASE, normalize_think_level, thinking_profile
from krabfast.protocol.errors import GatewayError
from krabfast.protocol.sessions import SessionsPatchParams
from krabfast.store.sessions import SessionRecord

KEY = "agent:main:levels"


@pytest.mark.parametrize("raw, level", [
    ("HIGH", "high"), (" medium ", "medium"), ("think-hard", "low"), ("on", "low"),
    ("enabled", "low"), ("think", "minimal"), ("min", "minimal"), ("none", "off"),
    ("ultrathink", "high"), ("extra high", "xhigh"), ("extra_high", "xhigh"), ("Auto", "adaptive"),
    ("max", "max"), ("bogus", None), ("", None), (None, None), (3, None),
])
def test_thinking_levels_normalize_as_the_reference(raw, level):
    assert normalize_think_level(raw) == level


@pytest.mark.parametrize("name, raw, value", [
    ("verbose_level", "FULL", "full"), ("verbose_level", "yes", "on"),
    ("verbose_level", "minimal", "on"), ("trace_level", "unfiltered", "raw"),
    ("trace_level", "0", "off"), ("reasoning_level", "live", "stream"),
    ("reasoning_level", "hidden", "off"), ("response_usage", "on", "tokens"),
    ("response_usage", "session", "full"), ("elevated_level", "prompt", "ask"),
    ("elevated_level", "auto-approve", "full"), ("exec_host", "GATEWAY", "gateway"),
    ("exec_host", "auto", "auto"),
])
def test_level_settings_normalize_as_the_reference(name, raw, value):
    assert levels.normalize_level(name, raw) == value


@pytest.mark.parametrize("name, message", [
    ("verbose_level", 'invalid verboseLevel (use "on"|"off"|"full")'),
    ("trace_level", 'invalid traceLevel (use "on"|"off"|"raw")'),
    ("reasoning_level", 'invalid reasoningLevel (use "on"|"off"|"stream")'),
    ("response_usage", 'invalid responseUsage (use "off"|"tokens"|"full")'),
    ("elevated_level", 'invalid elevatedLevel (use "on"|"off"|"ask"|"full")'),
    ("exec_host", 'invalid execHost (use "auto"|"sandbox"|"gateway"|"node")'),
])
def test_unknown_level_values_are_refused_with_the_reference_message(name, message):
    with pytest.raises(GatewayError) as err:
        levels.normalize_level(name, "sideways")
    assert err.value.message == message


def test_thinking_profiles_as_the_reference_offers_them():
    assert thinking_profile("any", False) == (("off",), "off")
    assert thinking_profile("ollama", False) == (("off",), "off")
    assert thinking_profile("local", True) == (BASE, "medium")
    # The reference's bundled Ollama provider: no "minimal", a "max", default off.
    assert thinking_profile("ollama", True) == (("off", "low", "medium", "high", "max"), "off")


@pytest.mark.parametrize("level, offered, moved", [
    ("medium", ("off",), "off"),
    ("xhigh", BASE, "high"),
    ("minimal", ("off", "low", "high"), "low"),   # nothing at or below: the lowest non-off
    ("adaptive", BASE, "medium"),
    ("low", BASE, "low"),
])
def test_a_model_change_moves_the_level_to_one_the_model_offers(level, offered, moved):
    assert levels.supported_think_level(level, offered, asked=False, model="p/m") == moved


def _profiles(ref):
    if ref == "fake/plain":
        return "fake/plain", ("off",)
    return "fake/thinker", BASE


def _record(model: str | None = None, **settings) -> SessionRecord:
    return SessionRecord(key=KEY, agent_id="main", session_id="s1", created_at=1, updated_at=1,
                         model=model, settings=settings)


def _changes(record=None, **params) -> dict:
    return patch_changes(SessionsPatchParams(key=KEY, **params), record, key=KEY, now=10,
                         label_in_use=lambda label: False, think_profile=_profiles)


def _refusal(record=None, **params) -> str:
    with pytest.raises(GatewayError) as err:
        _changes(record, **params)
    return err.value.message


def test_patch_stores_normalized_levels_and_refuses_the_rest():
    assert _changes(thinking_level="Think Harder".replace(" ", "-"), verbose_level="ALL") == {
        "thinking_level": "medium", "verbose_level": "full"}
    assert _changes(thinking_level=None, trace_level=None) == {
        "thinking_level": None, "trace_level": None}
    assert _refusal(thinking_level="bogus") == (
        "invalid thinkingLevel (use off|minimal|low|medium|high)")
    assert _refusal(thinking_level="xhigh") == (
        'thinkingLevel "xhigh" is not supported for fake/thinker (use off|minimal|low|medium|high)')


def test_patch_checks_the_thinking_level_against_the_model_it_sets():
    assert _refusal(model="fake/plain", thinking_level="low") == (
        'thinkingLevel "low" is not supported for fake/plain (use off)')
    # An unknown level is listed with the levels of the model the session has now.
    plain = _record("fake/plain", thinking_level="off")
    assert _refusal(plain, model="fake/thinker", thinking_level="loud") == (
        "invalid thinkingLevel (use off)")
    # The model alone changes: the stored level follows it; without one nothing moves.
    assert _changes(_record(thinking_level="high"), model="fake/plain") == {
        "model": "fake/plain", "thinking_level": "off"}
    assert _changes(_record(), model="fake/plain") == {"model": "fake/plain"}
    assert _changes(_record(thinking_level="low"), model="fake/thinker") == {"model": "fake/thinker"}


def test_patch_exec_node_is_trimmed_and_clearing_it_drops_a_node_host():
    assert _changes(exec_host="node", exec_node="  n1 ") == {"exec_host": "node", "exec_node": "n1"}
    assert _changes(_record(exec_host="node", exec_node="n1"), exec_node=None) == {
        "exec_node": None, "exec_host": None}
    assert _changes(_record(exec_host="gateway"), exec_node=None) == {"exec_node": None}
    assert _refusal(exec_node="   ") == "invalid execNode: empty"
