"""Provides the per-tenant publish rate limit: a token bucket of `publish_rate` events per second
with a burst of the same size."""

import time


class TokenBuckets:
    """The embedded engine's buckets; the Redis engine runs the same arithmetic in its publish
    script, so that every process draws from one bucket per tenant."""

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}

    def wait(self, *, tenant_id: int, rate: int) -> float:
        """Seconds until the bucket holds one token (0: it does); takes nothing."""
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            return 0.0
        tokens, stamp = bucket
        tokens = min(float(rate), tokens + (time.monotonic() - stamp) * rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / rate

    def take(self, *, tenant_id: int, rate: int, count: int) -> float:
        """Takes `count` tokens; returns 0 when allowed, else seconds to wait before retrying."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(tenant_id, (float(rate), now))
        tokens = min(float(rate), tokens + (now - stamp) * rate)
        if count > rate:
            return count / rate  # larger than the burst: can never pass at once
        if tokens < count:
            self._buckets[tenant_id] = (tokens, now)
            return (count - tokens) / rate
        self._buckets[tenant_id] = (tokens - count, now)
        return 0.0
