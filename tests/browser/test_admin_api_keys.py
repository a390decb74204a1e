"""An admin issues an API key in the Django admin: the secret is shown once, works against the
API, and is never shown again."""

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import STAFF

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_an_admin_adds_an_api_key_whose_secret_is_shown_once_and_works(
    hub, tenants, page, screenshot
):
    tenant = tenants["admin"]
    page.goto(f"{hub.url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    username, password = STAFF
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()

    page.goto(f"{hub.url}/admin/tenants/apikey/add/")
    page.get_by_label("Tenant").select_option(label=tenant.slug)
    page.get_by_label("Name").fill("billing service")
    page.get_by_role("checkbox", name="history").uncheck()
    screenshot(page, "add form")
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.locator(".warning")).to_contain_text("Copy the new key now, it is not shown again")
    shown = page.locator("#issued-secret")
    expect(shown).to_contain_text("ehk_")
    screenshot(page, "secret shown once")
    secret = shown.inner_text().strip()
    prefix, hidden_part = re.fullmatch(r"ehk_([0-9a-f]+)_(\S+)", secret).groups()

    auth = {"Authorization": f"Bearer {secret}"}
    published = httpx.post(
        f"{hub.url}/api/v1/events",
        json={"topic": "billing.paid", "data": {"invoice": 9}},
        headers=auth,
        trust_env=False,
    )
    assert published.status_code == 202, published.text
    history = httpx.get(f"{hub.url}/api/v1/events", headers=auth, trust_env=False)
    assert history.status_code == 403, "the unchecked history scope was granted"

    # Not in a cookie the browser keeps sending back (Django's message storage).
    assert all(hidden_part not in c["value"] for c in page.context.cookies())
    page.get_by_role("link", name="Back to the API keys").click()
    expect(page.locator(".messagelist")).to_have_count(0)
    expect(page.locator("#result_list")).to_contain_text(prefix)
    assert hidden_part not in page.content()
    page.locator("#result_list").get_by_role("link", name=prefix).click()
    expect(page.get_by_label("Name")).to_have_value("billing service")
    expect(page.get_by_role("checkbox", name="publish")).to_be_checked()
    expect(page.get_by_role("checkbox", name="history")).not_to_be_checked()
    assert hidden_part not in page.content()
    screenshot(page, "change page without the secret")
