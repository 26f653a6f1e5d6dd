"""Latency statistics: exact percentiles over samples, and a mergeable log-linear histogram.

Load workers record latencies into a `Histogram` (constant memory, ~1.6 % resolution) and
ship it to the parent as a sparse dict; the parent merges them and reads percentiles.
"""

from __future__ import annotations

import math
from typing import Iterable

#: Linear sub-buckets per power of two (2**SUB_BITS); bucket width / value <= 1/64.
SUB_BITS = 6
_SUB = 1 << SUB_BITS
_LINEAR_LIMIT = _SUB << 1  # values below this (in microseconds) get exact 1-us buckets


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted values, linear interpolation
    between closest ranks (numpy's default). None for no values."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile out of range: {q}")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def bucket_index(us: int) -> int:
    """Histogram bucket of a non-negative integer number of microseconds."""
    if us < _LINEAR_LIMIT:
        return us if us > 0 else 0
    shift = us.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) microseconds covered by a bucket."""
    shift = max(0, (index >> SUB_BITS) - 1)
    mantissa = index - (shift << SUB_BITS)
    return mantissa << shift, (mantissa + 1) << shift


class Histogram:
    """Latency histogram in microseconds: exact below 128 us, then 64 buckets per octave."""

    __slots__ = ("counts", "count", "total_us", "max_us", "min_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.max_us = 0
        self.min_us: int | None = None

    def record(self, seconds: float) -> None:
        us = int(seconds * 1_000_000)
        if us < 0:
            us = 0
        idx = us if us < _LINEAR_LIMIT else bucket_index(us)
        counts = self.counts
        counts[idx] = counts.get(idx, 0) + 1
        self.count += 1
        self.total_us += us
        if us > self.max_us:
            self.max_us = us
        if self.min_us is None or us < self.min_us:
            self.min_us = us

    def merge(self, other: "Histogram") -> "Histogram":
        for idx, n in other.counts.items():
            self.counts[idx] = self.counts.get(idx, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)
        if other.min_us is not None and (self.min_us is None or other.min_us < self.min_us):
            self.min_us = other.min_us
        return self

    def percentile_us(self, q: float) -> float | None:
        """Approximate q-th percentile (nearest rank, bucket midpoint, clamped to min/max)."""
        if self.count == 0:
            return None
        if not 0 <= q <= 100:
            raise ValueError(f"percentile out of range: {q}")
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                low, high = bucket_bounds(idx)
                mid = (low + high) / 2.0
                return float(min(max(mid, self.min_us or 0), self.max_us))
        return float(self.max_us)

    def percentile_ms(self, q: float) -> float | None:
        us = self.percentile_us(q)
        return None if us is None else us / 1000.0

    def mean_ms(self) -> float | None:
        return None if self.count == 0 else self.total_us / self.count / 1000.0

    def summary_ms(self) -> dict[str, float | None]:
        """p50/p90/p99/max/mean in milliseconds (rounded to 3 decimals), None when empty."""
        def r(v):
            return None if v is None else round(v, 3)
        return {"p50_ms": r(self.percentile_ms(50)), "p90_ms": r(self.percentile_ms(90)),
                "p99_ms": r(self.percentile_ms(99)),
                "max_ms": r(self.max_us / 1000.0) if self.count else None,
                "mean_ms": r(self.mean_ms())}

    # -- transport between processes -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "count": self.count,
                "total_us": self.total_us, "max_us": self.max_us, "min_us": self.min_us}

    @classmethod
    def from_dict(cls, data: dict) -> "Histogram":
        h = cls()
        h.counts = {int(k): int(v) for k, v in data.get("counts", {}).items()}
        h.count = int(data.get("count", sum(h.counts.values())))
        h.total_us = int(data.get("total_us", 0))
        h.max_us = int(data.get("max_us", 0))
        h.min_us = data.get("min_us")
        return h

    @classmethod
    def merged(cls, parts: Iterable["Histogram | dict"]) -> "Histogram":
        out = cls()
        for part in parts:
            out.merge(part if isinstance(part, Histogram) else cls.from_dict(part))
        return out


def merge_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Sum dicts of counters (error kinds from several workers)."""
    out: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            out[key] = out.get(key, 0) + n
    return out


def rate(count: float, seconds: float) -> float | None:
    return None if seconds <= 0 else count / seconds


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
