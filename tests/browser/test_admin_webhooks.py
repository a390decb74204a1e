"""A tenant's staff follow its webhooks in the admin and the dashboard: a delivery its receiver
refused until the schedule ran out shows as dead with its attempts, is sent again from the
admin, and arrives with the same webhook-id."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


class Receiver:
    """A webhook receiver on loopback that answers 500 until `accept` is set, then 204."""

    def __init__(self) -> None:
        self.accept = threading.Event()
        self.received: list[tuple[int, str]] = []  # (status answered, webhook-id)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                status = 204 if receiver.accept.is_set() else 500
                receiver.received.append((status, self.headers["webhook-id"]))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def wait_for(check, within: float, what: str):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


def test_a_dead_delivery_is_shown_in_the_admin_and_sent_again_from_it(
    hub, tenants, receiver, page, screenshot
):
    tenant = tenants["webhooks"]
    api = httpx.Client(base_url=hub.url, headers=tenant.auth, timeout=10, trust_env=False)
    endpoint = api.post("/api/v1/webhooks", json={"url": receiver.url, "topics": ["orders.*"]})
    assert endpoint.status_code == 201, endpoint.text
    published = api.post("/api/v1/events", json={"topic": "orders.paid", "data": {"n": 1}})
    assert published.status_code == 202, published.text
    event_id = published.json()["id"]

    def dead():
        deliveries = api.get(f"/api/v1/webhooks/{endpoint.json()['id']}/deliveries").json()
        return [d for d in deliveries["results"] if d["status"] == "dead"]

    wait_for(dead, 20, "the delivery to die after the schedule")
    assert receiver.received == [(500, event_id)] * 3

    log_in(page, hub.url, f"/dashboard/{tenant.slug}/")
    card = page.locator("#webhooks")
    expect(card).to_contain_text(receiver.url)
    expect(card.locator(f"tr[data-endpoint='{endpoint.json()['id']}'] td").nth(5)).to_have_text("1")
    screenshot(page, "dashboard webhooks")

    page.goto(f"{hub.url}/admin/webhooks/webhookdelivery/?q={event_id}")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Dead")
    expect(rows.first).to_contain_text("500")
    screenshot(page, "admin dead delivery")
    receiver.accept.set()
    rows.first.locator("input[type=checkbox]").check()
    page.locator("select[name=action]").select_option(label="Send selected dead deliveries again")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("1 dead deliveries will be sent again")

    wait_for(lambda: (204, event_id) in receiver.received, 20, "the delivery sent again")
    page.goto(f"{hub.url}/admin/webhooks/webhookdelivery/?q={event_id}")
    expect(page.locator("#result_list tbody tr").first).to_contain_text("Delivered")
    page.locator("#result_list tbody tr").first.get_by_role(
        "link", name=re.compile(re.escape(event_id))
    ).click()
    expect(page.locator("body")).to_contain_text("204")  # its attempts, the last one answered
