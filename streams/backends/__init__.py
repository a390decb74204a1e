"""Provides the engines behind the hub's shared state: sequences, replay buffer, hand-off to the
event log and cross-process counters.

`local` keeps them in this process (the embedded default); `redis` keeps them in Redis so that
any number of processes act as one hub. Both are a `streams.engine.Engine`, which is what
the hub, the services, replay and the health checks may use of them:

- `publish(tenant_id, items, received_at, rate) -> list[Envelope]`: take `len(items)` from the
  tenant's rate bucket (`rate` events/s, burst the same; None: unlimited), then sequence,
  buffer, hand to the log and fan out, in seq order;
- `rate_wait(tenant_id=, rate=) -> float`: seconds until the tenant's rate bucket holds one
  event (0: now), taking nothing; checked before a large body is read;
- `buffered(tenant_id, from_seq, to_seq=None) -> list[Envelope]`: replay-buffer events with
  `from_seq <= seq (<= to_seq)`, in seq order;
- `buffered_size(tenant_id, from_seq, to_seq, patterns) -> (first, held, bytes)`: the first
  seq the buffer holds in that range (0: none), how many it holds, and about the bytes of event
  JSON of those `patterns` match, without handing the events to the process (replay sizes a
  gap with it before sending anything);
- `buffered_page(tenant_id, from_seq, to_seq, max_events, max_bytes) -> list[Envelope]`: the
  buffer's events from `from_seq` on, oldest first, as many as both limits allow (at least one);
- `current_seq(tenant_id) -> int`: the last seq handed out;
- `current_epoch(tenant_id) -> str | None`: the epoch of the ids handed out now (it changes
  when the sequence is re-seeded, e.g. by an emptied Redis); None before the first publish;
- `stats(tenant_id) -> dict`: counters and persistence backlog of the tenant, over all
  processes;
- `connection_acquire(tenant_id, transport, limit, local) -> bool`: counts one more connection
  of the tenant only while its live connections on every process (`local`: this process's) are
  fewer than `limit`, in one atomic step, and says whether it did;
- `connection_change(tenant_id, transport, delta)`: counts connections of an unlimited tenant
  (+1) and gives back every admitted one (-1) when it ends.
"""


class HubUnavailable(Exception):
    """Raised when the shared state cannot be reached (Redis down): publish answers 503."""


class LogBacklogFull(HubUnavailable):
    """Raised by publish when EVENTHUB_LOG_BACKLOG_MAX events await the log (its database is
    unreachable, or no worker runs): nothing was accepted, publish answers 503."""


class RateLimited(Exception):
    """Raised by publish when the tenant's rate bucket is empty; nothing was accepted."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"retry in {wait:.3f}s")
        self.wait = wait
