"""daphne keeps none of a request body that is over its limit by its declared length, reads
such bodies at a bounded pace, and parses no body as a form."""

import sys
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from daphne.server import Server
from twisted.internet.task import Clock

from eventhub import daphne_bodies
from eventhub.daphne_bodies import DiscardBudget, DiscardedBody, path_body_limit
from streams.event_input import body_limit


class FakeServer:
    def protocol_connected(self, protocol) -> None:
        pass


def request_for(path: bytes, transport=None) -> WebRequest:
    """A daphne request as Twisted's HTTPChannel holds it once the headers are in."""
    channel = SimpleNamespace(
        _path=path,
        factory=SimpleNamespace(server=FakeServer()),
        getPeer=lambda: None,
        getHost=lambda: None,
        transport=transport,
    )
    return WebRequest(channel)


@pytest.fixture(autouse=True)
def installed(monkeypatch):
    monkeypatch.setattr(WebRequest, "gotLength", WebRequest.gotLength)  # undone after the test
    monkeypatch.setattr(WebRequest, "__init__", WebRequest.__init__)
    monkeypatch.setattr(Server, "__init__", Server.__init__)
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


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


def test_refused_bodies_are_read_at_the_budgets_pace_after_its_burst():
    clock = Clock()
    budget = DiscardBudget(rate=1000, burst=3000, now=clock.seconds)

    assert budget.charge(3000) == 0.0  # the burst: at once
    assert budget.charge(500) == pytest.approx(0.5)  # 500 bytes owed at 1000/s
    clock.advance(0.5)
    assert budget.charge(0) == 0.0  # paid


def test_a_refused_body_past_the_budget_stops_its_connection_until_paid(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(daphne_bodies, "_call_later", clock.callLater)
    budget = DiscardBudget(rate=1000, burst=1000, now=clock.seconds)
    transport = FakeTransport()
    body = DiscardedBody(3000, transport, budget)

    body.write(b"x" * 1000)
    assert transport.reading  # within the burst
    body.write(b"x" * 1000)
    assert not transport.reading  # 1000 bytes owed: a second
    clock.advance(0.99)
    assert not transport.reading
    clock.advance(0.01)
    assert transport.reading

    body.write(b"x" * 1000)  # its last bytes, over budget again: the request runs now
    assert transport.reading


def test_a_refused_body_is_not_held_back_while_the_budget_lasts(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(daphne_bodies, "_call_later", clock.callLater)
    transport = FakeTransport()
    body = DiscardedBody(4 * 2**20, transport, DiscardBudget(32 * 2**20, 8 * 2**20, clock.seconds))

    for _ in range(64):
        body.write(b"x" * 65536)

    assert transport.reading
    assert not clock.getDelayedCalls()


def test_daphne_hands_any_body_within_its_limit_over_as_one_message():
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    queued: list[dict] = []
    server.create_application = lambda protocol, scope: SimpleNamespace(put_nowait=queued.append)
    request = request_for(b"/api/v1/events/batch")
    request.server = server
    request.channel.isSecure = lambda: False
    body = b"x" * body_limit(batch=True)  # the largest body a batch may have
    request.gotLength(len(body))
    request.handleContentChunk(body)

    request.requestReceived(b"POST", b"/api/v1/events/batch", b"HTTP/1.1")  # daphne's process()

    assert [(len(m["body"]), m["more_body"]) for m in queued] == [(len(body), False)]


def test_without_djangos_body_limit_bodies_are_handed_over_in_pieces_of_bounded_size(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None

    assert (
        2**20 < daphne_bodies.request_buffer_bytes() <= daphne_bodies.MAX_REQUEST_BUFFER_BYTES + 1
    )


def test_a_refused_body_is_paced_on_its_own_connection():
    transport = FakeTransport()
    request = request_for(b"/api/v1/events", transport)
    request.gotLength(body_limit(batch=False) + 1)

    assert request.content.transport is transport


def test_the_budgets_debt_is_at_most_a_second_so_no_wait_is_longer():
    clock = Clock()
    budget = DiscardBudget(rate=1000, burst=1000, now=clock.seconds)

    for _ in range(100):  # many connections' first reads, charged at once
        budget.charge(1000)

    assert budget.charge(1000) == pytest.approx(daphne_bodies.MAX_DISCARD_WAIT)
    clock.advance(daphne_bodies.MAX_DISCARD_WAIT)
    assert budget.charge(0) == 0.0  # an attack's debt does not outlast it


def test_a_body_that_came_in_whole_while_paused_is_not_resumed_by_the_budget(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(daphne_bodies, "_call_later", clock.callLater)
    transport = FakeTransport()
    body = DiscardedBody(2000, transport, DiscardBudget(rate=1000, burst=500, now=clock.seconds))

    body.write(b"x" * 1000)  # over budget: paused for half a second
    assert not transport.reading
    body.write(b"x" * 1000)  # the rest, already decrypted by TLS: the request now runs
    transport.pauseProducing()  # … and Twisted pauses the connection while it does

    clock.advance(1)
    assert not transport.reading  # left to Twisted
