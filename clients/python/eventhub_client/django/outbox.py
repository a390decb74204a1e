"""Provides the outbox's operations: storing an event in the caller's transaction, sending it
after the commit, and relaying what a crash left behind.

Exactly once: a rolled-back transaction takes its rows with it; a committed row is sent by
whichever comes first, the commit hook or the relay, each claiming it for a lease
(EVENTHUB_OUTBOX_LEASE seconds) with a conditional UPDATE or, on databases that have it,
SELECT … FOR UPDATE SKIP LOCKED; a sender that dies after sending but before marking the row
sent leaves it to be sent again after its lease, with the same Idempotency-Key, which the hub
answers with the first answer, publishing nothing twice.
"""

import logging
import signal
import threading
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from eventhub_client._http import RetryPolicy
from eventhub_client.client import Client
from eventhub_client.django.models import OutboxEvent
from eventhub_client.errors import ApiError

logger = logging.getLogger(__name__)

# Answers a resend cannot change (bad event, event too large, not JSON); 401/403 (a wrong key
# or a suspended tenant) are retried: an operator fixes those.
REFUSED_FOR_GOOD = frozenset({400, 413, 415, 422})

_client: Client | None = None
_client_lock = threading.Lock()


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def hub_client() -> Client:
    """The process's client for EVENTHUB_URL and EVENTHUB_KEY (made on first use)."""
    global _client
    with _client_lock:
        if _client is None:
            url, key = _setting("EVENTHUB_URL", None), _setting("EVENTHUB_KEY", None)
            if not url or not key:
                raise ImproperlyConfigured(
                    "The Eventhub outbox needs EVENTHUB_URL and EVENTHUB_KEY"
                )
            _client = Client(
                url,
                key=key,
                timeout=float(_setting("EVENTHUB_TIMEOUT", 10.0)),
                retry=RetryPolicy(total_wait=float(_setting("EVENTHUB_RETRY_WAIT", 5.0))),
            )
        return _client


def publish_on_commit(
    topic: str, data: Any, type: str | None = None, *, using: str | None = None
) -> OutboxEvent:
    """Stores the event in the current transaction (of database `using`) and sends it once
    that transaction commits; returns the stored row. Rolled back, it is never sent. Outside
    a transaction it is stored and sent at once. A send that fails is left to the relay."""
    alias = using or router.db_for_write(OutboxEvent)
    row = OutboxEvent.objects.using(alias).create(topic=topic, type=type or "", data=data)
    if _setting("EVENTHUB_OUTBOX_SEND_ON_COMMIT", True):
        transaction.on_commit(lambda: _send_after_commit(row.pk, alias), using=alias)
    return row


def _send_after_commit(pk: Any, alias: str) -> None:
    """Called after the commit of the transaction that stored the row."""
    try:
        if _claim(OutboxEvent.objects.using(alias).filter(pk=pk), alias):
            _send(OutboxEvent.objects.using(alias).get(pk=pk), alias)
    except Exception:
        # The caller's transaction is committed: its request must not fail for this.
        logger.exception("eventhub outbox: sending %s after commit failed; the relay will", pk)


def _lease() -> timedelta:
    return timedelta(seconds=float(_setting("EVENTHUB_OUTBOX_LEASE", 60)))


def _claimable(now: Any) -> Q:
    unsent = Q(sent_at__isnull=True, failed_at__isnull=True)
    return unsent & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))


def _claim(rows: Any, alias: str) -> bool:
    """Claims the given row for a lease; False when another sender holds it or it is sent."""
    now = timezone.now()
    claim = {"claimed_until": now + _lease(), "claimed_by": uuid.uuid4()}
    return rows.filter(_claimable(now)).update(**claim) == 1


def _claim_batch(alias: str, limit: int) -> list[OutboxEvent]:
    """Claims up to `limit` unsent rows, oldest first, that no other sender holds.

    The UPDATE re-checks that each row is still claimable, so two senders never both get a
    row whatever the database; with SKIP LOCKED (PostgreSQL, MySQL 8, Oracle) they do not
    even wait for each other's rows."""
    now = timezone.now()
    claim_id = uuid.uuid4()
    outbox = OutboxEvent.objects.using(alias)
    with transaction.atomic(using=alias):
        pending = outbox.filter(_claimable(now)).order_by("created_at")
        if connections[alias].features.has_select_for_update_skip_locked:
            pending = pending.select_for_update(skip_locked=True)
        candidates = list(pending.values_list("pk", flat=True)[:limit])
        outbox.filter(pk__in=candidates).filter(_claimable(now)).update(
            claimed_until=now + _lease(), claimed_by=claim_id
        )
    return list(outbox.filter(claimed_by=claim_id, sent_at__isnull=True).order_by("created_at"))


def _send(row: OutboxEvent, alias: str) -> bool:
    """Publishes a claimed row and marks it sent; True when the hub accepted it."""
    OutboxEvent.objects.using(alias).filter(pk=row.pk).update(attempts=row.attempts + 1)
    try:
        accepted = hub_client().publish(
            row.topic, row.data, type=row.type or None, idempotency_key=row.idempotency_key
        )
    except Exception as error:  # the hub unreachable or refusing: retried after the lease
        logger.warning("eventhub outbox: %s not sent: %s", row.pk, error)
        failed: dict[str, Any] = {"last_error": str(error)[:1000]}
        if isinstance(error, ApiError) and error.status in REFUSED_FOR_GOOD:
            failed["failed_at"] = timezone.now()  # a resend would be refused the same way
        OutboxEvent.objects.using(alias).filter(pk=row.pk).update(**failed)
        return False
    OutboxEvent.objects.using(alias).filter(pk=row.pk).update(
        sent_at=timezone.now(), event_id=accepted.get("id", ""), last_error=""
    )
    return True


def relay_once(*, using: str | None = None, limit: int = 100) -> int:
    """Sends up to `limit` unsent rows that no one holds (left by a crash, a failed send, or
    EVENTHUB_OUTBOX_SEND_ON_COMMIT off); returns how many the hub accepted."""
    alias = using or router.db_for_write(OutboxEvent)
    return sum(_send(row, alias) for row in _claim_batch(alias, limit))


def relay_forever(
    *, using: str | None = None, limit: int = 100, interval: float = 1.0, stop: Any = None
) -> None:
    """Relays until SIGTERM or SIGINT (or `stop`, a threading.Event, is set), polling every
    `interval` seconds while there is nothing to send."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        try:
            sent = relay_once(using=using, limit=limit)
        except Exception:
            logger.exception("eventhub outbox: relay pass failed")
            sent = 0
        if not sent:
            stop.wait(interval)  # else more may be waiting: the next pass at once
