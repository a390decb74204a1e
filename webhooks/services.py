"""Provides the webhooks' writes: endpoints (create, delete, secret rotation), and the sender's
claims and attempt outcomes."""

import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tenants.actors import Actor
from tenants.models import AuditAction
from tenants.services import audit_record
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.signing import secret_new, secret_open, secret_reseal, secret_seal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def webhook_endpoint_create(
    *, tenant_id: int, url: str, topics: Sequence[str], kinds: Sequence[str], actor: Actor
) -> CreatedEndpoint:
    """Registers an endpoint (its URL already checked) and returns it with its new secret."""
    secret = secret_new()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            tenant_id=tenant_id,
            url=url,
            topics=list(topics),
            kinds=list(kinds),
            secret_sealed=secret_seal(secret),
        )
        audit_record(
            actor=actor,
            action=AuditAction.WEBHOOK_CREATE,
            tenant_id=tenant_id,
            target=str(endpoint.pk),
            changes={"url": [None, url], "topics": [None, list(topics)], "kinds": [None, kinds]},
        )
    return CreatedEndpoint(endpoint, secret)


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Deletes an endpoint and its deliveries: nothing more is sent to it."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.WEBHOOK_DELETE,
            tenant_id=endpoint.tenant_id,
            target=str(endpoint.pk),
            changes={"url": [endpoint.url, None]},
        )
        endpoint.delete()


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, actor: Actor) -> str:
    """Gives the endpoint a new secret and returns it (shown once); the old one still signs
    beside it for EVENTHUB_WEBHOOK_SECRET_GRACE seconds, so receivers can switch over."""
    secret = secret_new()
    with transaction.atomic():
        # The stored secret as it is now (a reseal may have sealed it again since `endpoint`
        # was read), and locked until this rotation is in.
        current = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret_sealed = current.secret_sealed
        endpoint.previous_secret_until = timezone.now() + timedelta(
            seconds=settings.EVENTHUB_WEBHOOK_SECRET_GRACE
        )
        endpoint.secret_sealed = secret_seal(secret)
        endpoint.save(
            update_fields=["secret_sealed", "previous_secret_sealed", "previous_secret_until"]
        )
        audit_record(
            actor=actor,
            action=AuditAction.WEBHOOK_ROTATE,
            tenant_id=endpoint.tenant_id,
            target=str(endpoint.pk),
        )
    return secret


def webhook_secrets_reseal() -> list[int]:
    """Seals every endpoint's secret, and a rotated-out one still in its grace, under the
    current SECRET_KEY; run once every process has the new key, with the old one in
    SECRET_KEY_FALLBACKS. A rotated-out secret past its grace, or sealed under no key in use,
    is cleared (it signs nothing any more). Returns the ids of endpoints whose current secret
    is sealed under no key in use: they need a secret rotation."""
    unreadable = []
    ids = WebhookEndpoint.objects.order_by("pk").values_list("pk", flat=True)
    for endpoint_id in list(ids):
        with transaction.atomic():
            # Locked: a secret rotation meanwhile waits, and then copies the resealed secret.
            endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
            if endpoint is None:
                continue  # deleted meanwhile
            try:
                endpoint.secret_sealed = secret_reseal(endpoint.secret_sealed)
            except InvalidToken:
                unreadable.append(endpoint_id)
            endpoint.previous_secret_sealed = _previous_resealed(endpoint)
            if not endpoint.previous_secret_sealed:
                endpoint.previous_secret_until = None
            endpoint.save(
                update_fields=["secret_sealed", "previous_secret_sealed", "previous_secret_until"]
            )
    return unreadable


def _previous_resealed(endpoint: WebhookEndpoint) -> str:
    until = endpoint.previous_secret_until
    if not endpoint.previous_secret_sealed or until is None or until <= timezone.now():
        return ""  # none, or past its grace
    try:
        return secret_reseal(endpoint.previous_secret_sealed)
    except InvalidToken:
        return ""


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> None:
    """Turns a disabled endpoint back on; its failure clock starts again."""
    endpoint.active, endpoint.disabled_reason, endpoint.failing_since = True, "", None
    endpoint.save(update_fields=["active", "disabled_reason", "failing_since"])


