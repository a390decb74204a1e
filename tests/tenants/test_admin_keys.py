"""A key added in the admin: its secret is in that response only, never in a cookie or a later
page (issue 11)."""

import pytest
from django.contrib.auth import get_user_model

from tenants.models import ApiKey

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]


def test_a_new_keys_secret_is_shown_in_the_response_only(client, tenant):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))

    response = client.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant.pk, "name": "billing", "scopes": ["publish", "subscribe"]},
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(tenant=tenant, name="billing")
    page = response.content.decode()
    secret = page.split('id="issued-secret">', 1)[1].split("<", 1)[0]
    assert secret.startswith(f"ehk_{key.prefix.removeprefix('ehk_')}")
    assert "no-store" in response["Cache-Control"]
    # The part after `ehk_<prefix>_`: its 43 URL-safe characters may hold "_" themselves (a
    # tail after the last one could be a single character, found in any cookie).
    hidden = secret.split("_", 2)[2]
    assert len(hidden) >= 40
    assert all(hidden not in morsel.value for morsel in response.cookies.values())
    assert all(hidden not in morsel.value for morsel in client.cookies.values())
    later = client.get("/admin/tenants/apikey/").content.decode()
    assert key.prefix in later
    assert hidden not in later
