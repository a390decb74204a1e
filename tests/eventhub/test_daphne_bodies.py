"""daphne keeps none of a request body that is over its limit by its declared length."""

import sys
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest

from eventhub import daphne_bodies
from eventhub.daphne_bodies import DiscardedBody, path_body_limit
from streams.event_input import body_limit


class FakeServer:
    def protocol_connected(self, protocol) -> None:
        pass


def request_for(path: bytes) -> WebRequest:
    """A daphne request as Twisted's HTTPChannel holds it once the headers are in."""
    channel = SimpleNamespace(
        _path=path,
        factory=SimpleNamespace(server=FakeServer()),
        getPeer=lambda: None,
        getHost=lambda: None,
        transport=None,
    )
    return WebRequest(channel)


@pytest.fixture(autouse=True)
def installed(monkeypatch):
    monkeypatch.setattr(WebRequest, "gotLength", WebRequest.gotLength)  # undone after the test
    monkeypatch.setattr(WebRequest, "__init__", WebRequest.__init__)
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", object())  # as under daphne
    monkeypatch.setattr(daphne_bodies, "_installed", False)
    daphne_bodies.install()


@pytest.mark.parametrize(
    ("path", "batch"),
    [(b"/api/v1/events", False), (b"/api/v1/events?x=1", False), (b"/api/v1/events/batch", True)],
)
def test_a_publish_body_over_its_limit_is_kept_nowhere(path, batch):
    request = request_for(path)
    request.gotLength(body_limit(batch=batch) + 1)

    assert isinstance(request.content, DiscardedBody)
    request.handleContentChunk(b"x" * 10_000)
    request.content.seek(0)
    assert request.content.read() == b""


def test_a_body_within_its_limit_is_kept_as_twisted_keeps_it():
    request = request_for(b"/api/v1/events/batch")
    request.gotLength(body_limit(batch=False) + 1)  # over one event's limit, not a batch's

    assert not isinstance(request.content, DiscardedBody)
    request.handleContentChunk(b"abc")
    request.content.seek(0)
    assert request.content.read() == b"abc"


def test_a_body_of_unknown_length_is_kept_and_measured_by_the_application():
    request = request_for(b"/api/v1/events")
    request.gotLength(None)

    assert not isinstance(request.content, DiscardedBody)


def test_other_paths_are_capped_at_djangos_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert path_body_limit(b"/admin/login/") == 1000
    request = request_for(b"/admin/login/")
    request.gotLength(1001)
    assert isinstance(request.content, DiscardedBody)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/x-www-form-urlencoded", b"a=1&b=2"),
        (b"multipart/form-data; boundary=X", b"--X\r\nContent-Disposition: form-data; name=a"),
    ],
)
def test_a_form_body_is_left_to_the_application_not_parsed_by_twisted(content_type, body):
    request = request_for(b"/admin/login/")
    processed = []
    request.process = lambda: processed.append(True)
    request.gotLength(len(body))
    request.handleContentChunk(body)
    request.requestHeaders.setRawHeaders(b"content-type", [content_type])
    request.requestHeaders.setRawHeaders(b"content-length", [str(len(body)).encode()])

    request.requestReceived(b"POST", b"/admin/login/", b"HTTP/1.1")

    # Handed on whole (a malformed multipart body is the application's to refuse, not
    # Twisted's to answer with its own 400), and nothing of it parsed into `args`.
    assert processed == [True]
    assert request.args == {}
    assert request.content.read() == body
