"""Provides the per-tenant publish rate limit: a token bucket of `publish_rate` events per second
with a burst of the same size."""

import threading
import time


class TokenBuckets:
    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, *, tenant_id: int, rate: int, count: int) -> float:
        """Takes `count` tokens; returns 0 when allowed, else seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(tenant_id, (float(rate), now))
            tokens = min(float(rate), tokens + (now - stamp) * rate)
            if count > rate:
                return count / rate
            if tokens < count:
                self._buckets[tenant_id] = (tokens, now)
                return (count - tokens) / rate
            self._buckets[tenant_id] = (tokens - count, now)
            return 0.0


buckets = TokenBuckets()