def webhook_delivery_resend(*, delivery: WebhookDelivery, actor: Actor) -> None:
    """Sends a delivery again from the start of the retry schedule (the admin's action on a
    dead one)."""
    with transaction.atomic():
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = timezone.now()
        delivery.save(update_fields=["status", "attempts", "next_attempt_at"])
        audit_record(
            actor=actor,
            action=AuditAction.WEBHOOK_RESEND,
            tenant_id=delivery.endpoint.tenant_id,
            target=delivery.webhook_id,
        )


# The sender's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery the sender holds for one attempt, with what it needs to send it."""

    id: int
    endpoint_id: int
    tenant_id: int
    url: str
    webhook_id: str
    body: str
    secrets: tuple[str, ...]


UNREADABLE_SECRET = (
    "Its secret is sealed under none of SECRET_KEY and SECRET_KEY_FALLBACKS (SECRET_KEY was "
    "changed without its fallback): rotate the secret, then enable it."
)


def _secrets(endpoint: WebhookEndpoint, now) -> tuple[str, ...] | None:
    """The secrets that sign its deliveries; None when its current one opens under no key in
    use. A rotated-out one that does not open signs nothing."""
    try:
        secrets = [secret_open(endpoint.secret_sealed)]
    except InvalidToken:
        return None
    if endpoint.previous_secret_sealed and (endpoint.previous_secret_until or now) > now:
        with contextlib.suppress(InvalidToken):
            secrets.append(secret_open(endpoint.previous_secret_sealed))
    return tuple(secrets)


def deliveries_claim(
    *, free: Mapping[int, int], saturated: Sequence[int], default_free: int, limit: int
) -> list[Claimed]:
    """Takes due deliveries for one attempt each, oldest first, at most `free[endpoint]` (or
    `default_free`) per endpoint and none of the `saturated` ones: a slow endpoint holds only
    its own slots. A claim is a lease: one whose sender dies is due again once it runs out.

    On PostgreSQL several workers claim side by side (FOR UPDATE SKIP LOCKED).
    """
    now = timezone.now()
    # Long enough for the attempt and its record; a dead sender's claims are due after it.
    lease = timedelta(seconds=settings.EVENTHUB_WEBHOOK_TIMEOUT * 1.5 + 5)
    due = (
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now, endpoint__active=True
        )
        .exclude(endpoint_id__in=list(saturated))
        .order_by("next_attempt_at", "id")
    )
    # A read first: with nothing due (most polls) no transaction is opened, which on SQLite
    # (BEGIN IMMEDIATE) would take the write lock from the log writer every second.
    if not due.exists():
        return []
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        taken: dict[int, int] = {}
        chosen: list[int] = []
        for delivery_id, endpoint_id in due.values_list("id", "endpoint_id")[: limit * 4]:
            if taken.get(endpoint_id, 0) >= free.get(endpoint_id, default_free):
                continue
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            chosen.append(delivery_id)
            if len(chosen) >= limit:
                break
        if not chosen:
            return []
        WebhookDelivery.objects.filter(id__in=chosen).update(next_attempt_at=now + lease)
        rows = (
            WebhookDelivery.objects.filter(id__in=chosen)
            .select_related("endpoint")
            .order_by("next_attempt_at", "id")
        )
        order = {delivery_id: i for i, delivery_id in enumerate(chosen)}
        # Each endpoint's secrets opened once for all its deliveries in this claim.
        signing: dict[int, tuple[str, ...] | None] = {}
        claimed, unsigned = [], set()
        for d in sorted(rows, key=lambda d: order[d.pk]):
            if d.endpoint_id not in signing:
                signing[d.endpoint_id] = _secrets(d.endpoint, now)
            secrets = signing[d.endpoint_id]
            if secrets is None:
                unsigned.add(d.endpoint_id)
                continue
            claimed.append(
                Claimed(
                    id=d.pk,
                    endpoint_id=d.endpoint_id,
                    tenant_id=d.endpoint.tenant_id,
                    url=d.endpoint.url,
                    webhook_id=d.webhook_id,
                    body=d.body,
                    secrets=secrets,
                )
            )
        if unsigned:
            # Nothing of it can be signed: it waits, disabled and saying why, and the other
            # endpoints' deliveries go on. Its deliveries are kept for when it is enabled.
            WebhookEndpoint.objects.filter(pk__in=unsigned).update(
                active=False, disabled_reason=UNREADABLE_SECRET
            )
            logger.error("webhook endpoints %s: secret sealed under no key in use", unsigned)
        return claimed


