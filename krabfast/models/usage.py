"""Token usage and its cost as the reference records them: a transcript message's `usage`
and the usage fields of a session row (inputTokens, outputTokens, totalTokens,
totalTokensFresh, estimatedCostUsd). Pure functions.

Costs are the config's `cost` of a model, USD per million tokens, per part; a part's cost is
tokens * rate / 1e6 and the total their sum, in the reference's order (so the floats agree).
"""

from __future__ import annotations

from typing import Any

COST_PARTS = ("input", "output", "cacheRead", "cacheWrite")
ZERO_COST = dict.fromkeys(COST_PARTS, 0.0)


def parse_cost(value: Any, path: str) -> dict[str, float] | None:
    """A model entry's `cost` ({input, output, cacheRead, cacheWrite}: non-negative
    numbers, a missing part is 0), or None when there is none. ValueError names the key."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected an object")
    cost = dict(ZERO_COST)
    for part in COST_PARTS:
        rate = value.get(part, 0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0:
            raise ValueError(f"{path}.{part}: expected a number >= 0, got {rate!r}")
        cost[part] = rate
    return cost


def cost_of(cost: dict[str, float], input_tokens: int, output_tokens: int) -> dict[str, float]:
    """The cost of one turn's tokens (no cache tokens: krabfast's backends report none)."""
    parts = {"input": input_tokens * cost["input"] / 1e6,
             "output": output_tokens * cost["output"] / 1e6,
             "cacheRead": 0 * cost["cacheRead"] / 1e6,
             "cacheWrite": 0 * cost["cacheWrite"] / 1e6}
    parts["total"] = parts["input"] + parts["output"] + parts["cacheRead"] + parts["cacheWrite"]
    return parts


def message_usage(input_tokens: int, output_tokens: int, cost: dict | None) -> dict:
    """An assistant message's `usage` in the transcript (chat.history): the counts, and
    their cost (zero for a model without a configured cost)."""
    return {"input": input_tokens, "output": output_tokens,
            "totalTokens": input_tokens + output_tokens, "cacheRead": 0, "cacheWrite": 0,
            "cost": cost_of(cost or ZERO_COST, input_tokens, output_tokens)}


def session_usage(previous: dict | None, usage: tuple[int, int] | None,
                  cost: dict | None) -> dict:
    """A session's usage fields after a turn: the turn's counts (`usage`: input, output;
    None when the model reported none), `totalTokens` its prompt size (what the context
    holds, as the reference counts it) and fresh, `estimatedCostUsd` the turn's cost when
    the model has one (else none is kept). A turn without counts keeps the last ones, no
    longer fresh."""
    out = dict(previous or {})
    if usage is None or not any(usage):
        out["totalTokensFresh"] = False
        return out
    input_tokens, output_tokens = usage
    out["inputTokens"], out["outputTokens"] = input_tokens, output_tokens
    if input_tokens > 0:
        out["totalTokens"] = input_tokens
        out["totalTokensFresh"] = True
    else:
        out["totalTokensFresh"] = False
    if cost is not None:
        out["estimatedCostUsd"] = cost_of(cost, input_tokens, output_tokens)["total"]
    else:  # a model without a cost: the row may estimate one from its counts (row_cost)
        out.pop("estimatedCostUsd", None)
    return out


def row_cost(usage: dict | None, cost: dict | None) -> float | None:
    """The cost a session row shows: the last turn's, else (its model had none) the counts
    priced at the row's model's cost, as the reference estimates it; None without either."""
    if not usage:
        return None
    if "estimatedCostUsd" in usage:
        return usage["estimatedCostUsd"]
    input_tokens, output_tokens = usage.get("inputTokens") or 0, usage.get("outputTokens") or 0
    if cost is None or (input_tokens <= 0 and output_tokens <= 0):
        return None
    return cost_of(cost, max(0, input_tokens), max(0, output_tokens))["total"]


def wire_message_usage(stored: dict | None) -> dict | None:
    """A stored message's usage as chat.history shows it. Messages stored by earlier
    krabfast versions ({input, output, total}) get the reference's shape, without a cost."""
    if stored is None or "total" not in stored or "totalTokens" in stored:
        return stored
    return {"input": stored.get("input", 0), "output": stored.get("output", 0),
            "totalTokens": stored["total"], "cacheRead": 0, "cacheWrite": 0}
