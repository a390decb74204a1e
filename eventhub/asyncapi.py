"""Provides the AsyncAPI 3.0 document of the subscription interfaces (WebSocket and SSE),
served at /api/asyncapi.json next to the OpenAPI schema of the REST API."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

ASYNCAPI_VERSION = "3.0.0"

# Every close code the hub sends a WebSocket (contract, "Subscribing"; v2).
CLOSE_CODES = {
    1001: "The server is shutting down: reconnect with last_event_id.",
    1009: "A client frame was larger than 4096 bytes.",
    1011: "Sending or replaying failed on the server: reconnect with last_event_id.",
    1012: "The dashboard session changed: reconnect.",
    1013: "The hub cannot check credentials or take connections right now: reconnect shortly "
    "(SSE: 503 with Retry-After).",
    4008: "Slow consumer: its buffer overflowed; reconnect with last_event_id.",
    4400: "Bad request: bad topics, bad last_event_id, or a frame that is not a JSON object.",
    4401: "Unauthenticated: no, an unknown, a revoked or an expired key or token.",
    4403: "Forbidden: scope missing, topic not allowed, tenant suspended, key or token revoked "
    "while connected, or a refresh token of another tenant or user.",
    4408: "No frame from the client for EVENTHUB_STALE_TIMEOUT seconds.",
    4429: "Too many connections for the tenant: reconnect later, with a longer backoff.",
}

_REF = "#/components/schemas/"


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


SCHEMAS: dict[str, dict[str, Any]] = {
    "Event": {
        "type": "object",
        "description": "One event, the same object on both transports.",
        "required": ["type", "id", "seq", "topic", "event", "data", "ts"],
        "properties": {
            "type": {"const": "event"},
            "id": _string("Opaque, unique within the tenant for all time; echo as last_event_id."),
            "seq": {"type": "integer", "minimum": 1, "description": "Increases per tenant."},
            "topic": _string("The event's topic.", pattern="^[A-Za-z0-9_.:/-]{1,200}$"),
            "event": _string("The event's type (`message` unless the publisher named one)."),
            "data": {"description": "Any JSON value, as published."},
            "ts": _string("When the hub accepted it.", format="date-time"),
        },
    },
    "Welcome": {
        "type": "object",
        "description": "The first frame of every connection.",
        "required": ["type", "connection_id", "heartbeat", "recovered"],
        "properties": {
            "type": {"const": "welcome"},
            "connection_id": _string("This connection's id."),
            "heartbeat": {"type": "number", "description": "Seconds between server pings."},
            "recovered": {
                "type": "boolean",
                "description": "True when every event after last_event_id follows (replayed). "
                "False: the gap could not be replayed; refetch through GET /api/v1/events.",
            },
            "token_expires_at": _string(
                "With a token: when it expires (the connection ends then).", format="date-time"
            ),
            "presence": {
                "type": "object",
                "description": "With presence=1: who is present on each exact topic.",
                "additionalProperties": {"type": "array", "items": {"$ref": _REF + "Present"}},
            },
        },
    },
    "Present": {
        "type": "object",
        "required": ["user", "info"],
        "properties": {"user": {"type": "string"}, "info": {"type": "object"}},
    },
    "Ping": {"type": "object", "required": ["type"], "properties": {"type": {"const": "ping"}}},
    "Pong": {"type": "object", "required": ["type"], "properties": {"type": {"const": "pong"}}},
    "Error": {
        "type": "object",
        "description": "Sent before the hub closes a connection (the close code and reason "
        "again, for clients that cannot read a close reason), or code 1013 when a refresh "
        "could not be checked now (the connection goes on; send it again).",
        "required": ["type", "code", "detail"],
        "properties": {
            "type": {"const": "error"},
            "code": {"type": "integer"},
            "detail": {"type": "string"},
        },
    },
    "Refresh": {
        "type": "object",
        "description": "A new token for this connection, before its token expires.",
        "required": ["type", "token"],
        "properties": {"type": {"const": "refresh"}, "token": {"type": "string"}},
    },
    "Refreshed": {
        "type": "object",
        "description": "The new token took over.",
        "required": ["type", "expires_at"],
        "properties": {
            "type": {"const": "refreshed"},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "Join": {
        "type": "object",
        "description": "With presence=1: a user's first connection to the topic appeared.",
        "required": ["type", "topic", "user", "info"],
        "properties": {
            "type": {"const": "join"},
            "topic": {"type": "string"},
            "user": {"type": "string"},
            "info": {"type": "object"},
        },
    },
    "Leave": {
        "type": "object",
        "description": "With presence=1: a user's last connection to the topic has been gone "
        "for EVENTHUB_PRESENCE_GRACE seconds.",
        "required": ["type", "topic", "user"],
        "properties": {
            "type": {"const": "leave"},
            "topic": {"type": "string"},
            "user": {"type": "string"},
        },
    },
}

QUERY = {
    "type": "object",
    "properties": {
        "topics": _string(
            "Comma-separated patterns: a topic or a prefix ending in `*`; `*` (the default) is "
            "every topic. At most 100.",
            default="*",
        ),
        "token": _string("A subscriber token (POST /api/v1/tokens); or send a Bearer key."),
        "last_event_id": _string("Resume after this event (the id of the last one seen)."),
        "presence": _string(
            "`1`: presence in the welcome, then join and leave frames.", enum=["1"]
        ),
        "tenant": _string("A logged-in dashboard user's tenant slug (session auth)."),
    },
}

HEADERS = {
    "type": "object",
    "properties": {
        "Authorization": _string("`Bearer <api key>` (scope subscribe), instead of a token."),
        "Last-Event-ID": _string("SSE only: wins over last_event_id (browsers send it)."),
    },
}


def _message(name: str, schema: str, summary: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": _REF + schema},
        **extra,
    }


def asyncapi_document(host: str, secure: bool) -> dict[str, Any]:
    """The document, its servers named after the host it was asked from."""
    heartbeat = settings.EVENTHUB_HEARTBEAT_INTERVAL
    stale = settings.EVENTHUB_STALE_TIMEOUT
    codes = "\n".join(f"- `{code}`: {meaning}" for code, meaning in CLOSE_CODES.items())
    ws_messages = {
        "welcome": _message("welcome", "Welcome", "First frame from the server."),
        "event": _message("event", "Event", "A replayed or live event, in seq order."),
        "ping": _message("ping", "Ping", f"Every {heartbeat} s; answer with pong."),
        "pong": _message("pong", "Pong", "The answer to a ping (either way)."),
        "error": _message("error", "Error", "Why the server is about to close."),
        "refreshed": _message("refreshed", "Refreshed", "The answer to a valid refresh."),
        "join": _message("join", "Join", "Presence: a user joined the topic."),
        "leave": _message("leave", "Leave", "Presence: a user left the topic."),
        "clientPing": _message("ping", "Ping", "From the client: the server answers pong."),
        "clientPong": _message("pong", "Pong", "From the client, answering a ping."),
        "refresh": _message("refresh", "Refresh", "From the client: go on under a new token."),
    }
    sse_messages = {
        name: _message(
            name,
            schema,
            summary,
            bindings={"http": {"bindingVersion": "0.3.0"}},
        )
        for name, schema, summary in [
            ("welcome", "Welcome", "`event: welcome`, after `retry: 3000`."),
            ("event", "Event", "`id: ID`, `event: E`, `data: <the event JSON on one line>`."),
            ("join", "Join", "`event: join`, no `id:` (never replayed)."),
            ("leave", "Leave", "`event: leave`, no `id:` (never replayed)."),
        ]
    }
    ws_ref = "#/channels/websocket/messages/"
    sse_ref = "#/channels/sse/messages/"
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Eventhub subscriptions",
            "version": "1.0.0",
            "description": "Real-time delivery of a tenant's events over WebSocket and "
            "Server-Sent Events. Publishing, history and tokens are the REST API "
            "(/api/schema/, /api/docs/).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "description": "WebSocket subscriptions.",
            },
            "http": {
                "host": host,
                "protocol": "https" if secure else "http",
                "description": "Server-Sent Events subscriptions.",
            },
        },
        "channels": {
            "websocket": {
                "address": "/ws/v1/events",
                "title": "WebSocket subscription",
                "description": "Text frames, each a JSON object with a `type`. The server "
                f"pings every {heartbeat} s and closes a connection silent for {stale} s; "
                "client frames are at most 4096 bytes. Close codes:\n" + codes,
                "servers": [{"$ref": "#/servers/websocket"}],
                "messages": ws_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": QUERY,
                        "headers": HEADERS,
                        "bindingVersion": "0.1.0",
                    }
                },
                "x-close-codes": {str(code): meaning for code, meaning in CLOSE_CODES.items()},
            },
            "sse": {
                "address": "/sse/v1/events",
                "title": "Server-Sent Events subscription",
                "description": "`text/event-stream`: `retry: 3000`, the welcome, then events; "
                f"a `: ping` comment line every {heartbeat} s. Refusals (400, 401, 403, 429) "
                "are plain HTTP responses with a JSON `detail`, before any stream starts. "
                "Same query parameters as the WebSocket; `Last-Event-ID` wins over "
                "last_event_id.",
                "servers": [{"$ref": "#/servers/http"}],
                "messages": sse_messages,
            },
        },
        "operations": {
            "receiveFrames": {
                "action": "receive",
                "title": "Frames the server sends over the WebSocket",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [
                    {"$ref": ws_ref + name}
                    for name in (
                        "welcome",
                        "event",
                        "ping",
                        "pong",
                        "error",
                        "refreshed",
                        "join",
                        "leave",
                    )
                ],
            },
            "sendFrames": {
                "action": "send",
                "title": "Frames the client sends over the WebSocket",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [
                    {"$ref": ws_ref + name} for name in ("clientPong", "clientPing", "refresh")
                ],
            },
            "receiveStream": {
                "action": "receive",
                "title": "Messages of the SSE stream",
                "channel": {"$ref": "#/channels/sse"},
                "bindings": {"http": {"method": "GET", "query": QUERY, "bindingVersion": "0.3.0"}},
                "messages": [
                    {"$ref": sse_ref + name} for name in ("welcome", "event", "join", "leave")
                ],
            },
        },
        "components": {"schemas": SCHEMAS},
    }


@require_GET
def asyncapi_view(request: HttpRequest) -> JsonResponse:
    """Answers GET /api/asyncapi.json."""
    return JsonResponse(asyncapi_document(request.get_host(), request.is_secure()))
