"""The tenants overview at /dashboard/: for logged-in users only, and live."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_an_anonymous_visitor_is_sent_to_the_login_page(hub, page, screenshot):
    page.goto(f"{hub.url}/dashboard/")

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/dashboard/$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    screenshot(page, "login page")


def test_logging_out_lands_on_the_login_page_and_closes_the_dashboard(hub, page, screenshot):
    log_in(page, hub.url)

    page.get_by_role("button", name="Log out staff").click()

    expect(page).to_have_url(f"{hub.url}/accounts/login/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    screenshot(page, "logged out")
    page.goto(f"{hub.url}/dashboard/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/dashboard/$"))


def test_the_overview_counts_a_tenant_page_open_in_another_tab_live(
    hub, tenants, context, page, screenshot
):
    tenant = tenants["overview"]
    log_in(page, hub.url)
    row = page.locator(f'#tenants tr[data-slug="{tenant.slug}"]')
    expect(row.get_by_role("link", name=tenant.slug)).to_be_visible()
    expect(row.locator('[data-field="websocket"]')).to_have_text("0")
    expect(row.locator('[data-field="accepted"]')).to_have_text("0")

    second_tab = context.new_page()
    second_tab.goto(f"{hub.url}/dashboard/{tenant.slug}/")
    expect(second_tab.locator("#state")).to_have_class("state open")
    for n in range(3):
        hub.publish(tenant, "overview.tick", {"n": n})

    expect(row.locator('[data-field="websocket"]')).to_have_text("1")
    expect(row.locator('[data-field="accepted"]')).to_have_text("3")
    expect(row.locator('[data-field="delivered"]')).to_have_text("3")
    screenshot(page, "tenant page open in another tab")

    second_tab.close()

    expect(row.locator('[data-field="websocket"]')).to_have_text("0")
    screenshot(page, "tenant page closed")
