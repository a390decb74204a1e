"""Provides factory_boy factories for the models."""

from datetime import UTC, datetime

import factory

from streams.envelope import Envelope
from tenants.actors import Actor
from tenants.models import Tenant


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda t: t.slug.title())


# The actor of the writes tests make through the services, as the audit trail records them.
ACTOR = Actor.command("tests")


def envelope_make(seq: int, tenant_id: int = 1, data_json: str = "null") -> Envelope:
    """An accepted event as the engines build it (topic `t`, type `message`), for tests of
    what handles envelopes without an engine."""
    return Envelope.build(
        tenant_id=tenant_id,
        seq=seq,
        epoch="e",
        topic="t",
        type="message",
        data_json=data_json,
        received_at=datetime.now(UTC),
    )
