"""Fuzzing of everything a client controls: publish bodies, query strings, headers and WebSocket
frames. Whatever arrives, the answer is a clear 4xx (or a close code), never a 500, never a
crashed consumer, and other connections are not disturbed.

The unit-level part runs in-process (Hypothesis over the ASGI application, a fresh loop and
process state per example). The last test runs schemathesis against the OpenAPI schema of a
real daphne process.

The tests near the end pin down inputs that once got a 500 or crashed a consumer (digits that
are not ASCII in an event id, frames nested past the JSON decoder, the dashboard's publish
form), so that they stay fixed whatever the strategies happen to draw.
"""

import json
from urllib.parse import quote_from_bytes

import pytest
import schemathesis
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import ApplicationCommunicator
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from eventhub.asgi import application
from streams import runtime
from tenants import selectors
from tenants.services import api_key_issue
from tests.factories import ACTOR, TenantFactory
from tests.processes import Process, base_env, manage

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SUBSCRIBER_CLOSE_CODES = {4400, 4401, 4403}
# Every answer comes in milliseconds; a crashed consumer shows only when a wait runs out.
WAIT = 1.0


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes):
    return json.loads(text, parse_constant=reject_constant)


def fresh_process_state() -> None:
    runtime.reset()
    channel_layers.backends.clear()
    selectors.api_key_cache_clear()


def in_fresh_process(coroutine_function, *args):
    fresh_process_state()
    try:
        return async_to_sync(coroutine_function)(*args)
    finally:
        fresh_process_state()


@pytest.fixture
def fuzz_key(db):
    return api_key_issue(actor=ACTOR, tenant=TenantFactory()).secret


# ASGI plumbing: raw scopes, so that any bytes can be sent --------------------------------------


