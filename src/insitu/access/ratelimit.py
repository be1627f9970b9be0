"""An in-process sliding-window rate limiter: login attempts per client address, and the
viewer's frames per user and hour (one of each per app)."""

from __future__ import annotations

import threading
import time
from collections import deque


class SlidingWindowLimiter:
    """At most ``limit`` attempts per ``window`` seconds per key (a client address)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """Count an attempt; the seconds to wait if it is over the limit, else None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            attempts = self._attempts.setdefault(key, deque())
            while attempts and attempts[0] <= now - self.window:
                attempts.popleft()
            if len(attempts) >= self.limit:
                return attempts[0] + self.window - now
            attempts.append(now)
            if len(self._attempts) > 10_000:  # forget idle clients so memory stays bounded
                for idle in [k for k, v in self._attempts.items() if not v]:
                    del self._attempts[idle]
            return None

    def remaining(self, key: str, now: float | None = None) -> int:
        """Attempts left in the current window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            attempts = self._attempts.get(key, deque())
            return self.limit - sum(1 for t in attempts if t > now - self.window)
