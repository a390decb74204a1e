"""The prebuilt bytes the hub writes straight to daphne connections are what clients parse
back: a WebSocket frame into the same text, at every payload length encoding (7, 16 and 64
bits); an SSE chunk into the same body, for an HTTP/1.1 client."""

import h11
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streams.delivery.daphne_transport import sse_chunk, websocket_text_frame


def parse(frame_bytes: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(frame_bytes)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("the frame was incomplete")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65_535, 65_536, 300_000])
def test_a_text_frame_parses_back_to_its_text(length):
    text = "x" * length

    frame = parse(websocket_text_frame(text))

    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text


def test_the_length_counts_encoded_bytes_not_characters():
    text = "€" * 50  # 150 bytes in UTF-8: needs the 16-bit length form

    raw = websocket_text_frame(text)

    assert raw[1] == 126
    assert parse(raw).data.decode() == text


@pytest.mark.parametrize("length", [1, 15, 16, 4096, 300_000])
def test_an_sse_chunk_parses_back_to_its_body_in_a_chunked_response(length):
    body = b"id: 1\nevent: message\ndata: " + b"x" * length + b"\n\n"
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/sse/v1/events", headers=[("Host", "hub")]))
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    client.receive_data(head + sse_chunk(body) + sse_chunk(b": ping\n\n"))

    assert isinstance(client.next_event(), h11.Response)
    received = b""
    while isinstance(event := client.next_event(), h11.Data):
        received += event.data
    assert received == body + b": ping\n\n"
