"""Provides the hub's counters: per-tenant numbers for /api/v1/stats and Prometheus metrics."""

from collections import defaultdict
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram


@dataclass(slots=True)
class TenantCounters:
    accepted: int = 0
    delivered: int = 0
    persisted: int = 0


tenant_counters: defaultdict[int, TenantCounters] = defaultdict(TenantCounters)

CONNECTIONS = Gauge("eventhub_connections", "Live subscriber connections", ["transport"])
EVENTS_ACCEPTED = Counter("eventhub_events_accepted", "Events accepted by publish")
EVENTS_DELIVERED = Counter("eventhub_events_delivered", "Event frames written to subscribers")
EVENTS_PERSISTED = Counter("eventhub_events_persisted", "Events written to the event log")
BROADCAST_SECONDS = Histogram(
    "eventhub_broadcast_duration_seconds",
    "Time to hand one event to every matching local connection",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
LOOP_STALL_SECONDS = Histogram(
    "eventhub_loop_stall_seconds",
    "How late the event loop ran a task due every 10 ms: what any work held every tenant back",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
HUB_INBOX_DROPPED = Counter(
    "eventhub_hub_inbox_dropped",
    "Events a hub dropped from a tenant's full delivery queue (then filled from the buffer)",
)
PERSISTENCE_PENDING = Gauge("eventhub_persistence_pending", "Accepted events not yet in the log")
PERSISTENCE_LAG = Gauge(
    "eventhub_persistence_lag_seconds", "Age of the oldest accepted event not yet in the log"
)
WORKER_BATCH_SECONDS = Histogram(
    "eventhub_worker_batch_duration_seconds",
    "Time a persistence worker took to write one batch to the log and acknowledge it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
WORKER_ERRORS = Counter(
    "eventhub_worker_errors", "Persistence worker rounds that failed, by what failed", ["cause"]
)
CONNECTIONS_CLOSED = Counter(
    "eventhub_connections_closed", "Connections closed by the hub", ["reason"]
)
# Set at scrape time (`runtime.sample_loop_gauges`), never on an event's path: after any
# amount of churn they return to what an idle process shows, or something is held for the gone.
ASYNCIO_TASKS = Gauge("eventhub_asyncio_tasks", "Tasks alive on the serving event loop")
HUB_TENANTS = Gauge(
    "eventhub_hub_tenants",
    "Tenants this process's hub has joined (its channel-layer group memberships)",
)
HUB_SUBSCRIBERS = Gauge("eventhub_hub_subscribers", "Connections held by this process's hub")


PUBLISH_REQUESTS = Counter(
    "eventhub_publish_requests", "Publish requests answered, by status code", ["status"]
)
PUBLISH_SECONDS = Histogram(
    "eventhub_publish_duration_seconds",
    "Time from a publish request's arrival to its answer",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def count_publish_request(status: int, seconds: float) -> None:
    """Called once per answered POST /api/v1/events or /batch, on either path."""
    PUBLISH_REQUESTS.labels(str(status)).inc()
    PUBLISH_SECONDS.observe(seconds)


def count_accepted(tenant_id: int, n: int) -> None:
    tenant_counters[tenant_id].accepted += n
    EVENTS_ACCEPTED.inc(n)


def count_delivered(tenant_id: int, n: int) -> None:
    tenant_counters[tenant_id].delivered += n
    EVENTS_DELIVERED.inc(n)


def count_persisted(tenant_id: int, n: int) -> None:
    tenant_counters[tenant_id].persisted += n
    EVENTS_PERSISTED.inc(n)
