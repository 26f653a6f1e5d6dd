"""Failed-authentication rate limiter: N failures in a window lock the key out.

Keys are (client ip, credential kind). Loopback clients are exempt by default, as local
tools retry freely and cannot be locked out by a remote attacker anyway.
"""

from __future__ import annotations

from krabfast.gateway.config import RateLimitConfig


class AuthRateLimiter:
    def __init__(self, cfg: RateLimitConfig, clock_ms) -> None:
        self.cfg = cfg
        self.clock_ms = clock_ms
        self._failures: dict[tuple[str, str], list[int]] = {}
        self._locked_until: dict[tuple[str, str], int] = {}

    def retry_after_ms(self, key: tuple[str, str], is_loopback: bool) -> int:
        """Milliseconds until `key` may try again (0 = allowed now)."""
        if is_loopback and self.cfg.exempt_loopback:
            return 0
        until = self._locked_until.get(key)
        if until is None:
            return 0
        left = until - self.clock_ms()
        if left <= 0:
            del self._locked_until[key]
            return 0
        return left

    def record_failure(self, key: tuple[str, str], is_loopback: bool) -> int:
        """Count a failure; returns the lockout left in ms if this failure locked the key."""
        if is_loopback and self.cfg.exempt_loopback:
            return 0
        now = self.clock_ms()
        window_start = now - self.cfg.window_ms
        hits = [t for t in self._failures.get(key, ()) if t > window_start]
        hits.append(now)
        if len(hits) >= self.cfg.max_attempts:
            self._failures.pop(key, None)
            self._locked_until[key] = now + self.cfg.lockout_ms
            return self.cfg.lockout_ms
        self._failures[key] = hits
        return 0

    def record_success(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)

    def prune(self) -> None:
        now = self.clock_ms()
        start = now - self.cfg.window_ms
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= start]:
            del self._failures[key]
        for key in [k for k, t in self._locked_until.items() if t <= now]:
            del self._locked_until[key]
