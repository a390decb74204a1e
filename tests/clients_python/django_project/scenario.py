"""Runs one step of the outbox tests inside the small Django project, as that project's own
code would, and prints what it left in its database as JSON on the last line:
`python -m tests.clients_python.django_project.scenario STEP TOPIC`."""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.clients_python.django_project.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from eventhub_client.django import publish_on_commit  # noqa: E402
from eventhub_client.django.models import OutboxEvent  # noqa: E402
from eventhub_client.django.outbox import hub_client  # noqa: E402


class Rollback(Exception):
    pass


def rows(topic: str) -> list[dict]:
    return [
        {
            "id": str(r.id),
            "sent": r.sent_at is not None,
            "attempts": r.attempts,
            "event_id": r.event_id,
        }
        for r in OutboxEvent.objects.filter(topic=topic)
    ]


def main(step: str, topic: str) -> None:
    if step == "migrate":
        call_command("migrate", verbosity=0)
    elif step == "rollback":
        try:
            with transaction.atomic():
                publish_on_commit(topic, {"step": step})
                raise Rollback
        except Rollback:
            pass
    elif step == "commit":
        with transaction.atomic():
            publish_on_commit(topic, {"step": step}, type="created")
    elif step == "crash_after_commit":
        with transaction.atomic():
            # Hooks run in order: the process dies after the commit, before the send.
            transaction.on_commit(lambda: os._exit(3))
            publish_on_commit(topic, {"step": step})
    elif step == "crash_after_send":
        settings.EVENTHUB_OUTBOX_SEND_ON_COMMIT = False
        with transaction.atomic():
            row = publish_on_commit(topic, {"step": step})
        # A relay's pass that reached the hub and died before marking the row sent, its
        # lease since run out.
        hub_client().publish(row.topic, row.data, idempotency_key=row.idempotency_key)
        OutboxEvent.objects.filter(pk=row.pk).update(attempts=1, claimed_until=timezone.now())
        os._exit(3)
    elif step == "pending":
        settings.EVENTHUB_OUTBOX_SEND_ON_COMMIT = False
        count = int(os.environ.get("OUTBOX_ROWS", "1"))
        with transaction.atomic():
            for n in range(count):
                publish_on_commit(topic, {"step": step, "n": n})
    elif step == "relay":
        call_command("eventhub_outbox_relay", "--once", "--batch", "1000")
    elif step != "state":
        raise SystemExit(f"unknown step {step}")
    print(json.dumps(rows(topic)))


if __name__ == "__main__":
    main(*sys.argv[1:3])
