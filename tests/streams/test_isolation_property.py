"""A property of the whole hub, in-process: whatever tenants, keys, tokens, subscriptions and
publishes there are, every subscriber receives exactly the events of its own tenant that its
patterns match, each once and in seq order, and a subscription outside its grant is refused.

Hypothesis drives a sync test (examples share one database, so slugs are unique per example);
each example runs its async part on a fresh loop with a fresh process state.
"""

import asyncio
import itertools
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from hypothesis import given, settings
from hypothesis import strategies as st

from eventhub.asgi import application
from streams import runtime
from tenants import selectors
from tenants.services import api_key_issue, tenant_create
from tests.conftest import asgi_client
from tests.factories import ACTOR

# Topics and patterns chosen to collide: `a*` matches `ab` and `a.b`, `a.*` only the latter.
TOPICS = ["a", "ab", "a.b", "a.c", "b", "b.a"]
PATTERNS = ["*", "a", "a*", "a.*", "a.b", "ab", "b*"]
KEYS_PER_TENANT = 2

_slugs = itertools.count()


def matches(pattern: str, topic: str) -> bool:
    """The contract's reading of a pattern: `*` all, `p*` a prefix, anything else exact."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


def covered(pattern: str, grant: list[str]) -> bool:
    """A pattern is allowed when every topic it matches is matched by one granted pattern."""
    return any(g == pattern or (g.endswith("*") and pattern.startswith(g[:-1])) for g in grant)


@dataclass(frozen=True)
class Subscription:
    tenant: int
    key: int
    grant: tuple[str, ...] | None  # None: subscribes with the key itself (everything)
    asked: tuple[str, ...]
    names_tenant: int | None  # a `tenant=` parameter naming some tenant, which must not matter

    @property
    def admitted(self) -> bool:
        return self.grant is None or all(covered(p, list(self.grant)) for p in self.asked)


@st.composite
def scenarios(draw):
    tenants = draw(st.integers(2, 3))
    tenant_index = st.integers(0, tenants - 1)
    patterns = st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True)
    subscriptions = draw(
        st.lists(
            st.builds(
                Subscription,
                tenant=tenant_index,
                key=st.integers(0, KEYS_PER_TENANT - 1),
                grant=st.none() | patterns.map(tuple),
                asked=patterns.map(tuple),
                names_tenant=st.none() | tenant_index,
            ),
            min_size=1,
            max_size=4,
        )
    )
    publishes = draw(
        st.lists(st.tuples(tenant_index, st.sampled_from(TOPICS)), min_size=1, max_size=10)
    )
    return tenants, subscriptions, publishes


def fresh_process_state() -> None:
    runtime.reset()
    channel_layers.backends.clear()
    selectors.api_key_cache_clear()


async def subscribe(sub: Subscription, keys, slugs) -> tuple[WebsocketCommunicator, dict]:
    key = keys[sub.tenant][sub.key]
    params = {"topics": ",".join(sub.asked)}
    headers = []
    if sub.grant is None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    else:
        async with asgi_client(key) as client:
            response = await client.post("/api/v1/tokens", json={"topics": list(sub.grant)})
        assert response.status_code == 201, response.content
        params["token"] = response.json()["token"]
    if sub.names_tenant is not None:
        params["tenant"] = slugs[sub.names_tenant]
    ws = WebsocketCommunicator(application, f"/ws/v1/events?{urlencode(params)}", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    return ws, await ws.receive_json_from(timeout=2)


async def run(subscriptions, publishes, keys, slugs) -> None:
    opened = [await subscribe(sub, keys, slugs) for sub in subscriptions]
    accepted = []
    for tenant, topic in publishes:
        async with asgi_client(keys[tenant][0]) as client:
            response = await client.post("/api/v1/events", json={"topic": topic, "data": topic})
        assert response.status_code == 202, response.content
        accepted.append((tenant, response.json()))

    live = []
    for sub, (ws, first) in zip(subscriptions, opened, strict=True):
        if not sub.admitted:
            assert first == {"type": "error", "code": 4403, "detail": first["detail"]}, sub
            assert (await ws.receive_output(timeout=2))["code"] == 4403
            continue
        assert first["type"] == "welcome", (sub, first)
        expected = [
            event["id"]
            for tenant, event in accepted
            if tenant == sub.tenant and any(matches(p, event["topic"]) for p in sub.asked)
        ]
        got = [await ws.receive_json_from(timeout=2) for _ in expected]
        assert [frame["id"] for frame in got] == expected, sub
        seqs = [frame["seq"] for frame in got]
        assert seqs == sorted(set(seqs)), sub
        live.append(ws)
    # Nothing more for anyone (waited for once, side by side).
    assert all(await asyncio.gather(*(ws.receive_nothing(timeout=0.1) for ws in live)))
    for ws, _ in opened:
        await ws.disconnect()
    await runtime.shutdown()


@pytest.mark.django_db(transaction=True)
@settings(max_examples=25, deadline=None)
@given(scenario=scenarios())
def test_every_subscriber_gets_exactly_what_its_tenant_and_patterns_allow(scenario):
    tenants, subscriptions, publishes = scenario
    fresh_process_state()
    slugs, keys = [], []
    for _ in range(tenants):
        tenant = tenant_create(actor=ACTOR, slug=f"iso-{next(_slugs)}")
        slugs.append(tenant.slug)
        keys.append(
            [api_key_issue(actor=ACTOR, tenant=tenant).secret for _ in range(KEYS_PER_TENANT)]
        )
    try:
        async_to_sync(run)(subscriptions, publishes, keys, slugs)
    finally:
        fresh_process_state()


# Presence ------------------------------------------------------------------------------------

USERS = ["ada", "bob"]
ROOMS = ["room", "hall"]


@st.composite
def presence_scenarios(draw):
    """Connections of two tenants with the same user names on the same topics."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 1),
                st.sampled_from(USERS),
                st.lists(st.sampled_from(ROOMS), min_size=1, max_size=2, unique=True),
            ),
            min_size=1,
            max_size=5,
        )
    )


