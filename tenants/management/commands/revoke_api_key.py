"""Provides `manage.py revoke_api_key KEY_PREFIX_OR_KEY`."""

from django.core.management.base import BaseCommand, CommandError

from tenants.actors import Actor
from tenants.selectors import api_key_find
from tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revokes an API key, given its prefix or the whole key."

    def add_arguments(self, parser):
        parser.add_argument("key")

    def handle(self, *args, key, **options):
        api_key = api_key_find(prefix_or_key=key)
        if api_key is None:
            raise CommandError("No such API key.")
        api_key_revoke(actor=Actor.command("manage.py revoke_api_key"), api_key=api_key)
        self.stdout.write(f"Revoked API key {api_key.prefix} of {api_key.tenant.slug}")
