"""The ingest path: publish requests answered ahead of Django give the answers Django's stack
gives (status, body, headers), and take no detour through it."""

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_started
from prometheus_client import REGISTRY

from eventhub.asgi import application
from streams import runtime
from tenants.models import ApiKey
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.factories import ACTOR, TenantFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Building a handler of its own, Django warns that `collectstatic` has not run.
    pytest.mark.filterwarnings("ignore:No directory at"),
]

# What a client or a proxy would look at; Date and Content-Length aside.
COMPARED_HEADERS = (
    "content-type",
    "allow",
    "vary",
    "www-authenticate",
    "retry-after",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "x-frame-options",
    "strict-transport-security",
    "set-cookie",
)
ACCEPTED_FIELDS = {"id", "seq", "received_at"}  # differ between two publishes by nature


async def send(
    app, key: str | None, path: str, content, base_url: str = "http://testserver", **headers: str
):
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    headers.setdefault("Content-Type", "application/json")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        return await client.post(path, content=content, headers=headers)


def answer(response: httpx.Response) -> tuple:
    """What the client gets, with what differs between two accepted publishes left out."""
    body = response.json()
    if response.status_code == 202:
        events = body.get("events", [body])
        for event in events:
            assert set(event) >= ACCEPTED_FIELDS
            for field in ACCEPTED_FIELDS:
                event.pop(field)
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, body, headers


def django_asgi_app():
    """Django's own handler, built now: its middleware read the settings as they are."""
    return ASGIHandler()


@pytest.fixture
def django_requests():
    """Counts requests that went through Django's handler."""
    seen = []

    def count(**kwargs):
        seen.append(kwargs)

    request_started.connect(count)
    yield seen
    request_started.disconnect(count)


def keys(tenant) -> dict[str, str]:
    revoked = api_key_issue(actor=ACTOR, tenant=tenant, name="revoked")
    api_key_revoke(actor=ACTOR, api_key=ApiKey.objects.get(pk=revoked.api_key.pk))
    suspended = TenantFactory()
    suspended_key = api_key_issue(actor=ACTOR, tenant=suspended).secret
    tenant_set_active(actor=ACTOR, tenant=suspended, active=False)
    return {
        "good": api_key_issue(actor=ACTOR, tenant=tenant).secret,
        "subscribe only": api_key_issue(actor=ACTOR, tenant=tenant, scopes=["subscribe"]).secret,
        "revoked": revoked.secret,
        "suspended": suspended_key,
        "unknown": "ehk_00000000_" + "x" * 43,
    }


