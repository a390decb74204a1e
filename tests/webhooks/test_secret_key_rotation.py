"""Rotating SECRET_KEY the Django way (the old key moved to SECRET_KEY_FALLBACKS) keeps every
webhook signing; `reseal_webhook_secrets` then seals the secrets under the new key, after which
the old key can go."""

from datetime import timedelta

import pytest
from cryptography.fernet import InvalidToken
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.factories import ACTOR
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.signing import secret_open

OLD_KEY = "old-secret-key-" + "a1b2c3d4e5" * 5
NEW_KEY = "new-secret-key-" + "f6g7h8i9j0" * 5


def registered(tenant, path: str) -> WebhookEndpoint:
    return services.webhook_endpoint_create(
        tenant_id=tenant.pk,
        url=f"http://127.0.0.1:9/{path}",
        topics=["*"],
        kinds=["event"],
        actor=ACTOR,
    ).endpoint


@pytest.fixture
def endpoint_sealed_under_the_old_key(db, tenant, settings, allow_private):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    created = registered(tenant, "hook")
    services.webhook_secret_rotate(endpoint=created, actor=ACTOR)  # one in its grace
    endpoint = WebhookEndpoint.objects.get(pk=created.pk)
    return (
        endpoint,
        secret_open(endpoint.secret_sealed),
        secret_open(endpoint.previous_secret_sealed),
    )


def test_after_a_rotation_with_the_old_key_as_fallback_the_secrets_still_open(
    endpoint_sealed_under_the_old_key, settings
):
    endpoint, secret, previous = endpoint_sealed_under_the_old_key

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]

    assert secret_open(endpoint.secret_sealed) == secret
    assert secret_open(endpoint.previous_secret_sealed) == previous


def test_resealed_secrets_open_once_the_old_key_is_gone(
    endpoint_sealed_under_the_old_key, settings
):
    endpoint, secret, previous = endpoint_sealed_under_the_old_key
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]

    call_command("reseal_webhook_secrets")
    settings.SECRET_KEY_FALLBACKS = []

    endpoint.refresh_from_db()
    assert secret_open(endpoint.secret_sealed) == secret
    assert secret_open(endpoint.previous_secret_sealed) == previous


def test_without_the_old_key_the_secrets_do_not_open_and_the_command_names_the_endpoint(
    endpoint_sealed_under_the_old_key, settings
):
    endpoint, _, _ = endpoint_sealed_under_the_old_key
    sealed = endpoint.secret_sealed
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, []

    with pytest.raises(InvalidToken):
        secret_open(endpoint.secret_sealed)
    with pytest.raises(CommandError, match=f"endpoints {endpoint.pk}\\b"):
        call_command("reseal_webhook_secrets")
    endpoint.refresh_from_db()
    assert endpoint.secret_sealed == sealed  # left as it was, for the old key to come back


def test_a_rotated_out_secret_past_its_grace_is_cleared_not_resealed(
    endpoint_sealed_under_the_old_key, settings
):
    endpoint, secret, _ = endpoint_sealed_under_the_old_key
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]

    call_command("reseal_webhook_secrets")

    endpoint.refresh_from_db()
    settings.SECRET_KEY_FALLBACKS = []
    assert secret_open(endpoint.secret_sealed) == secret
    assert endpoint.previous_secret_sealed == ""
    assert endpoint.previous_secret_until is None


def test_a_rotation_from_an_endpoint_read_before_the_reseal_keeps_the_resealed_secret(
    endpoint_sealed_under_the_old_key, settings
):
    endpoint, secret, _ = endpoint_sealed_under_the_old_key  # read before the reseal
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    call_command("reseal_webhook_secrets")

    new_secret = services.webhook_secret_rotate(endpoint=endpoint, actor=ACTOR)
    settings.SECRET_KEY_FALLBACKS = []

    endpoint.refresh_from_db()
    assert secret_open(endpoint.secret_sealed) == new_secret
    assert secret_open(endpoint.previous_secret_sealed) == secret  # opens without the old key


def test_an_endpoint_whose_secret_no_key_opens_is_disabled_and_the_others_are_still_sent(
    endpoint_sealed_under_the_old_key, tenant, settings
):
    lost, _, _ = endpoint_sealed_under_the_old_key
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, []  # the old key forgotten
    fine = registered(tenant, "other")
    for endpoint in (lost, fine):
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            webhook_id=f"msg_{endpoint.pk}",
            type="event",
            body="{}",
            next_attempt_at=timezone.now(),
        )

    claimed = services.deliveries_claim(free={}, saturated=[], default_free=10, limit=10)

    assert [c.endpoint_id for c in claimed] == [fine.pk]
    lost.refresh_from_db()
    assert not lost.active
    assert "SECRET_KEY" in lost.disabled_reason
    assert WebhookDelivery.objects.filter(endpoint=lost).exists()  # kept for when it is enabled
