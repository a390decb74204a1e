"""Reading publish bodies within bounds: sizes refused before parsing, large batches read one
event at a time (the same answers as a whole parse), rate and fairness before the cost."""

import asyncio
import json
import math

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import ParseError, ValidationError

from eventhub.asgi import application
from eventhub.parsers import json_deeper, json_parse_text
from streams import event_input
from streams.event_input import (
    PayloadTooLarge,
    _BatchReader,
    _Slicer,
    _validate_whole,
    body_limit,
    events_read,
)
from tenants.services import api_key_issue
from tests.factories import ACTOR, TenantFactory
from tests.streams.test_ingest import django_asgi_app, send

pytestmark = pytest.mark.django_db(transaction=True)

EVENT = '{"topic": "a", "data": {"x": [1, 2]}}'


def batch(*events: str) -> str:
    return '{"events": [' + ", ".join(events) + "]}"


def spam(n: int) -> str:
    """Data of `n` empty objects: cheap to send, costly to parse, walk and keep."""
    return "[" + ",".join(["{}"] * n) + "]"


# Sizes -------------------------------------------------------------------------------------


def test_one_event_may_have_a_small_multiple_of_the_event_limit_and_a_batch_the_body_limit(
    settings,
):
    settings.EVENTHUB_MAX_EVENT_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000_000
    assert 2000 < body_limit(batch=False) < 40_000
    assert body_limit(batch=True) == 1_000_000


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/batch"])
async def test_a_body_over_its_limit_by_declared_length_is_413_on_both_paths(
    path, api_key, settings
):
    settings.EVENTHUB_MAX_EVENT_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    size = body_limit(batch=path.endswith("batch")) + 1
    content = b'{"topic": "t", "data": "' + b"x" * size + b'"}'

    fast = await send(application, api_key, path, content)
    django = await send(django_asgi_app(), api_key, path, content)

    assert fast.status_code == django.status_code == 413
    assert fast.json() == django.json() == {"detail": "Request body too large."}


async def test_a_body_over_its_declared_limit_is_taken_off_the_queue_and_none_of_it_kept():
    """The ingest path refuses by the declared length and keeps nothing, but empties what
    daphne queued, which would otherwise stay in memory until daphne's cleanup."""
    from streams.ingest import _read_body

    queued = [{"type": "http.request", "body": b"x" * 8192, "more_body": True}] * 99
    queued.append({"type": "http.request", "body": b"x", "more_body": False})
    pending = iter(queued)

    async def receive():
        return next(pending)

    headers = {b"content-length": str(99 * 8192 + 1).encode()}
    assert await _read_body(headers, receive, limit=1000) is None
    assert next(pending, None) is None


async def test_a_chunked_body_over_the_limit_is_413_once_it_passes_it(settings):
    settings.EVENTHUB_MAX_EVENT_BYTES = 1000
    with pytest.raises(RequestDataTooBig):
        await events_read(tenant_id=1, raw_body=b" " * (body_limit(batch=False) + 1), batch=False)


async def test_a_batch_between_the_two_limits_is_accepted_whole(api_key, settings):
    settings.EVENTHUB_MAX_EVENT_BYTES = 1000
    events = [{"topic": "big", "data": "x" * 900} for _ in range(100)]
    content = json.dumps({"events": events}).encode()
    assert body_limit(batch=False) < len(content) < body_limit(batch=True)

    response = await send(application, api_key, "/api/v1/events/batch", content)

    assert response.status_code == 202, response.text
    assert [e["seq"] for e in response.json()["events"]] == list(range(1, 101))


# Reading a large batch one event at a time --------------------------------------------------


def whole(text: str):
    """What a parse of the whole text, then the batch serializer, answers."""
    try:
        return "ok", _validate_whole(json_parse_text(text), batch=True)
    except (ParseError, ValidationError, PayloadTooLarge) as exc:
        return type(exc).__name__, exc.detail


def stepwise(text: str):
    try:
        return "ok", asyncio.run(_BatchReader(text, _Slicer()).read())
    except (ParseError, ValidationError, PayloadTooLarge) as exc:
        return type(exc).__name__, exc.detail


BODIES = {
    "a batch": batch(*[EVENT] * 5),
    "other keys and whitespace": ' { "x" : [1, {"a": 3}], "events" : [ ' + EVENT + " ] } ",
    "bad events among good": batch(EVENT, '{"topic": "a b"}', "5", EVENT),
    "the last of two events keys, a list": '{"events": "x", "events": [' + EVENT + "]}",
    "the last of two events keys, not a list": '{"events": [' + EVENT + '], "events": "x"}',
    "a truncated body": '{"events": [' + EVENT,
    "extra data": batch(EVENT) + " x",
    "a list": "[1, 2, 3]",
    "a string": '"events"',
    "an empty list of events": '{"events": []}',
    "events that are an object": '{"events": {}}',
    "no events": '{"a": 1}',
    "an empty object": "{}",
    "a batch too long": batch(*[EVENT] * 501),
    "NaN": batch('{"topic": "t", "data": NaN}'),
    "a trailing comma": batch(EVENT)[:-2] + ",]}",
    "a missing comma": batch(EVENT + " " + EVENT),
    "a missing colon": '{"events" [' + EVENT + "]}",
    "a key without quotes": "{events: 1}",
    "a NUL": batch('{"topic": "t", "data": "\\u0000"}'),
    "a lone surrogate": batch('{"topic": "t", "data": "\\ud800"}'),
    "a surrogate pair": batch('{"topic": "t", "data": "\\ud83d\\ude00"}'),
    "data nested too deep": batch('{"topic": "t", "data": ' + "[" * 40 + "]" * 40 + "}"),
    "a body nested too deep": batch('{"topic": "t", "data": ' + "[" * 99 + "]" * 99 + "}"),
    "another key nested too deep": '{"x": ' + "[" * 100 + "]" * 100 + ', "events": []}',
    "a list nested too deep": "[" * 101 + "]" * 101,
    "events nested too deep, not a list": '{"events": ' + '{"a": ' * 100 + "1" + "}" * 101,
    "data too large": batch('{"topic": "t", "data": "' + "x" * 70_000 + '"}'),
}


