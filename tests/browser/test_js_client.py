"""The JavaScript client (/static/eventhub.js), driven in Chromium on a plain page of the hub:
it reconnects after the connection drops, resumes from its last event without losing or
repeating one, keeps a quiet connection alive, and gives up for good when its token is
refused."""

import html
import json
import time
import warnings

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import STALE_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WITHIN_MS = 10_000

# Starts a client and records what it emits in `window.seen`. Its token is a function, which the
# client calls before every connection: `window.holdConnections()` makes the next call wait
# until `window.releaseConnections()`, so a test decides when a reconnection may happen.
START_CLIENT = """
async ({ transport, token }) => {
  const { EventhubClient } = await import("/static/eventhub.js");
  const seen = { states: [], welcomes: [], events: [], errors: [], attempts: [],
                 tokenCalls: 0 };
  let held = null;
  window.seen = seen;
  window.holdConnections = () => {
    held = new Promise((release) => { window.releaseConnections = release; });
  };
  const client = new EventhubClient({
    transport,
    topics: ["*"],
    minDelay: 50,
    maxDelay: 200,
    token: async () => {
      seen.tokenCalls += 1;
      if (held) await held;
      return token;
    },
  });
  client.on("state", (change) => {
    seen.states.push(change.state);
    if (change.state === "reconnecting") seen.attempts.push(change.attempt);
  });
  client.on("welcome", (welcome) => {
    seen.welcomes.push(welcome);
    seen.openSince = performance.now();
  });
  client.on("event", ({ id, seq, data }) => seen.events.push({ id, seq, data }));
  client.on("error", (error) => seen.errors.push({ code: error.code, reason: error.reason }));
  window.hubClient = client.connect();
}
"""


def start_client(page: Page, url: str, transport: str, token: str) -> None:
    page.goto(f"{url}/healthz")
    page.evaluate(START_CLIENT, {"transport": transport, "token": token})


def wait_for(page: Page, condition: str, what: str) -> None:
    """Waits for a JavaScript condition over `seen`; fails with what was seen so far."""
    try:
        page.wait_for_function(f"(seen => {condition})(window.seen)", timeout=WITHIN_MS)
    except Exception as error:
        raise AssertionError(
            f"timed out after {WITHIN_MS} ms waiting for {what}; seen: {seen(page)}"
        ) from error


def seen(page: Page) -> dict:
    return page.evaluate("window.seen")


def show(page: Page, record: dict) -> None:
    """Replaces the page with the client's record, for its screenshot."""
    page.set_content(f"<pre>{html.escape(json.dumps(record, indent=2))}</pre>")


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_client_reconnects_and_resumes_every_event_once_in_order(
    own_hub, tenants, page, screenshot, transport
):
    tenant = tenants["client"]
    start_client(page, own_hub.url, transport, own_hub.subscriber_token(tenant))
    wait_for(page, "seen.welcomes.length === 1", "the first welcome")
    before = [own_hub.publish(tenant, "orders.created", {"n": n}) for n in range(1, 4)]
    wait_for(page, "seen.events.length === 3", "the events published before the restart")

    page.evaluate("window.holdConnections()")
    own_hub.stop()
    wait_for(page, "seen.states.at(-1) === 'reconnecting'", "the client to notice the drop")
    # Let it knock on the closed port a few times, then hold it until events have been missed.
    page.evaluate("window.releaseConnections()")
    wait_for(page, "seen.tokenCalls >= 5", "a few attempts while the server is down")
    page.evaluate("window.holdConnections()")
    own_hub.start_again()
    missed = [own_hub.publish(tenant, "orders.created", {"n": n}) for n in range(4, 7)]
    page.evaluate("window.releaseConnections()")
    wait_for(page, "seen.welcomes.length === 2", "the welcome after the restart")
    live = [own_hub.publish(tenant, "orders.created", {"n": n}) for n in range(7, 9)]
    wait_for(page, "seen.events.length >= 8", "every event, missed and live")

    got = seen(page)
    published = before + missed + live
    assert [e["seq"] for e in got["events"]] == [p["seq"] for p in published] == list(range(1, 9))
    assert [e["id"] for e in got["events"]] == [p["id"] for p in published]
    assert [e["data"] for e in got["events"]] == [{"n": n} for n in range(1, 9)]
    assert [w["recovered"] for w in got["welcomes"]][1:] == [True]
    states = got["states"]
    assert states[:2] == ["connecting", "open"]
    assert states[-1] == "open"
    assert set(states[2:-1]) == {"reconnecting"}
    assert got["attempts"] == sorted(got["attempts"])
    assert max(got["attempts"]) >= 3
    assert got["errors"] == []
    show(page, got)
    screenshot(page, f"{transport} client record")


