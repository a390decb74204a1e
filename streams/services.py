"""Provides the writes of the streams app: events accepted for a tenant (sequenced and fanned
out by the running process's engine and hub) and subscriber token revocations. The log's own
writes are in `streams.log.writes`."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from streams import runtime
from streams.backends import HubUnavailable
from streams.envelope import Envelope
from streams.groups import HUBS_GROUP
from streams.layer_messages import token_revoked_message
from streams.models import RevokedToken
from streams.revoked_tokens import TOKEN_MAX_TTL, revoked_tokens
from tenants.actors import Actor
from tenants.services import audit_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventInput:
    topic: str
    type: str
    data_json: str  # already encoded and size-checked by the caller


async def events_accept(
    *, tenant_id: int, events: Sequence[EventInput], rate: int | None = None
) -> list[Envelope]:
    """Accepts checked events for a tenant: sequences them, fans them out and hands them to the
    log, in one step of the engine. Called by `publishing.publish_request` on the event loop.

    Writes nothing to the database. Raises RateLimited when the tenant's `rate` (events/s) is
    spent, HubUnavailable when the shared state (Redis) cannot be reached; then nothing was
    accepted.
    """
    items = [(e.topic, e.type, e.data_json) for e in events]
    try:
        await runtime.get_hub().start()
    except Exception as exc:
        # The hub joins the channel layer at the first publish or subscription: a layer whose
        # Redis cannot be reached (down, or TLS-only to a plain redis:// URL) is a 503, not a 500.
        logger.warning("could not join the channel layer (%s)", exc)
        raise HubUnavailable(str(exc)) from exc
    return await runtime.get_backend().publish(tenant_id, items, timezone.now(), rate)


def token_revoke(*, tenant_id: int, token_id: str, actor: Actor) -> None:
    """Revokes one subscriber token (its id checked by the caller with `token_id_valid`):
    connections with it are refused from now on, in this process at once and in others within
    EVENTHUB_KEY_CACHE_SECONDS, and each hub closes its live ones (4403) at its next credential
    check. Revoking it again changes nothing and records nothing.

    Rows of tokens that have expired since are deleted on the way: the table holds about one
    day of revocations, whatever their number.
    """
    now = timezone.now()
    with transaction.atomic():
        _, created = RevokedToken.objects.get_or_create(
            token_id=token_id, defaults={"tenant_id": tenant_id, "revoked_at": now}
        )
        if not created:
            return
        audit_record(actor=actor, action="token.revoke", tenant_id=tenant_id, target=token_id)
        RevokedToken.objects.filter(
            revoked_at__lt=now - timedelta(seconds=TOKEN_MAX_TTL + 3600)
        ).delete()
        transaction.on_commit(lambda: _token_revoked_announce(tenant_id, token_id, now))


def _token_revoked_announce(tenant_id: int, token_id: str, revoked_at: datetime) -> None:
    """Tells this process and every hub (through the channel layer) at once. The layer may
    drop it (it is at most once, and Redis may be down): each hub also reads the revocations
    from the database at its next credential check, as a connect does when its view is stale."""
    revoked_tokens.remember(token_id, revoked_at)
    message = token_revoked_message(tenant_id, token_id, revoked_at.timestamp())
    try:
        async_to_sync(get_channel_layer().group_send)(HUBS_GROUP, message)
    except Exception:
        logger.warning("could not announce a token revocation; hubs will read it", exc_info=True)