ONE = b'{"topic": "orders", "type": "created", "data": {"n": 1}}'
EVENTS, BATCH = "/api/v1/events", "/api/v1/events/batch"
DEEP = b'{"topic": "t", "data": ' + b"[" * 40 + b"]" * 40 + b"}"
LARGE = b'{"topic": "t", "data": "' + b"x" * 70_000 + b'"}'
LONG_BATCH = b'{"events": [' + b", ".join([ONE] * 501) + b"]}"
BAD_IN_BATCH = b'{"events": [' + ONE + b', {"topic": ""}]}'
CASES = {
    "an event": ("good", EVENTS, ONE, {}),
    "a batch": ("good", BATCH, b'{"events": [' + ONE + b", " + ONE + b"]}", {}),
    "a bad topic": ("good", EVENTS, b'{"topic": "a b", "data": 1}', {}),
    "a topic that is no string": ("good", EVENTS, b'{"topic": 42, "data": 1}', {}),
    "no data": ("good", EVENTS, b'{"topic": "t"}', {}),
    "broken JSON": ("good", EVENTS, b'{"topic": ', {}),
    "NaN": ("good", EVENTS, b'{"topic": "t", "data": NaN}', {}),
    "a JSON list": ("good", EVENTS, b"[1, 2]", {}),
    "data nested too deep": ("good", EVENTS, DEEP, {}),
    "data too large": ("good", EVENTS, LARGE, {}),
    "a NUL in data": ("good", EVENTS, b'{"topic": "t", "data": "\\u0000"}', {}),
    "an empty batch": ("good", BATCH, b'{"events": []}', {}),
    "a batch too long": ("good", BATCH, LONG_BATCH, {}),
    "a batch with a bad event": ("good", BATCH, BAD_IN_BATCH, {}),
    "an unknown key": ("unknown", EVENTS, ONE, {}),
    "a revoked key": ("revoked", EVENTS, ONE, {}),
    "a key without the publish scope": ("subscribe only", EVENTS, ONE, {}),
    "a suspended tenant": ("suspended", EVENTS, ONE, {}),
    "an empty bearer": ("", EVENTS, ONE, {}),
    "a bad Idempotency-Key": ("good", EVENTS, ONE, {"Idempotency-Key": "\x7f"}),
    "a body that is not JSON": ("good", EVENTS, b"topic=t", {"Content-Type": "text/plain"}),
    "a charset": ("good", EVENTS, ONE, {"Content-Type": "application/json; charset=utf-8"}),
    "HTTPS behind a proxy": ("good", EVENTS, ONE, {"X-Forwarded-Proto": "https"}),
    "no body": ("good", EVENTS, b"", {}),
    "no body to batch": ("good", BATCH, b"", {}),
    "an Accept of HTML": ("good", EVENTS, ONE, {"Accept": "text/html"}),
    "an Accept of HTML and an unknown key": ("unknown", EVENTS, ONE, {"Accept": "text/html"}),
    "an Accept of anything": ("good", EVENTS, ONE, {"Accept": "text/html, */*;q=0.8"}),
    "an Accept of indented JSON": ("good", EVENTS, ONE, {"Accept": "application/json; indent=4"}),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_ingest_path_answers_as_django_does(case, tenant, settings):
    settings.EVENTHUB_MAX_EVENT_BYTES = 65536
    settings.SECURE_HSTS_SECONDS = 3600
    who, path, content, headers = CASES[case]
    key = (await sync_to_async(keys)(tenant))[who] if who else ""

    fast = await send(application, key, path, content, **headers)
    django = await send(django_asgi_app(), key, path, content, **headers)

    assert fast.status_code < 500, fast.text
    assert answer(fast) == answer(django)


async def test_a_body_over_the_size_cap_is_413_on_both_paths(api_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    content = b'{"topic": "t", "data": "' + b"x" * 2000 + b'"}'

    fast = await send(application, api_key, "/api/v1/events", content)
    django = await send(django_asgi_app(), api_key, "/api/v1/events", content)

    assert fast.status_code == 413
    assert answer(fast) == answer(django)


async def test_an_idempotent_retry_gets_the_first_answer_on_either_path(api_key):
    fast = await send(application, api_key, "/api/v1/events", ONE, **{"Idempotency-Key": "k1"})
    django = await send(
        django_asgi_app(), api_key, "/api/v1/events", ONE, **{"Idempotency-Key": "k1"}
    )
    other = await send(
        application, api_key, "/api/v1/events", ONE + b" ", **{"Idempotency-Key": "k1"}
    )

    assert fast.status_code == django.status_code == 202
    assert fast.json() == django.json()  # the same event: id and seq included
    assert other.status_code == 422


@pytest.fixture
def slow_key(db):
    """A key of a tenant that may publish one event a second."""
    return api_key_issue(actor=ACTOR, tenant=TenantFactory(publish_rate=1)).secret


async def test_the_rate_limit_answers_alike_on_both_paths(slow_key):
    key = slow_key

    first = await send(application, key, "/api/v1/events", ONE)
    fast = await send(application, key, "/api/v1/events", ONE)
    django = await send(django_asgi_app(), key, "/api/v1/events", ONE)

    assert first.status_code == 202
    assert fast.status_code == 429
    assert answer(fast) == answer(django)


async def test_a_keyed_json_publish_does_not_go_through_django(api_key, django_requests):
    one = await send(application, api_key, "/api/v1/events", ONE)
    batch = await send(application, api_key, "/api/v1/events/batch", b'{"events": [' + ONE + b"]}")
    refused = await send(application, "ehk_00000000_" + "x" * 43, "/api/v1/events", ONE)

    assert (one.status_code, batch.status_code, refused.status_code) == (202, 202, 401)
    assert django_requests == []


async def test_what_the_ingest_path_does_not_take_goes_to_django(api_key, django_requests):
    no_key = await send(application, None, "/api/v1/events", ONE)
    form = await send(
        application, api_key, "/api/v1/events", b"topic=t", **{"Content-Type": "text/plain"}
    )
    history = await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ).get("/api/v1/events", headers={"Authorization": f"Bearer {api_key}"})
    bad_host = await send(application, api_key, "/api/v1/events", ONE, Host="evil.example")

    assert no_key.status_code == 401
    assert form.status_code == 415
    assert history.status_code == 200
    assert bad_host.status_code == 400
    assert len(django_requests) == 4


async def chunks(body: bytes):
    """A body sent in pieces with no Content-Length (Transfer-Encoding: chunked)."""
    for start in range(0, len(body), 10):
        yield body[start : start + 10]


async def test_a_chunked_body_is_published_on_both_paths(api_key):
    fast = await send(application, api_key, EVENTS, chunks(ONE))
    django = await send(django_asgi_app(), api_key, EVENTS, chunks(ONE))

    assert fast.status_code == 202, fast.text
    assert answer(fast) == answer(django)


async def test_a_query_string_format_goes_to_django(api_key, django_requests):
    fast = await send(application, api_key, EVENTS + "?format=json", ONE)
    django = await send(django_asgi_app(), api_key, EVENTS + "?format=json", ONE)

    assert len(django_requests) == 2
    assert fast.status_code == django.status_code


@pytest.mark.parametrize("forwarded", ["http", "https"])
async def test_hsts_follows_the_proxys_word_over_the_connections_scheme(
    api_key, settings, forwarded
):
    settings.SECURE_HSTS_SECONDS = 3600
    url = "https://testserver"
    proto = {"X-Forwarded-Proto": forwarded}

    fast = await send(application, api_key, EVENTS, ONE, base_url=url, **proto)
    django = await send(django_asgi_app(), api_key, EVENTS, ONE, base_url=url, **proto)

    assert answer(fast) == answer(django)
    assert ("strict-transport-security" in fast.headers) == (forwarded == "https")


async def test_json_nested_near_the_recursion_limit_is_a_400_at_every_depth(api_key):
    # Where parsing still succeeds but encoding again would not depends on how deep the stack
    # already is; every depth around Python's recursion limit must get the same 400 either way.
    for depth in range(850, 1010, 3):
        content = b'{"topic": "t", "data": ' + b"[" * depth + b"]" * depth + b"}"
        fast = await send(application, api_key, EVENTS, content)
        django = await send(django_asgi_app(), api_key, EVENTS, content)

        assert fast.status_code == 400, (depth, fast.text)
        assert answer(fast) == answer(django), depth


async def test_a_publish_whose_request_is_cancelled_still_finishes_and_keeps_its_answer(
    api_key, monkeypatch
):
    backend = runtime.get_backend()
    sequenced, release = asyncio.Event(), asyncio.Event()
    publish = backend.publish

    async def slow_publish(*args, **kwargs):
        envelopes = await publish(*args, **kwargs)
        sequenced.set()
        await release.wait()  # the event is out; its Idempotency-Key record is not yet written
        return envelopes

    monkeypatch.setattr(backend, "publish", slow_publish)
    first = asyncio.create_task(send(application, api_key, EVENTS, ONE, **{"Idempotency-Key": "c"}))
    await asyncio.wait_for(sequenced.wait(), 5)
    first.cancel()  # as daphne does to a request whose client left
    release.set()
    monkeypatch.setattr(backend, "publish", publish)

    retry = await send(application, api_key, EVENTS, ONE, **{"Idempotency-Key": "c"})

    assert retry.status_code == 202, retry.text
    assert retry.json()["seq"] == 1  # the first publish's answer: not published twice
    after = await send(application, api_key, EVENTS, ONE)
    assert after.json()["seq"] == 2


async def test_publish_requests_are_counted_by_status_on_either_path(api_key):
    def answered(status: str) -> float:
        sample = {"status": status}
        return REGISTRY.get_sample_value("eventhub_publish_requests_total", sample) or 0.0

    before = {status: answered(status) for status in ("202", "401", "415")}

    await send(application, api_key, EVENTS, ONE)
    await send(django_asgi_app(), api_key, EVENTS, ONE)
    await send(application, "ehk_00000000_" + "x" * 43, BATCH, ONE)
    await send(application, api_key, EVENTS, b"topic=t", **{"Content-Type": "text/plain"})

    counted = {status: answered(status) - before[status] for status in before}
    assert counted == {"202": 2, "401": 1, "415": 1}
    assert REGISTRY.get_sample_value("eventhub_publish_duration_seconds_count") >= 4
