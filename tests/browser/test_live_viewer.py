"""The tenant page's live viewer shows what is published, over WebSocket and over SSE, and its
test-publish form publishes."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import eventually_equal, log_in, seqs_shown

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_a_logged_in_user_sees_api_events_arrive_over_websocket_then_sse(
    hub, tenants, page, screenshot
):
    tenant = tenants["viewer"]
    log_in(page, hub.url)
    screenshot(page, "overview after login")

    page.goto(f"{hub.url}/dashboard/{tenant.slug}/")
    expect(page.locator("#transport")).to_have_value("websocket")
    expect(page.locator("#state")).to_have_class("state open")
    first = hub.publish(tenant, "orders.created", {"order": 1, "note": "<b>as text</b>"})

    arrived = page.locator(f'#events li[data-seq="{first["seq"]}"]')
    expect(arrived).to_contain_text("orders.created")
    expect(arrived).to_contain_text('"note": "<b>as text</b>"')
    expect(arrived.locator("b")).to_have_count(0)
    assert hub.connections(tenant) == {"websocket": 1, "sse": 0}
    expect(page.locator("#ws-count")).to_have_text("1")
    screenshot(page, "event over websocket")

    page.locator("#transport").select_option("sse")
    expect(page.locator("#state")).to_have_class("state open")
    eventually_equal(
        lambda: hub.connections(tenant),
        {"websocket": 0, "sse": 1},
        within=5,
        what="the hub's count of the tenant's connections after the switch to SSE",
    )
    second = hub.publish(tenant, "orders.shipped", {"order": 1, "carrier": "café ☕ 配送"})

    arrived = page.locator(f'#events li[data-seq="{second["seq"]}"]')
    expect(arrived).to_contain_text("orders.shipped")
    expect(arrived).to_contain_text('"carrier": "café ☕ 配送"')
    assert seqs_shown(page) == [second["seq"], first["seq"]]
    expect(page.locator("#sse-count")).to_have_text("1")
    expect(page.locator("#ws-count")).to_have_text("0")
    screenshot(page, "event over sse")


def test_the_test_publish_form_publishes_and_the_viewer_shows_the_event(
    hub, tenants, page, screenshot
):
    tenant = tenants["form"]
    log_in(page, hub.url, f"/dashboard/{tenant.slug}/")
    expect(page.locator("#state")).to_have_class("state open")
    form = page.locator("#publish")

    form.get_by_label("Topic").fill("forms.submitted")
    form.get_by_label("Type").fill("submitted")
    form.get_by_label("Data (JSON)").fill('{"field": "value", "n": 7}')
    form.get_by_role("button", name="Publish").click()

    expect(page.locator("#publish-result")).to_have_text("Published #1")
    arrived = page.locator('#events li[data-seq="1"]')
    expect(arrived.locator(".meta span")).to_contain_text(["#1", "forms.submitted", "submitted"])
    expect(arrived.locator("pre")).to_have_text('{\n  "field": "value",\n  "n": 7\n}')
    screenshot(page, "published from the form")

    form.get_by_label("Data (JSON)").fill("{not json")
    form.get_by_role("button", name="Publish").click()

    expect(page.locator("#publish-result")).to_have_text("Data is not valid JSON.")
    assert seqs_shown(page) == [1]
