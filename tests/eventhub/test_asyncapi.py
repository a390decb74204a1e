"""GET /api/asyncapi.json: a valid AsyncAPI 3.0 document (checked against the official JSON
Schema, vendored in tests/eventhub/asyncapi/) that describes every frame the hub sends and
takes, as found in the code that sends and reads them, and every close code."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from streams.delivery import daphne_protocol
from streams.presence.changes import JOIN, LEAVE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.schema.json"

# Where the server builds the frames it sends: `"type": "welcome"`, `'{"type":"ping"}'`,
# the event envelope's f-string; `kind == "refresh"` where it reads the client's.
SENDING = ["streams/delivery", "streams/envelope.py"]
FRAME_TYPE = re.compile(r'"type":\s?"([a-z]+)"')
CLIENT_KIND = re.compile(r'kind == "([a-z]+)"')
# Close codes as the delivery code passes them: `close(sub, 4403, …)`, `Refusal(4401, …)`,
# `code: int = 1001` defaults and `SLOW_CONSUMER = 4008` constants.
CLOSE_CODE = re.compile(
    r"(?:close|end_now|drop|Refusal)\((?:[\w.]+, )?(\d{4})\b"
    r"|code: int = (\d{4})|^[A-Z_]+ = ([14]\d{3})$",
    re.MULTILINE,
)


def sources(*paths: str) -> str:
    files = []
    for path in paths:
        target = ROOT / path
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return "\n".join(f.read_text() for f in files)


@pytest.fixture(scope="module")
def document():
    from django.test import Client

    response = Client().get("/api/asyncapi.json")
    assert response.status_code == 200
    return response.json()


def operation_messages(document, action: str, channel: str) -> set[str]:
    names = set()
    for operation in document["operations"].values():
        if operation["action"] == action and operation["channel"]["$ref"].endswith(channel):
            for ref in operation["messages"]:
                message = document["channels"][channel]["messages"][ref["$ref"].split("/")[-1]]
                names.add(message["name"])
    return names


def test_it_is_a_valid_asyncapi_3_document(document):
    schema = json.loads(SCHEMA.read_text())

    jsonschema.Draft7Validator(schema).validate(document)
    assert document["asyncapi"] == "3.0.0"


def test_every_frame_the_server_sends_over_the_websocket_is_described(document):
    sent = set(FRAME_TYPE.findall(sources(*SENDING))) | {JOIN, LEAVE}

    assert {"welcome", "event", "ping", "pong", "error", "refreshed"} <= sent  # the scan works
    assert sent <= operation_messages(document, "receive", "websocket")


def test_every_frame_the_server_reads_from_a_client_is_described(document):
    read = set(CLIENT_KIND.findall(sources("streams/delivery/consumers/websocket.py")))
    read |= {json.loads(pong)["type"] for pong in daphne_protocol.PONGS}

    assert read == {"ping", "pong", "refresh"}
    assert read <= operation_messages(document, "send", "websocket")


def test_the_sse_stream_describes_its_events_and_presence_messages(document):
    assert {"welcome", "event", JOIN, LEAVE} <= operation_messages(document, "receive", "sse")


def test_every_close_code_the_websocket_consumers_send_is_described(document):
    found = CLOSE_CODE.findall(sources("streams/delivery"))
    used = {int(code) for groups in found for code in groups if code}
    described = {int(code) for code in document["channels"]["websocket"]["x-close-codes"]}

    assert {1001, 1009, 4008, 4400, 4401, 4403, 4408, 4429} <= used  # the scan works
    assert used <= described


def test_the_swagger_page_links_to_it(client):
    page = client.get("/api/schema/")
    assert "/api/asyncapi.json" in page.content.decode()