@pytest.mark.parametrize("name", BODIES)
def test_a_large_batch_read_event_by_event_gets_the_answer_of_a_whole_parse(name):
    assert stepwise(BODIES[name]) == whole(BODIES[name])


def test_an_event_larger_than_one_event_body_may_be_is_413_without_parsing_the_rest():
    body = batch(EVENT, '{"topic": "t", "data": ' + spam(1_000_000) + "}")

    kind, detail = stepwise(body)

    assert kind == "PayloadTooLarge"
    assert "more than" in str(detail)


async def test_a_large_batch_lets_the_loop_run_between_its_events(monkeypatch, loop_turns):
    monkeypatch.setattr(event_input, "SLICE_SECONDS", 0.0)

    events = await _BatchReader(batch(*[EVENT] * 200), _Slicer()).read()

    assert len(events) == 200
    assert loop_turns.count >= 200


def test_nesting_is_measured_on_the_text_outside_strings():
    assert not json_deeper("[" * 32 + "]" * 32, 32)
    assert json_deeper("[" * 33 + "]" * 33, 32)
    assert json_deeper('{"a": [{"b": [[]]}]}', 4)
    assert not json_deeper('{"a": [{"b": [[]]}]}', 5)
    assert not json_deeper(json.dumps({"s": "[[[[{{{{" * 100, "t": '\\"[[['}), 1)
    assert not json_deeper(spam(10_000), 2)


# Rate and fairness before the cost ----------------------------------------------------------


async def test_a_tenant_out_of_its_rate_gets_429_for_a_large_body_without_it_being_parsed(
    settings,
):
    tenant = await sync_to_async(TenantFactory)(publish_rate=1)
    key = (await sync_to_async(api_key_issue)(actor=ACTOR, tenant=tenant)).secret
    first = await send(application, key, "/api/v1/events", b'{"topic": "t", "data": 1}')
    assert first.status_code == 202
    broken = b'{"events": [' + b'{"topic": "t", "data": "' + b"x" * 100_000 + b'"}, '

    response = await send(application, key, "/api/v1/events/batch", broken)

    assert response.status_code == 429  # not the 400 that parsing it would give
    assert "retry-after" in response.headers


async def test_one_tenants_large_batches_are_read_one_after_another_not_before_others(
    monkeypatch,
):
    monkeypatch.setattr(event_input, "SLICE_SECONDS", 0.0)
    large = batch(*[json.dumps({"topic": "t", "data": "x" * 200})] * 400).encode()
    assert event_input.body_expensive(len(large))

    def read(tenant_id: int) -> asyncio.Future:
        return asyncio.ensure_future(events_read(tenant_id=tenant_id, raw_body=large, batch=True))

    noisy_first, noisy_second, quiet = read(1), read(1), read(2)
    await asyncio.wait_for(quiet, 10)

    assert not noisy_second.done()  # it waits for its own tenant's first read, not the quiet one
    results = await asyncio.wait_for(asyncio.gather(noisy_first, noisy_second), 10)
    assert [len(r) for r in results] == [400, 400]
    assert len(quiet.result()) == 400


# The serializer-free path for plainly valid events must take exactly what the serializer takes.

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.inf, -math.inf, math.nan])  # `1e400` parses as inf
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_names = st.sampled_from(
    ["a", "a.b:c/d-e_f", "", " a", "a\n", "a b", "é", "x" * 200, "x" * 201, "\x00"]
)
_items = (
    st.fixed_dictionaries(
        {"topic": _names, "data": _json_values},
        optional={"type": _names | st.none() | st.integers(), "other": _json_values},
    )
    | st.dictionaries(
        st.sampled_from(["topic", "type", "data", "other"]), _names | _json_values, max_size=4
    )
    | _json_values
)


def _through_serializer(item):
    serializer = event_input.EventInputSerializer(data=item)
    try:
        return serializer.validated_data if serializer.is_valid() else serializer.errors
    except PayloadTooLarge as exc:
        return exc


@given(item=_items)
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_fast_path_reads_every_valid_event_as_the_serializer_does_and_leaves_it_the_rest(item):
    try:
        fast = event_input._event_valid(item)
    except ValidationError as exc:
        fast = exc.detail
    except PayloadTooLarge as exc:
        fast = exc
    if fast is None:
        assert not isinstance(_through_serializer(item), event_input.EventInput)
        return
    slow = _through_serializer(item)
    if isinstance(fast, PayloadTooLarge):
        assert isinstance(slow, PayloadTooLarge)
        assert slow.detail == fast.detail
    else:
        assert slow == fast
