"""Provides the Django integration: a transactional outbox. Add `"eventhub_client.django"` to
INSTALLED_APPS, set EVENTHUB_URL and EVENTHUB_KEY, migrate, then call
`publish_on_commit(topic, data, type=None)` inside your transactions and run
`manage.py eventhub_outbox_relay` alongside your workers."""

from typing import Any


def __getattr__(name: str) -> Any:
    # The models cannot be imported before Django's app registry is ready (INSTALLED_APPS
    # imports this package first), so the outbox's functions load when first used.
    if name in ("publish_on_commit", "relay_once", "relay_forever"):
        from eventhub_client.django import outbox

        return getattr(outbox, name)
    raise AttributeError(name)