async def present_via_api(key: str, topic: str) -> set[str]:
    async with asgi_client(key) as client:
        response = await client.get("/api/v1/presence", params={"topic": topic})
    assert response.status_code == 200, response.content
    return {u["user"] for u in response.json()["users"]}


async def run_presence(connections, keys) -> None:
    opened = []
    for tenant, user, topics in connections:
        async with asgi_client(keys[tenant]) as client:
            response = await client.post(
                "/api/v1/tokens", json={"topics": topics, "user": user, "info": {"t": tenant}}
            )
        assert response.status_code == 201, response.content
        params = {"token": response.json()["token"], "topics": ",".join(topics), "presence": "1"}
        ws = WebsocketCommunicator(application, f"/ws/v1/events?{urlencode(params)}")
        assert (await ws.connect())[0]
        welcome = await ws.receive_json_from(timeout=2)
        present_before = {
            topic: {(t, u) for t, u, ts in connections[: len(opened) + 1] if topic in ts}
            for topic in topics
        }
        for topic in topics:
            assert {u["user"] for u in welcome["presence"][topic]} == {
                u for t, u in present_before[topic] if t == tenant
            }, (tenant, user, topic)
            assert all(u["info"] == {"t": tenant} for u in welcome["presence"][topic])
        opened.append((tenant, user, topics, ws, present_before))

    for tenant in (0, 1):
        for topic in ROOMS:
            assert await present_via_api(keys[tenant], topic) == {
                u for t, u, ts in connections if t == tenant and topic in ts
            }
    for tenant, user, topics, ws, present_before in opened:
        joins = set()
        while not await ws.receive_nothing(timeout=0.1):
            frame = await ws.receive_json_from(timeout=1)
            assert frame["type"] == "join", frame
            assert frame["info"] == {"t": tenant}, "another tenant's join reached it"
            joins.add((frame["topic"], frame["user"]))
        expected = {
            (topic, u)
            for t, u, ts in connections
            for topic in topics
            if t == tenant and topic in ts and u != user and (t, u) not in present_before[topic]
        }
        assert joins == expected, (tenant, user, topics)
    for *_, ws, _ in opened:
        await ws.disconnect()
    await runtime.shutdown()


@pytest.mark.django_db(transaction=True)
@settings(max_examples=15, deadline=None)
@given(connections=presence_scenarios())
def test_a_tenants_presence_is_never_visible_to_another(connections):
    fresh_process_state()
    keys = [
        api_key_issue(
            actor=ACTOR, tenant=tenant_create(actor=ACTOR, slug=f"iso-{next(_slugs)}")
        ).secret
        for _ in range(2)
    ]
    try:
        async_to_sync(run_presence)(connections, keys)
    finally:
        fresh_process_state()
