"""Token-bucket rate limiting per client (API key, else client IP), in one replica's memory.

Each client has a bucket of `burst` tokens refilled at `requests_per_minute / 60` tokens per second; a
request takes one token or is refused with the seconds until one is back. Buckets live in the replica
(per-replica limits: with N replicas behind Serve's router a client gets up to N times the rate), in an
LRU map bounded by `max_clients`, so a flood of distinct addresses cannot grow memory without bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from serving.config import RateLimitSettings

__all__ = ["Decision", "TokenBucketLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # whole seconds until a token is available (0 when allowed)


class TokenBucketLimiter:
    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        if not settings.enabled:
            raise ValueError("rate limiting is disabled (requests_per_minute = 0)")
        self.rate = settings.requests_per_minute / 60.0
        self.burst = int(settings.burst or max(1, math.ceil(settings.requests_per_minute)))
        self.max_clients = settings.max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: str) -> Decision:
        """Take one token for `client` if there is one."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        retry = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed, self.burst, int(tokens), retry)

    def __len__(self) -> int:
        return len(self._buckets)
