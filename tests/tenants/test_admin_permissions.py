"""The admin's actions need the right to change what they act on: a staff user who may only
look at tenants and keys can neither suspend, resume nor revoke (issue 11)."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_issue
from tests.factories import ACTOR

pytestmark = [
    pytest.mark.django_db,
    # The test client builds a handler of its own; Django warns that `collectstatic` has not run.
    pytest.mark.filterwarnings("ignore:No directory at"),
]


def staff_with(*codenames: str):
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def run_action(client, model: str, action: str, pk: int):
    return client.post(
        f"/admin/tenants/{model}/", {"action": action, "_selected_action": [str(pk)]}
    )


def test_a_view_only_staff_user_cannot_suspend_a_tenant(client, tenant):
    client.force_login(staff_with("view_tenant"))

    run_action(client, "tenant", "suspend", tenant.pk)

    assert Tenant.objects.get(pk=tenant.pk).is_active is True


def test_a_view_only_staff_user_cannot_revoke_a_key(client, tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="app")
    client.force_login(staff_with("view_apikey", "view_tenant"))

    run_action(client, "apikey", "revoke", issued.api_key.pk)

    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


def test_a_staff_user_who_may_change_tenants_suspends_and_resumes_them(client, tenant):
    client.force_login(staff_with("view_tenant", "change_tenant"))

    run_action(client, "tenant", "suspend", tenant.pk)
    assert Tenant.objects.get(pk=tenant.pk).is_active is False
    run_action(client, "tenant", "resume", tenant.pk)
    assert Tenant.objects.get(pk=tenant.pk).is_active is True


def test_a_staff_user_who_may_change_keys_revokes_them(client, tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="app")
    client.force_login(staff_with("view_apikey", "change_apikey", "view_tenant"))

    run_action(client, "apikey", "revoke", issued.api_key.pk)

    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
