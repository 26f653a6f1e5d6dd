"""The level settings of sessions.patch as the reference reads them: each raw value is
normalized (case, aliases such as "on" or "think-hard") before it is stored, an unknown
one is refused with the reference's message, and `thinkingLevel` must be one the session's
model supports. Pure: no store, no model catalog (the caller passes the model's profile).
"""

from __future__ import annotations

from krabfast.models.thinking import RANKS as THINKING_RANKS
from krabfast.protocol.errors import invalid_request

_OFF = ("off", "false", "no", "0")
_ON = ("on", "true", "yes", "1")


def _table(*groups: tuple[str, tuple[str, ...]]) -> dict[str, str]:
    return {alias: value for value, aliases in groups for alias in aliases}


# field -> (aliases -> stored value, the reference's message for anything else)
_LEVELS = {
    "verbose_level": (_table(("off", _OFF), ("full", ("full", "all", "everything")),
                             ("on", ("on", "minimal", "true", "yes", "1"))),
                      'invalid verboseLevel (use "on"|"off"|"full")'),
    "trace_level": (_table(("off", _OFF), ("on", _ON), ("raw", ("raw", "unfiltered"))),
                    'invalid traceLevel (use "on"|"off"|"raw")'),
    "reasoning_level": (_table(("off", _OFF + ("hide", "hidden", "disable", "disabled")),
                               ("on", _ON + ("show", "visible", "enable", "enabled")),
                               ("stream", ("stream", "streaming", "draft", "live"))),
                        'invalid reasoningLevel (use "on"|"off"|"stream")'),
    "response_usage": (_table(("off", _OFF + ("disable", "disabled")),
                              ("tokens", _ON + ("enable", "enabled", "tokens", "token", "tok",
                                                "minimal", "min")),
                              ("full", ("full", "session"))),
                       'invalid responseUsage (use "off"|"tokens"|"full")'),
    "elevated_level": (_table(("off", _OFF), ("full", ("full", "auto", "auto-approve", "autoapprove")),
                              ("ask", ("ask", "prompt", "approval", "approve")), ("on", _ON)),
                       'invalid elevatedLevel (use "on"|"off"|"ask"|"full")'),
    "exec_host": (_table(("auto", ("auto",)), ("sandbox", ("sandbox",)), ("gateway", ("gateway",)),
                         ("node", ("node",))),
                  'invalid execHost (use "auto"|"sandbox"|"gateway"|"node")'),
}
LEVEL_FIELDS = tuple(_LEVELS)


def normalize_level(name: str, raw) -> str:
    """A level field's stored value for a non-null `raw`; the reference's error otherwise."""
    aliases, message = _LEVELS[name]
    value = aliases.get(raw.strip().lower()) if isinstance(raw, str) else None
    if value is None:
        raise invalid_request(message)
    return value


def refuse_unknown_think_level(levels: tuple[str, ...]):
    return invalid_request(f"invalid thinkingLevel (use {'|'.join(levels)})")


def supported_think_level(level: str, levels: tuple[str, ...], *, asked: bool, model: str) -> str:
    """`level` on a model offering `levels`: refused when the patch asked for it (naming
    the model), else (the model changed under it) the nearest level at or below it."""
    if level in levels:
        return level
    if asked:
        raise invalid_request(f'thinkingLevel "{level}" is not supported for {model} '
                              f"(use {'|'.join(levels)})")
    rank = THINKING_RANKS.get(level, 0)
    below = [lv for lv in sorted(levels, key=THINKING_RANKS.__getitem__, reverse=True)
             if lv != "off" and THINKING_RANKS[lv] <= rank]
    others = [lv for lv in levels if lv != "off"]
    return below[0] if below else (others[0] if others else "off")
