"""Provides `manage.py create_tenant SLUG`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.actors import Actor
from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Creates a tenant."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--max-connections", type=int, default=None)
        parser.add_argument("--publish-rate", type=int, default=None)

    def handle(self, *args, slug, name, max_connections, publish_rate, **options):
        for label, value in (
            ("--max-connections", max_connections),
            ("--publish-rate", publish_rate),
        ):
            if value is not None and value < 1:
                raise CommandError(f"{label} must be a positive integer.")
        try:
            tenant = tenant_create(
                actor=Actor.command("manage.py create_tenant"),
                slug=slug,
                name=name,
                max_connections=max_connections,
                publish_rate=publish_rate,
            )
        except ValidationError as exc:
            messages = (f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError("; ".join(messages)) from None
        self.stdout.write(f"Created tenant {tenant.slug}")
