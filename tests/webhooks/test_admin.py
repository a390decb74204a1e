"""The webhooks admin: an endpoint added there shows its secret once, a rotation shows the new
one once and is recorded, a dead delivery can be sent again, and no page shows a secret."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import AuditEntry
from tests.factories import ACTOR
from webhooks import services
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


@pytest.fixture
def admin():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


def test_an_endpoint_added_in_the_admin_shows_its_secret_once(admin, tenant, allow_private):
    response = admin.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"tenant": tenant.pk, "url": "http://127.0.0.1:9/", "topics": "orders.*, *",
         "kinds": ["event", "occupancy"], "active": "on"},
    )  # fmt: skip

    assert response.status_code == 200, response.content
    [secret] = SECRET.findall(response.content.decode())
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.topics == ["orders.*", "*"]
    assert endpoint.kinds == ["event", "occupancy"]
    change = admin.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/")
    listing = admin.get("/admin/webhooks/webhookendpoint/")
    for page in (change, listing):
        assert page.status_code == 200
        assert secret not in page.content.decode()
        assert secret.removeprefix("whsec_") not in page.content.decode()


def test_the_admin_refuses_an_internal_url(admin, tenant):
    response = admin.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"tenant": tenant.pk, "url": "http://localhost/", "topics": "*", "kinds": ["event"]},
    )

    assert response.status_code == 200
    assert "loopback" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_rotating_a_secret_shows_the_new_one_once_and_is_recorded(admin, tenant, allow_private):
    created = services.webhook_endpoint_create(
        tenant_id=tenant.pk, url="http://127.0.0.1:9/", topics=["*"], kinds=["event"], actor=ACTOR
    )

    response = admin.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "rotate_secret", "_selected_action": [created.endpoint.pk]},
    )

    assert response.status_code == 200
    [secret] = SECRET.findall(response.content.decode())
    assert secret != created.secret
    assert AuditEntry.objects.filter(action="webhook.rotate").exists()


def test_a_dead_delivery_can_be_sent_again_from_the_admin(admin, tenant, allow_private):
    created = services.webhook_endpoint_create(
        tenant_id=tenant.pk, url="http://127.0.0.1:9/", topics=["*"], kinds=["event"], actor=ACTOR
    )
    dead = WebhookDelivery.objects.create(
        endpoint=created.endpoint,
        webhook_id="1-abc",
        type="event",
        body="{}",
        status=DeliveryStatus.DEAD,
        attempts=10,
        last_status_code=500,
        last_error="HTTP 500",
    )
    listing = admin.get("/admin/webhooks/webhookdelivery/")
    assert "HTTP 500" in listing.content.decode()

    admin.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "resend", "_selected_action": [dead.pk]},
    )

    dead.refresh_from_db()
    assert dead.status == DeliveryStatus.PENDING
    assert dead.attempts == 0
    assert dead.next_attempt_at is not None
    assert AuditEntry.objects.filter(action="webhook.resend").exists()


def test_the_dashboard_shows_a_disabled_endpoint_and_why(admin, tenant, allow_private):
    created = services.webhook_endpoint_create(
        tenant_id=tenant.pk,
        url="http://127.0.0.1:9/hook",
        topics=["*"],
        kinds=["event"],
        actor=ACTOR,
    )
    WebhookEndpoint.objects.filter(pk=created.endpoint.pk).update(
        active=False, disabled_reason="Every delivery failed for 5 days."
    )

    page = admin.get(f"/dashboard/{tenant.slug}/").content.decode()

    assert "http://127.0.0.1:9/hook" in page
    assert "disabled: Every delivery failed for 5 days." in page