def _retry_delay(attempts: int) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: no more (dead)."""
    schedule = settings.EVENTHUB_WEBHOOK_RETRY_SCHEDULE
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(0.8, 1.2)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: a status code (None: no answer), an error text, when, how long."""

    claimed: Claimed
    at: datetime
    status_code: int | None
    error: str
    duration_ms: int


def delivery_attempts_record(*, outcomes: Sequence[Outcome]) -> None:
    """Records attempts and what follows each (delivered, a retry, dead), in one transaction
    and a few statements however many; an endpoint failing for EVENTHUB_WEBHOOK_DISABLE_AFTER
    seconds is disabled when one of its deliveries dies. A delivery gone meanwhile (its
    endpoint deleted) is skipped."""
    now = timezone.now()
    with transaction.atomic():
        deliveries = WebhookDelivery.objects.select_for_update().in_bulk(
            [o.claimed.id for o in outcomes]
        )
        attempts, changed = [], []
        succeeded: set[int] = set()
        failed: set[int] = set()
        died: dict[int, str] = {}
        for outcome in outcomes:
            delivery = deliveries.get(outcome.claimed.id)
            if delivery is None:
                continue
            status_code, error = outcome.status_code, outcome.error[:300]
            attempts.append(
                WebhookAttempt(
                    delivery=delivery,
                    at=outcome.at,
                    status_code=status_code,
                    error=error,
                    duration_ms=outcome.duration_ms,
                )
            )
            if delivery.status != DeliveryStatus.PENDING:
                continue
            delivery.attempts += 1
            delivery.last_status_code = status_code
            delivery.last_error = error
            if status_code is not None and 200 <= status_code < 300:
                delivery.status = DeliveryStatus.DELIVERED
                delivery.next_attempt_at = None
                succeeded.add(delivery.endpoint_id)
            else:
                failed.add(delivery.endpoint_id)
                delay = _retry_delay(delivery.attempts)
                if delay is None:
                    delivery.status = DeliveryStatus.DEAD
                    delivery.next_attempt_at = None
                    died[delivery.endpoint_id] = error or str(status_code)
                else:
                    delivery.next_attempt_at = now + timedelta(seconds=delay)
            changed.append(delivery)
        WebhookAttempt.objects.bulk_create(attempts)
        WebhookDelivery.objects.bulk_update(
            changed, ["status", "attempts", "last_status_code", "last_error", "next_attempt_at"]
        )
        endpoints = WebhookEndpoint.objects
        endpoints.filter(pk__in=succeeded - failed, failing_since__isnull=False).update(
            failing_since=None
        )
        endpoints.filter(pk__in=failed - succeeded, failing_since__isnull=True).update(
            failing_since=now
        )
        cutoff = now - timedelta(seconds=settings.EVENTHUB_WEBHOOK_DISABLE_AFTER)
        days = settings.EVENTHUB_WEBHOOK_DISABLE_AFTER / 86400
        for endpoint_id, last in died.items():
            endpoints.filter(pk=endpoint_id, active=True, failing_since__lte=cutoff).update(
                active=False,
                disabled_reason=f"Every delivery failed for {days:g} days (last: {last})"[:300],
            )
