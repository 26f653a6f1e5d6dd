"""What a session row shows of its transcript: a preview of the newest message, projected
as the reference projects it for `sessions.list` / `sessions.describe` with
`includeLastMessage`; and the `includeDerivedTitles` title.

The store computes the preview when a message is appended (sessions.py), so listing
sessions never reads a transcript. The reference's rules, for krabfast's messages (user text
from `chat.send`, assistant text parts from a model):

- a message shows as its role's text: a user message's string (or its text parts, one per
  line) without a channel envelope (`[WebChat 2026-01-01 10:00] ...`); an assistant's text
  parts, one per line, unless the whole reply is a control token (`NO_REPLY`, ...); trimmed;
- the preview is the newest message that shows, its markdown flattened to plain text, cut
  to 240 characters with "...";
- the derived title is the label, else the display name. (The reference's code can also
  derive one from the first user message, but its sessions.list and sessions.describe
  answer without it: observed, tests/interop/test_chat_interop.py.)
"""

from __future__ import annotations

import re
import string

PREVIEW_CHARS = 240

_CONTROL_TOKENS = frozenset({"NO_REPLY", "ANNOUNCE_SKIP", "REPLY_SKIP"})
_ENVELOPE = re.compile(r"^\[([^\]]+)\]\s*")
_ENVELOPE_CHANNELS = ("WebChat", "WhatsApp", "Telegram", "Signal", "Slack", "Discord",
                      "Google Chat", "iMessage", "Teams", "Matrix", "Zalo", "Zalo Personal")
_ENVELOPE_TIME = (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z\b"),
                  re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}\b"))
# The reference's markdown flattening, step by step (`[\W_]` is "not a letter or digit"),
# each step with the text it needs (skipped when absent: most replies are plain prose).
_FLATTEN = (
    (re.compile(r"```[\s\S]*?```"), " ", "```"),
    (re.compile(r"```"), " ", "```"),
    (re.compile(r"`([^`]*)`"), r"\1", "`"),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1", "]("),
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1", "]("),
    (re.compile(r"^\s{0,3}(?:#{1,6}|>|[-+*]|\d+[.)])\s+", re.M), "", None),
    (re.compile(r"(\*{1,2})(?=\S)([\s\S]*?\S)\1"), r"\2", "*"),
    (re.compile(r"(^|[\W_])(_{1,2})(?=\S)([\s\S]*?\S)\2(?![^\W_])"), r"\1\3", "_"),
    (re.compile(r"~~(?=\S)([\s\S]*?\S)~~"), r"\1", "~~"),
)
# A preview needs 240 characters: fenced code is removed from the whole message, the rest
# of the flattening runs on its head only (a message appended on the event loop can be
# long). It differs from the reference's only for a span of markup that starts in the
# preview and ends past the head.
_FLATTEN_SOURCE = 1024


def strip_envelope(text: str) -> str:
    match = _ENVELOPE.match(text)
    if match is None:
        return text
    header = match.group(1)
    if any(p.search(header) for p in _ENVELOPE_TIME) or \
            any(header.startswith(f"{label} ") for label in _ENVELOPE_CHANNELS):
        return text[match.end():]
    return text


def flatten_markdown(text: str, head: int | None = None) -> str:
    """The reference's plain-text form of markdown; with `head`, of about its first
    `head` characters (fenced code removed first)."""
    for i, (pattern, repl, needs) in enumerate(_FLATTEN):
        if i == 2 and head is not None:
            text = text[:head]
        if needs is None or needs in text:
            text = pattern.sub(repl, text)
    return " ".join(text.split())  # runs of white space as one space, trimmed


# Per role that shows: the content part types that carry its text, and whether blank parts
# are left out (the reference joins an assistant's non-blank parts, a user's every part).
_TEXT_PARTS = {"user": (("text", "input_text"), False),
               "assistant": (("text", "output_text"), True)}


def _text(role: str, content) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    types, skip_blank = _TEXT_PARTS[role]
    parts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") in types
             and isinstance(p.get("text"), str) and not (skip_blank and not p["text"].strip())]
    return "\n".join(parts) if parts else None


def _is_control_reply(text: str) -> bool:
    return len(text) <= 32 and \
        text.strip().strip(string.punctuation + " ").upper() in _CONTROL_TOKENS


def display_text(role: str, content, *, flatten: bool = False) -> str | None:
    """How a message shows in a session row (None: it does not show); `flatten`: its
    markdown as plain text, as the preview shows it."""
    if role not in _TEXT_PARTS:
        return None
    text = (_text(role, content) or "").strip()
    if not text or (role == "assistant" and _is_control_reply(text)):
        return None
    if role == "user":
        text = strip_envelope(text).strip()
    if flatten:
        text = flatten_markdown(text, _FLATTEN_SOURCE)
    if not text:
        return None
    return text if len(text) <= PREVIEW_CHARS else f"{text[:PREVIEW_CHARS - 3]}..."


def derived_title(label: str | None, display_name: str | None) -> str | None:
    return (label or "").strip() or (display_name or "").strip() or None
