"""The tenant page's presence panel: who is online on a topic, live, and the tenant's topics with
their counts; and eventhub.js's presence (`presence: true`, `hub.presence(topic)`, `presence`
events) in the pages of the token holders, over WebSocket and SSE."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PRESENCE_GRACE, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOPIC = "room.42"

# A token holder's page: eventhub.js with presence, what it is told kept in `window.changes`.
START_HOLDER = """
async ({ transport, token, topic }) => {
  const { EventhubClient } = await import("/static/eventhub.js");
  window.changes = [];
  const client = new EventhubClient({ transport, token, topics: [topic], presence: true });
  client.on("presence", ({ type, user }) => window.changes.push(`${type} ${user || ""}`.trim()));
  await new Promise((welcomed) => {
    client.on("welcome", welcomed);
    client.connect();
  });
  window.holder = client;
}
"""


def open_holder(context, hub, tenant, *, user: str, transport: str) -> Page:
    """A page of its own (no dashboard cookie) connected as `user` with presence."""
    token = hub.subscriber_token(tenant, (TOPIC,), user=user, info={"name": user.title()})
    page = context.browser.new_context().new_page()
    page.goto(f"{hub.url}/healthz")
    page.evaluate(START_HOLDER, {"transport": transport, "token": token, "topic": TOPIC})
    return page


def present(page: Page) -> list[str]:
    return page.evaluate(f"window.holder.presence({TOPIC!r}).map((u) => u.user).sort()")


def test_the_panel_shows_who_comes_and_goes_and_does_not_count_itself(
    hub, tenants, page, context, screenshot
):
    tenant = tenants["presence"]
    log_in(page, hub.url, f"/dashboard/{tenant.slug}/")
    panel = page.locator("#presence")
    panel.get_by_label("Topic").fill(TOPIC)
    panel.get_by_role("button", name="Watch").click()
    expect(page.locator("#presence-state")).to_have_class("state open")
    expect(page.locator("#presence-users li")).to_have_count(0)

    ada = open_holder(context, hub, tenant, user="ada", transport="websocket")
    users = page.locator("#presence-users li")
    expect(users).to_have_count(1)
    expect(users.first).to_have_attribute("data-user", "ada")
    expect(users.first).to_contain_text('{"name":"Ada"}')
    row = page.locator(f'#presence-topics tr[data-topic="{TOPIC}"] td')
    expect(row).to_have_text([TOPIC, "1", "1"])  # the dashboard's own connection not counted
    assert present(ada) == ["ada"]

    bob = open_holder(context, hub, tenant, user="bob", transport="sse")
    expect(users).to_have_count(2)
    expect(row).to_have_text([TOPIC, "2", "2"])
    assert present(bob) == ["ada", "bob"]
    ada.wait_for_function("window.changes.includes('join bob')")  # told of bob
    screenshot(page, "ada and bob online")

    bob.context.close()
    expect(page.locator('#presence-users li[data-user="bob"]')).to_have_count(
        0, timeout=int((PRESENCE_GRACE + 8) * 1000)
    )
    ada.wait_for_function("window.changes.includes('leave bob')")
    assert present(ada) == ["ada"]
    expect(row).to_have_text([TOPIC, "1", "1"])

    ada.context.close()
    expect(users).to_have_count(0)
    expect(page.locator("#presence-topics tbody tr")).to_have_count(0)
    screenshot(page, "everyone gone")
