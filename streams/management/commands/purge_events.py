"""Provides `manage.py purge_events [--older-than DAYS]`, the event log's retention."""

from django.core.management.base import BaseCommand, CommandError

from streams.log.writes import events_purge


class Command(BaseCommand):
    help = "Deletes events older than DAYS (default 30) from the event log."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=30.0, metavar="DAYS")

    def handle(self, *args, older_than, **options):
        if older_than < 0:
            raise CommandError("--older-than must not be negative.")
        deleted = events_purge(older_than_days=older_than)
        self.stdout.write(f"Deleted {deleted} events older than {older_than:g} days.")
