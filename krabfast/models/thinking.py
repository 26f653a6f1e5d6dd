"""The thinking levels a model offers, as the reference's profiles give them: a model
configured with `reasoning: true` offers the base levels (its default "medium"), the
reference's bundled Ollama provider ("ollama") its own set (default "off"); any other model
offers "off" only. The reference's other provider plugins' profiles (Google's "adaptive",
Claude-specific levels on some model ids, ...) are not replicated (see differences.md).
"""

from __future__ import annotations

import re
from typing import NamedTuple

BASE_LEVELS = ("off", "minimal", "low", "medium", "high")
OFF_ONLY = ("off",)
RANKS = {"off": 0, "minimal": 10, "low": 20, "medium": 30, "high": 40,
         "adaptive": 30, "xhigh": 60, "max": 70, "ultra": 80}
# What normalize_think_level maps a raw level to (the reference's aliases).
_THINK_ALIASES = {
    "off": "off", "none": "off",
    "on": "low", "enable": "low", "enabled": "low",
    "min": "minimal", "minimal": "minimal", "think": "minimal",
    "low": "low", "thinkhard": "low", "think-hard": "low", "think_hard": "low",
    "mid": "medium", "med": "medium", "medium": "medium", "thinkharder": "medium",
    "think-harder": "medium", "harder": "medium",
    "high": "high", "ultrathink": "high", "thinkhardest": "high", "highest": "high",
}
_THINK_COLLAPSED = {"adaptive": "adaptive", "auto": "adaptive", "max": "max", "ultra": "ultra",
                    "xhigh": "xhigh", "extrahigh": "xhigh"}


class ThinkingProfile(NamedTuple):
    levels: tuple[str, ...]
    default: str

    def wire_fields(self) -> dict:
        """How session rows and agent rows show the profile (the reference's fields)."""
        return {"thinkingLevels": [{"id": level, "label": level} for level in self.levels],
                "thinkingOptions": list(self.levels), "thinkingDefault": self.default}


_BASE = ThinkingProfile(BASE_LEVELS, "medium")
_OFF = ThinkingProfile(OFF_ONLY, "off")
# By provider id, for a model that reasons (observed on the reference).
_PROVIDER_PROFILES = {"ollama": ThinkingProfile(("off", "low", "medium", "high", "max"), "off")}


def thinking_profile(provider: str, reasoning: bool) -> ThinkingProfile:
    if not reasoning:
        return _OFF
    return _PROVIDER_PROFILES.get(provider, _BASE)


def normalize_think_level(raw) -> str | None:
    """The reference's canonical thinking level for `raw`, or None."""
    if not isinstance(raw, str):
        return None
    key = raw.strip().lower()
    if not key:
        return None
    collapsed = _THINK_COLLAPSED.get(re.sub(r"[\s_-]+", "", key))
    return collapsed or _THINK_ALIASES.get(key)


def level_not_offered(level: str, model: str, levels: tuple[str, ...]) -> str:
    """The reference's words when a run asks `model` ("provider/model") for a level it lacks."""
    return f'Thinking level "{level}" is not supported for {model}. Use one of: {", ".join(levels)}.'
