"""Provides factory_boy factories for the models."""

import factory

from tenants.actors import Actor
from tenants.models import Tenant


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda t: t.slug.title())


# The actor of the writes tests make through the services, as the audit trail records them.
ACTOR = Actor.command("tests")
