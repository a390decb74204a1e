"""Provides `manage.py eventhub_outbox_relay`: sends the outbox rows no commit hook sent."""

from django.core.management.base import BaseCommand

from eventhub_client.django.outbox import relay_forever, relay_once


class Command(BaseCommand):
    help = "Sends unsent Eventhub outbox events (left by a crash or a failed send)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--batch", type=int, default=100, help="rows claimed per pass")
        parser.add_argument("--database", default=None, help="database alias")

    def handle(self, *args, once: bool, interval: float, batch: int, database, **options):
        if once:
            sent = relay_once(using=database, limit=batch)
            self.stdout.write(f"sent {sent}")
            return
        relay_forever(using=database, limit=batch, interval=interval)