def http_scope(method: str, path: str, query: bytes = b"", headers=()) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def http_call(scope: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Sends one request; returns (status, headers, body). A stream (SSE) is read up to its
    first chunk, then the client goes away."""
    if body and not any(name == b"content-length" for name, _ in scope["headers"]):
        scope = dict(scope, headers=[*scope["headers"], (b"content-length", b"%d" % len(body))])
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": body})
    start = await app.receive_output(timeout=WAIT)
    assert start["type"] == "http.response.start", start
    chunks = []
    while True:
        message = await app.receive_output(timeout=WAIT)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
        if start["status"] == 200 and (b"event: welcome" in b"".join(chunks)):
            await app.send_input({"type": "http.disconnect"})
            break
    await app.wait(timeout=WAIT)
    headers = {name.lower(): value for name, value in start["headers"]}
    return start["status"], headers, b"".join(chunks)


def assert_json_error(status: int, headers: dict, body: bytes) -> None:
    """A refusal as the contract wants it: JSON with a detail or field errors."""
    assert headers.get(b"content-type", b"").startswith(b"application/json"), (status, body)
    payload = strict_json(body)
    assert isinstance(payload, dict), payload
    assert payload, payload


def ws_scope(query: bytes, headers=()) -> dict:
    return {
        "type": "websocket",
        "path": "/ws/v1/events",
        "raw_path": b"/ws/v1/events",
        "query_string": query,
        "headers": [(b"host", b"testserver"), *headers],
        "subprotocols": [],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


class Socket:
    """A WebSocket client over a raw scope; every receive re-raises a crash of the consumer."""

    def __init__(self, query: bytes = b"", headers=()) -> None:
        self.app = ApplicationCommunicator(application, ws_scope(query, headers))

    async def connect(self) -> dict:
        await self.app.send_input({"type": "websocket.connect"})
        return await self.app.receive_output(timeout=WAIT)

    async def frame(self) -> dict:
        message = await self.app.receive_output(timeout=WAIT)
        assert message["type"] == "websocket.send", message
        return strict_json(message["text"])

    async def closed(self) -> int:
        message = await self.app.receive_output(timeout=WAIT)
        assert message["type"] == "websocket.close", message
        return message["code"]

    async def send(self, text: str | None = None, data: bytes | None = None) -> None:
        message = {"type": "websocket.receive"}
        message.update({"text": text} if text is not None else {"bytes": data})
        await self.app.send_input(message)

    async def leave(self) -> None:
        if not self.app.future.done():
            await self.app.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.app.wait(timeout=WAIT)


def bearer(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {key}".encode())


async def welcomed(key: str, query: bytes = b"") -> Socket:
    socket = Socket(query, [bearer(key)])
    assert (await socket.connect())["type"] == "websocket.accept"
    assert (await socket.frame())["type"] == "welcome"
    return socket


async def publish_json(key: str, body) -> dict:
    scope = http_scope(
        "POST", "/api/v1/events", headers=[bearer(key), (b"content-type", b"application/json")]
    )
    status, _, raw = await http_call(scope, json.dumps(body).encode())
    assert status == 202, raw
    return strict_json(raw)


# Strategies ---------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
topics = st.from_regex(r"[A-Za-z0-9_.:/-]{1,12}", fullmatch=True)
anything = json_values | st.text(max_size=210) | topics
events = st.fixed_dictionaries(
    {"topic": topics | anything, "data": json_values},
    optional={"type": topics | anything, "extra": json_values},
) | st.dictionaries(st.sampled_from(["topic", "type", "data", "events"]), anything, max_size=4)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


publish_bodies = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),
    st.lists(events, max_size=4).map(lambda es: json.dumps({"events": es}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 5000).map(lambda d: f'{{"topic": "t", "data": {nested(d)}}}'.encode()),
    st.just(b'{"topic": "t", "data": NaN}'),
    st.just(b'{"topic": "t", "data": 1e999}'),
    st.just(b'{"topic": "t", "data": "' + b"x" * 70_000 + b'"}'),
)
content_types = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/json; charset=latin-1",
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"",
    ]
)
header_text = st.binary(max_size=60).map(lambda b: bytes(c for c in b if c >= 32 and c != 127))
tricky_ids = st.sampled_from(
    [
        "1-abc",
        "0-a",
        "-",
        "1-",
        "-abc",
        "99999999999999999999-a",
        "1-ab-c",
        "1-é",
        "\u0661-abc",
        "1 -a",
    ]
)
query_values = st.text(max_size=30) | tricky_ids | topics | st.sampled_from(["*", "a*", ",", "0"])
query_keys = st.sampled_from(["topics", "topic", "after", "limit", "last_event_id", "token"])


url_chars = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#")


@st.composite
def query_strings(draw) -> bytes:
    """Query strings as a server passes them on (printable ASCII: daphne answers a request line
    with other bytes with 400 itself): well-formed pairs with odd values, or anything."""
    if draw(st.booleans()):
        return draw(st.text(url_chars, max_size=80)).encode()
    pairs = draw(st.lists(st.tuples(query_keys | st.text(max_size=6), query_values), max_size=5))
    parts = []
    for key, value in pairs:
        k = key.encode()
        if draw(st.booleans()):  # `tok%65n` is `token` to the parser, not to a log redactor
            k = "".join(f"%{b:02X}" for b in k).encode()
        v = quote_from_bytes(value.encode("utf-8"), safe=draw(st.sampled_from(["", "*,:/"])))
        parts.append(k.replace(b"&", b"") + b"=" + v.encode())
    return b"&".join(parts)


# Publishing ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(
    path=st.sampled_from(["/api/v1/events", "/api/v1/events/batch"]),
    body=publish_bodies,
    content_type=content_types,
    idempotency_key=st.none() | header_text,
)
@example(
    path="/api/v1/events",
    body=b"[" * 100_000,
    content_type=b"application/json",
    idempotency_key=None,
)
def test_publishing_any_body_gets_a_clear_answer_and_never_a_server_error(
    fuzz_key, path, body, content_type, idempotency_key
):
    async def run():
        subscriber = await welcomed(fuzz_key)
        headers = [bearer(fuzz_key), (b"content-type", content_type)]
        if idempotency_key is not None:
            headers.append((b"idempotency-key", idempotency_key))
        status, response_headers, raw = await http_call(
            http_scope("POST", path, headers=headers), body
        )
        assert status < 500, raw
        if status != 202:
            assert_json_error(status, response_headers, raw)
            assert await subscriber.app.receive_nothing(timeout=0.02)
        else:
            accepted = strict_json(raw)
            accepted = accepted.get("events", [accepted])
            sent = strict_json(body)
            sent = sent["events"] if path.endswith("batch") else [sent]
            for ok, event in zip(accepted, sent, strict=True):
                frame = await subscriber.frame()  # valid JSON, as every subscriber parses it
                assert frame["id"] == ok["id"]
                assert frame["data"] == event["data"]
        await subscriber.leave()

    in_fresh_process(run)


# Query strings and headers of the history API -----------------------------------------------


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(query=query_strings(), authorization=st.booleans() | header_text)
def test_any_history_query_gets_a_clear_answer_and_never_a_server_error(
    fuzz_key, query, authorization
):
    async def run():
        headers = []
        if authorization is True:
            headers.append(bearer(fuzz_key))
        elif authorization:
            headers.append((b"authorization", authorization))
        status, response_headers, raw = await http_call(
            http_scope("GET", "/api/v1/events", query, headers)
        )
        assert status < 500, raw
        if status == 200:
            assert set(strict_json(raw)) == {"results", "next"}
        else:
            assert_json_error(status, response_headers, raw)

    in_fresh_process(run)


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.sampled_from(
        ["/api/v1/events", "/api/v1/events/batch", "/api/v1/tokens", "/api/v1/stats"]
    ),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    b"authorization",
                    b"content-type",
                    b"idempotency-key",
                    b"origin",
                    b"cookie",
                    b"accept",
                    b"x-forwarded-proto",
                    b"x-forwarded-for",
                    b"last-event-id",
                ]
            ),
            header_text,
        ),
        max_size=4,
    ),
    body=st.binary(max_size=50) | events.map(lambda e: json.dumps(e).encode()),
)
# Content-Length is left out: daphne refuses a malformed one (400) before the application runs.
def test_any_headers_get_a_clear_answer_and_never_a_server_error(
    fuzz_key, method, path, headers, body
):
    async def run():
        scope = http_scope(method, path, headers=[bearer(fuzz_key), *headers])
        status, response_headers, raw = await http_call(scope, body)
        assert status < 500, raw
        if status >= 400 and method != "HEAD":
            assert_json_error(status, response_headers, raw)

    in_fresh_process(run)


# Subscribing: query strings and headers -----------------------------------------------------

subscriber_headers = st.lists(
    st.tuples(
        st.sampled_from([b"authorization", b"last-event-id", b"origin", b"cookie"]),
        header_text | tricky_ids.map(str.encode),
    ),
    max_size=3,
)


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(query=query_strings(), headers=subscriber_headers, with_key=st.booleans())
def test_any_websocket_handshake_is_welcomed_or_refused_with_a_close_code(
    fuzz_key, query, headers, with_key
):
    async def run():
        socket = Socket(query, ([bearer(fuzz_key)] if with_key else []) + headers)
        answer = await socket.connect()
        if answer["type"] == "websocket.close":
            # Refused at the handshake: only for an Origin not allowed.
            assert any(name == b"origin" for name, _ in headers)
        else:
            assert answer["type"] == "websocket.accept"
            first = await socket.frame()
            if first["type"] == "error":
                assert first["code"] in SUBSCRIBER_CLOSE_CODES, first
                assert await socket.closed() == first["code"]
            else:
                assert first["type"] == "welcome", first
        await socket.leave()

    in_fresh_process(run)


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(query=query_strings(), headers=subscriber_headers, with_key=st.booleans())
def test_any_event_stream_request_is_opened_or_refused_with_json(
    fuzz_key, query, headers, with_key
):
    async def run():
        scope = http_scope(
            "GET", "/sse/v1/events", query, ([bearer(fuzz_key)] if with_key else []) + headers
        )
        status, response_headers, raw = await http_call(scope)
        assert status in {200, 400, 401, 403}, (status, raw)
        if status == 200:
            assert raw.startswith(b"retry: 3000\n\nevent: welcome\n")
        else:
            assert_json_error(status, response_headers, raw)

    in_fresh_process(run)


# WebSocket client frames --------------------------------------------------------------------

# contract v2: a client frame over this many bytes closes the WebSocket with 1009.
MAX_CLIENT_FRAME_BYTES = 4096
MESSAGE_TOO_BIG = 1009


def frame_bytes(frame: str | bytes) -> int:
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))


def padded_ping(size: int, pad: str = "x") -> str:
    """A ping of exactly `size` bytes of UTF-8 (give or take one when `pad` is multi-byte)."""
    empty = json.dumps({"type": "ping", "pad": ""}, ensure_ascii=False)
    count = (size - len(empty.encode())) // len(pad.encode())
    return json.dumps({"type": "ping", "pad": pad * count}, ensure_ascii=False)


client_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "pong", "subscribe", ""]) | json_values},
        optional={"extra": json_values},
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(min_size=1, max_size=100),
    st.binary(min_size=1, max_size=100),
    st.integers(1, 200).map(nested),
    # Deeper than the JSON decoder goes, within the frame limit (2048 levels are 4096 bytes).
    st.integers(1_000, MAX_CLIENT_FRAME_BYTES // 2).map(nested),
    st.integers(MAX_CLIENT_FRAME_BYTES // 2 + 1, 100_000).map(nested),  # over the limit
    # Either side of the limit: pings of 4000-4200 bytes, ASCII or two bytes a character.
    st.builds(padded_ping, st.integers(4_000, 4_200), st.sampled_from(["x", "\u00e9"])),
    st.binary(min_size=4_000, max_size=4_200),
)


@pytest.mark.django_db(transaction=True)
@FUZZ
@given(frames=st.lists(client_frames, min_size=1, max_size=6))
def test_any_client_frames_get_pong_or_4400_and_never_crash_the_consumer(fuzz_key, frames):
    """Of any size: a frame over 4096 bytes closes with 1009 (no error frame: 1009 is not an
    application code), one within it is answered as before."""

    async def run():
        bystander = await welcomed(fuzz_key)
        socket = await welcomed(fuzz_key)
        open_ = True
        for frame in frames:
            if frame_bytes(frame) > MAX_CLIENT_FRAME_BYTES:
                await socket.send(
                    **({"data": frame} if isinstance(frame, bytes) else {"text": frame})
                )
                assert await socket.closed() == MESSAGE_TOO_BIG
                open_ = False
                break
            if isinstance(frame, bytes):
                await socket.send(data=frame)
                message = None
            else:
                await socket.send(text=frame)
                try:
                    message = json.loads(frame)
                except (ValueError, RecursionError):
                    message = None
            if not isinstance(message, dict):
                error = await socket.frame()
                assert (error["type"], error["code"]) == ("error", 4400)
                assert await socket.closed() == 4400
                open_ = False
                break
            if message.get("type") == "ping":
                assert await socket.frame() == {"type": "pong"}
            # Anything else is ignored: a ping right after must get the very next frame.
            await socket.send(text='{"type": "ping"}')
            assert await socket.frame() == {"type": "pong"}
        accepted = await publish_json(fuzz_key, {"topic": "after.fuzz", "data": 1})
        assert (await bystander.frame())["id"] == accepted["id"]
        if open_:
            assert (await socket.frame())["id"] == accepted["id"]
        await socket.leave()
        await bystander.leave()

    in_fresh_process(run)


# Inputs that once crashed the hub -----------------------------------------------------------


@pytest.mark.parametrize("surface", ["history", "websocket", "sse-parameter", "sse-header"])
@pytest.mark.django_db(transaction=True)
def test_an_event_id_with_non_decimal_digits_is_a_bad_request(fuzz_key, surface):
    async def run():
        if surface == "history":
            scope = http_scope("GET", "/api/v1/events", b"after=%C2%B2-abc", [bearer(fuzz_key)])
            assert (await http_call(scope))[0] == 400
        elif surface == "websocket":
            socket = Socket(b"last_event_id=%C2%B2-abc", [bearer(fuzz_key)])
            await socket.connect()
            assert (await socket.frame())["code"] == 4400
            await socket.leave()
        else:
            query, headers = b"last_event_id=%C2%B2-abc", [bearer(fuzz_key)]
            if surface == "sse-header":
                query, headers = b"", [*headers, (b"last-event-id", b"\xb2-abc")]
            scope = http_scope("GET", "/sse/v1/events", query, headers)
            assert (await http_call(scope))[0] == 400

    in_fresh_process(run)


@pytest.mark.django_db(transaction=True)
def test_a_deeply_nested_client_frame_is_closed_with_4400(fuzz_key):
    async def run():
        socket = await welcomed(fuzz_key)
        # 2048 levels: exactly the frame limit (4096 bytes), past the JSON decoder's depth.
        frame = nested(MAX_CLIENT_FRAME_BYTES // 2)
        assert frame_bytes(frame) == MAX_CLIENT_FRAME_BYTES
        await socket.send(text=frame)
        assert (await socket.frame())["code"] == 4400
        assert await socket.closed() == 4400
        await socket.leave()

    in_fresh_process(run)


@pytest.mark.django_db(transaction=True)
def test_a_deeply_nested_client_frame_over_4096_bytes_is_closed_with_1009(fuzz_key):
    async def run():
        socket = await welcomed(fuzz_key)
        await socket.send(text=nested(100_000))
        assert await socket.closed() == MESSAGE_TOO_BIG
        assert await socket.app.receive_nothing(timeout=0.05)  # no error frame before or after
        await socket.leave()

    in_fresh_process(run)


# WhiteNoise warns that collectstatic never ran; the settings silence it, pytest resets filters.
quiet_static = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")


@pytest.fixture
def dashboard_client(tenant):
    """An async client logged in as a staff user (no CSRF check, as the page sends its token)."""
    user = get_user_model().objects.create_user("fuzz-staff", password=None, is_staff=True)
    browser = Client()
    browser.force_login(user)
    client = AsyncClient(raise_request_exception=False)
    client.cookies = browser.cookies
    return client


@quiet_static
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("data_json", "status"),
    [(json.dumps("x" * 70_000), 413), (nested(40), 400)],
    ids=["larger-than-max-event-bytes", "deeper-than-max-data-depth"],
)
async def test_the_dashboard_publish_form_applies_the_apis_caps(
    dashboard_client, tenant, data_json, status
):
    body = f'{{"topic": "t", "data": {data_json}}}'
    url = f"/dashboard/{tenant.slug}/publish"
    response = await dashboard_client.post(url, data=body, content_type="application/json")
    assert response.status_code == status, response.content


@quiet_static
@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_publish_form_refuses_a_deeply_nested_body_with_400(
    dashboard_client, tenant
):
    body = f'{{"topic": "t", "data": {nested(5000)}}}'
    url = f"/dashboard/{tenant.slug}/publish"
    response = await dashboard_client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.content


# The OpenAPI schema, against a real server --------------------------------------------------


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory):
    """daphne over its own SQLite database, with a tenant and a key of every scope."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    env = base_env(DATABASE_URL=f"sqlite:///{workdir}/db.sqlite3")
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "fuzz")
    key = manage(env, "create_api_key", "fuzz").strip().splitlines()[-1]
    web = Process("web", env, workdir).start()
    yield web, key
    web.stop()


@pytest.mark.e2e
def test_no_request_the_schema_describes_or_violates_gets_a_server_error(live_hub):
    # schemathesis's pytest integration (from_fixture) needs a pytest private attribute that
    # pytest 9 removed, so the operations are driven with Hypothesis directly.
    web, key = live_hub
    schema = schemathesis.openapi.from_url(f"{web.url}/api/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /api/v1/events",
        "POST /api/v1/events/batch",
        "GET /api/v1/events",
        "POST /api/v1/tokens",
        "GET /api/v1/stats",
    }
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {key}"}, checks=[not_a_server_error]
                )

            check()
    log = web.log()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 600) : at + 3000]  # the request and what it raised


@quiet_static
@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_publish_form_explains_a_refusal_in_one_line(dashboard_client, tenant):
    url = f"/dashboard/{tenant.slug}/publish"
    body = '{"topic": "has space", "data": 1}'
    response = await dashboard_client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert response.json()["detail"].startswith("topic: ")
