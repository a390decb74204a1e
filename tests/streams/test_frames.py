"""The prebuilt WebSocket frame the hub writes to daphne connections is what a WebSocket
client parses back into the same text, at every payload length encoding (7, 16 and 64 bits)."""

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streams.delivery.daphne_transport import websocket_text_frame


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