def test_a_quiet_connection_stays_open_because_the_client_answers_pings(
    hub, tenants, context, screenshot
):
    tenant = tenants["client"]
    pongs = []
    pages = {"websocket": context.new_page(), "sse": context.new_page()}
    pages["websocket"].on(
        "websocket",
        lambda socket: socket.on(
            "framesent", lambda payload: pongs.append(payload) if "pong" in payload else None
        ),
    )
    for transport, page in pages.items():
        start_client(page, hub.url, transport, hub.subscriber_token(tenant))
        wait_for(page, "seen.welcomes.length === 1", f"the {transport} welcome")

    # Longer than the server waits for a frame from a WebSocket client, and than the client
    # waits for a ping before it gives a connection up.
    quiet_ms = int(STALE_TIMEOUT * 1500)
    wait_for(pages["sse"], f"performance.now() - seen.openSince > {quiet_ms}", "a quiet while")
    accepted = hub.publish(tenant, "after.silence", {"still": "here"})

    for transport, page in pages.items():
        wait_for(page, "seen.events.length === 1", f"the event after the silence ({transport})")
        got = seen(page)
        assert got["states"] == ["connecting", "open"], transport
        assert [e["id"] for e in got["events"]] == [accepted["id"]], transport
        show(page, got)
        screenshot(page, f"{transport} quiet connection")
    assert len(pongs) >= 2, pongs


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_refused_token_closes_the_client_for_good(hub, page, screenshot, transport):
    start_client(page, hub.url, transport, "not-a-token")

    wait_for(page, "seen.states.at(-1) === 'closed'", "the client to give up")
    at_close = seen(page)
    # Ten times the longest reconnect delay: a client that retried would have called for a
    # token again by now.
    page.wait_for_timeout(2_000)
    got = seen(page)
    assert got == at_close, "the client went on after it was refused"
    record = {
        "states": got["states"],
        "tokenCalls": got["tokenCalls"],
        "welcomes": got["welcomes"],
        "errors": [e["code"] for e in got["errors"]],
    }
    # Refused (4401) and closed, without a welcome, one token call per attempt.
    assert record["states"][-1] == "closed", record
    assert record["errors"][-1:] == [4401], record
    assert record["welcomes"] == [], record
    assert record["tokenCalls"] == record["states"].count("reconnecting") // 2 + 1, record
    if record["states"] != ["connecting", "closed"]:
        # An attempt before the refusal failed otherwise (seen once in CI, cause unknown: the
        # report's hub log section shows what the server saw); the client was right to retry.
        warnings.warn(f"the first attempt was not refused but failed: {record}", stacklevel=1)
    show(page, got)
    screenshot(page, f"{transport} client refused")


# A client whose token function asks the hub for a token of a few seconds, as a page asks its
# own backend: the client must replace each one before it expires.
START_REFRESHING_CLIENT = """
async ({ transport, key, ttl }) => {
  const { EventhubClient } = await import("/static/eventhub.js");
  const seen = { states: [], welcomes: [], events: [], errors: [], refreshed: [],
                 tokenCalls: 0 };
  window.seen = seen;
  const client = new EventhubClient({
    transport,
    topics: ["*"],
    minDelay: 50,
    maxDelay: 200,
    token: async () => {
      seen.tokenCalls += 1;
      const response = await fetch("/api/v1/tokens", {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
        body: JSON.stringify({ topics: ["*"], ttl }),
      });
      return response.json();  // {token, id, expires_at}: the client takes it as it comes
    },
  });
  client.on("state", (change) => seen.states.push(change.state));
  client.on("welcome", (welcome) => seen.welcomes.push(welcome));
  client.on("refreshed", (refreshed) => seen.refreshed.push(refreshed));
  client.on("event", ({ seq }) => seen.events.push(seq));
  client.on("error", (error) => seen.errors.push({ code: error.code, reason: error.reason }));
  window.hubClient = client.connect();
}
"""


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_client_refreshes_its_token_before_it_expires_and_misses_nothing(
    hub, tenants, page, screenshot, transport
):
    tenant = tenants["refresh"]
    ttl = 3
    page.goto(f"{hub.url}/healthz")
    page.evaluate(START_REFRESHING_CLIENT, {"transport": transport, "key": tenant.key, "ttl": ttl})
    wait_for(page, "seen.welcomes.length === 1", "the first welcome")

    # Published across three token lifetimes, one event every half second.
    published = []
    for n in range(6 * ttl):
        published.append(hub.publish(tenant, "ticks", {"n": n})["seq"])
        time.sleep(0.5)
    wait_for(page, f"seen.events.length >= {len(published)}", "every event")

    got = seen(page)
    show(page, got)
    screenshot(page, f"{transport} client refreshing its token")
    assert got["events"] == published, "an event was lost or repeated across a refresh"
    assert got["errors"] == []
    # To the page a refresh is no new connection, whichever the transport.
    assert got["states"] == ["connecting", "open"], got["states"]
    assert len(got["welcomes"]) == 1
    assert len(got["refreshed"]) >= 2, got
    assert got["tokenCalls"] >= 3, got
