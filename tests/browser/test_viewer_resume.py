"""The tenant page's viewer survives a restart of the server: it reconnects on its own, resumes
from the last event it showed, and lists every event once, with no gap."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in, seqs_shown

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_viewer_resumes_without_a_gap_when_the_server_restarts(
    own_hub, tenants, page, screenshot, transport
):
    tenant = tenants["resume"]
    log_in(page, own_hub.url, f"/dashboard/{tenant.slug}/")
    page.locator("#transport").select_option(transport)
    state = page.locator("#state")
    expect(state).to_have_class("state open")
    for n in range(1, 4):
        own_hub.publish(tenant, "before.restart", {"n": n})
    expect(page.locator("#events li")).to_have_count(3)

    own_hub.stop()
    expect(state).to_have_class("state reconnecting")
    screenshot(page, f"{transport} reconnecting while the server is down")
    own_hub.start_again()
    # Published as soon as the server is back: most of these reach the page by replay, once it
    # reconnects with the id of the last event it showed; whatever comes later comes live.
    for n in range(4, 7):
        own_hub.publish(tenant, "after.restart", {"n": n})

    expect(page.locator("#events li")).to_have_count(6)
    expect(state).to_have_class("state open")
    assert seqs_shown(page) == [6, 5, 4, 3, 2, 1]
    expect(page.locator('#events li[data-seq="4"]')).to_contain_text("after.restart")
    screenshot(page, f"{transport} resumed after the restart")

    own_hub.publish(tenant, "live.again", {"n": 7})

    expect(page.locator('#events li[data-seq="7"]')).to_contain_text("live.again")
    assert seqs_shown(page) == [7, 6, 5, 4, 3, 2, 1]
