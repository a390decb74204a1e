"""A bare ASGI application, the floor the benchmarks hold Eventhub against on the same daphne:
it answers every HTTP POST with a 202 and a small JSON body, accepts every WebSocket and keeps
it open, and keeps every GET open as an SSE stream after one comment. Nothing else: no Django,
no Channels, no auth.

    .venv/bin/daphne -b 127.0.0.1 -p 8001 bench.bare_asgi:application
"""

import asyncio

ACCEPTED = b'{"id":"0","seq":0,"topic":"t","type":"message","received_at":"2026-01-01T00:00:00Z"}'


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": '{"type":"welcome"}'})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["method"] == "GET":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b'event: welcome\ndata: {"type":"welcome"}\n\n',
                "more_body": True,
            }
        )
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": ACCEPTED})
    await asyncio.sleep(0)
