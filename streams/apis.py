"""Provides the REST API of the streams app: publish, history, subscriber tokens, presence and
stats."""

import contextlib
import json
import re
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from eventhub.parsers import RawJSONParser
from streams import metrics, selectors, services
from streams.envelope import event_id_parse
from streams.event_input import (
    EventBatchInputSerializer,
    EventInputSerializer,
    body_limit,
)
from streams.log import reads as log_reads
from streams.presence.selectors import presence_get
from streams.publishing import publish_request
from streams.revoked_tokens import TOKEN_MAX_TTL
from streams.tokens import token_id_valid, token_sign
from streams.topics import MAX_PATTERNS, PATTERN_RE, TOPIC_RE, pattern_valid
from tenants.actors import Actor


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers an operation documents: JSON, `{"detail": ...}` or field errors."""
    meaning = {
        400: "Invalid body, field or parameter: field errors, or `detail`.",
        401: "Missing, unknown, revoked or expired key (`WWW-Authenticate: Bearer`).",
        403: "The key lacks the scope, or the tenant is suspended.",
        409: "A request with this Idempotency-Key is still being processed.",
        413: "The body or one event's data is too large.",
        415: "The body is not JSON.",
        422: "This Idempotency-Key was used with another body.",
        429: "Publish rate limit exceeded (`Retry-After`).",
        503: "The hub cannot accept events now (`Retry-After`).",
    }
    return {code: OpenApiResponse(description=meaning[code]) for code in codes}


PUBLISH_ERRORS = _errors(400, 401, 403, 409, 413, 415, 422, 429, 503)
READ_ERRORS = _errors(400, 401, 403)


class EventOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    seq = serializers.IntegerField()
    topic = serializers.CharField()
    type = serializers.CharField()
    received_at = serializers.DateTimeField()


def _publish_view(request, *, batch: bool) -> Response:
    meta = request.META
    try:
        declared = int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (TypeError, ValueError):
        declared = 0
    limit = body_limit(batch=batch)
    if limit is not None and declared > limit:
        raise RequestDataTooBig  # by its declared length, before reading it
    request.data  # noqa: B018 -- DRF's negotiation: 415 for another content type
    body = async_to_sync(publish_request)(
        tenant_id=request.auth.tenant_id,
        rate=request.auth.publish_rate,
        # Also a chunked upload, of which DRF reads nothing without a Content-Length.
        raw_body=request.body,
        path=request.path,
        idempotency_key=request.headers.get("Idempotency-Key"),
        batch=batch,
    )
    return Response(body, status=status.HTTP_202_ACCEPTED)


class EventHistoryQuerySerializer(serializers.Serializer):
    topic = serializers.CharField(required=False, max_length=201)
    after = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)

    def validate_topic(self, value: str) -> str:
        if not pattern_valid(value):
            raise ValidationError("Not a topic or a prefix ending in '*'.")
        return value

    def validate_after(self, value: str) -> int:
        parsed = event_id_parse(value)
        if parsed is None:
            raise ValidationError("Not an event id.")
        return parsed[0]


def history_page(events, *, max_bytes: int) -> tuple[list[bytes], str | None, bool]:
    """(the event JSON of a history page, as subscribers get each event; the id of its last
    event; whether it stopped at its byte budget): an event goes in while the page stays within
    `max_bytes`, the first one always."""
    frames: list[bytes] = []
    last_id = None
    size = 0
    with contextlib.closing(events):
        for envelope in events:
            frame = envelope.frame.encode()
            size += len(frame) + 1
            if frames and size > max_bytes:
                return frames, last_id, True
            frames.append(frame)
            last_id = envelope.id
    return frames, last_id, False


class _CountedPublish:
    """Counts the publish requests Django answers, as the ingest path counts its own."""

    def initial(self, request, *args, **kwargs):
        self._started = time.perf_counter()
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method == "POST":
            started = getattr(self, "_started", None) or time.perf_counter()
            metrics.count_publish_request(response.status_code, time.perf_counter() - started)
        return response


class EventsApi(_CountedPublish, APIView):
    """`/api/v1/events`: POST publishes one event (scope publish); GET reads the log (history)."""

    parser_classes = [RawJSONParser]  # the publish operation parses within its own bounds

    @property
    def required_scope(self) -> str:
        return "history" if self.request.method == "GET" else "publish"

    @extend_schema(
        operation_id="event_publish",
        request=EventInputSerializer,
        responses={202: EventOutputSerializer, **PUBLISH_ERRORS},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request):
        return _publish_view(request, batch=False)

    @extend_schema(
        operation_id="event_history",
        parameters=[EventHistoryQuerySerializer],
        responses={
            200: inline_serializer(
                "EventPage",
                {
                    "results": serializers.ListField(child=serializers.DictField()),
                    "next": serializers.URLField(allow_null=True),
                },
            ),
            **READ_ERRORS,
        },
    )
    def get(self, request):
        query = EventHistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        limit = params["limit"]
        max_bytes = settings.EVENTHUB_HISTORY_MAX_BYTES
        events = log_reads.event_history(
            tenant_id=request.auth.tenant_id,
            pattern=params.get("topic"),
            after_seq=params.get("after", 0),
            limit=limit,
            # Rows read at a time: about one page's bytes, however large the events.
            chunk=max(10, min(limit, max_bytes // settings.EVENTHUB_MAX_EVENT_BYTES)),
        )
        frames, last_id, full = history_page(events, max_bytes=max_bytes)
        next_url = None
        if full or len(frames) == limit:
            following = {"after": last_id, "limit": limit}
            if params.get("topic"):
                following["topic"] = params["topic"]
            next_url = request.build_absolute_uri(f"{request.path}?{urlencode(following)}")
        # The events' JSON goes out as read from the log, never parsed and encoded again.
        body = b'{"results":[%s],"next":%s}' % (b",".join(frames), json.dumps(next_url).encode())
        return HttpResponse(body, content_type="application/json")


class EventBatchPublishApi(_CountedPublish, APIView):
    """`/api/v1/events/batch`: publishes several events, all or nothing, in order."""

    required_scope = "publish"
    parser_classes = [RawJSONParser]

    @extend_schema(
        operation_id="event_publish_batch",
        request=EventBatchInputSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
        responses={
            202: inline_serializer(
                "EventBatchAccepted", {"events": EventOutputSerializer(many=True)}
            ),
            **PUBLISH_ERRORS,
        },
    )
    def post(self, request):
        return _publish_view(request, batch=True)


MAX_TOKEN_INFO_BYTES = 1024  # contract v2: a token's `info`, encoded as compact JSON


def _info_checked(value: dict) -> dict:
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValidationError("info holds a string that is not valid Unicode.") from None
    if len(encoded) > MAX_TOKEN_INFO_BYTES:
        raise ValidationError(f"info is {len(encoded)} bytes as JSON; at most 1024 are allowed.")
    return value


class _StrictCharField(serializers.CharField):
    """A string and nothing else: DRF's CharField would take `7` as "7"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _user_checked(value: str) -> str:
    # Presence lists it, and logs may: no line breaks or terminal escapes, something visible.
    if _CONTROL.search(value):
        raise ValidationError("user may not hold control characters.")
    if not value.strip():
        raise ValidationError("user may not be blank.")
    return value


class TokenIssueApi(APIView):
    """`/api/v1/tokens`: issues a signed subscriber token for browsers."""

    required_scope = "subscribe"

    @extend_schema_serializer(component_name="TokenInput")
    class InputSerializer(serializers.Serializer):
        topics = serializers.ListField(
            child=serializers.RegexField(PATTERN_RE, max_length=201),
            default=["*"],
            allow_empty=False,
            max_length=MAX_PATTERNS,
        )
        ttl = serializers.IntegerField(min_value=1, max_value=TOKEN_MAX_TTL, default=3600)
        user = _StrictCharField(
            min_length=1,
            max_length=200,
            required=False,
            trim_whitespace=False,
            validators=[_user_checked],
            help_text="Who holds the token, as your application names them (presence lists it).",
        )
        info = serializers.DictField(
            required=False,
            validators=[_info_checked],
            help_text="What others may see of the holder (presence); at most 1024 bytes as JSON.",
        )

    @extend_schema_serializer(component_name="Token")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        id = serializers.CharField(help_text="Revokes this token: DELETE /api/v1/tokens/{id}.")
        expires_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="token_issue",
        request=InputSerializer,
        responses={201: OutputSerializer, **READ_ERRORS},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        principal = request.auth
        token, token_id, expires_at = token_sign(
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            patterns=list(dict.fromkeys(data["topics"])),
            ttl=data["ttl"],
            user=data.get("user"),
            info=data.get("info"),
        )
        expires = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
        return Response(
            {"token": token, "id": token_id, "expires_at": expires},
            status=status.HTTP_201_CREATED,
        )


class TokenRevokeApi(APIView):
    """`/api/v1/tokens/{id}`: revokes one subscriber token before its expiry."""

    required_scope = "subscribe"

    @extend_schema(
        operation_id="token_revoke",
        request=None,
        responses={
            204: OpenApiResponse(
                description="Revoked: its live connections close with 4403 within 5 s, and new "
                "connections with it are refused (4401 / HTTP 401)."
            ),
            404: OpenApiResponse(description="No token of this tenant has this id."),
            **_errors(401, 403),
        },
    )
    def delete(self, request, token_id: str):
        tenant_id = request.auth.tenant_id
        if not token_id_valid(token_id, tenant_id=tenant_id):
            raise NotFound("No token of this tenant has this id.")
        services.token_revoke(
            tenant_id=tenant_id, token_id=token_id, actor=Actor.from_request(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class StatsApi(APIView):
    """`/api/v1/stats`: live numbers of the key's tenant."""

    @extend_schema(
        operation_id="stats",
        responses={
            200: inline_serializer("Stats", {"connections": serializers.DictField()}),
            **_errors(401, 403),
        },
    )
    def get(self, request):
        return Response(selectors.tenant_stats(tenant_id=request.auth.tenant_id))


class PresenceGetApi(APIView):
    """`/api/v1/presence?topic=T`: who is connected to an exact topic, over every process."""

    required_scope = "history"

    class QuerySerializer(serializers.Serializer):
        topic = serializers.RegexField(TOPIC_RE)

    @extend_schema(
        operation_id="presence",
        parameters=[OpenApiParameter("topic", str, required=True, description="An exact topic.")],
        responses={
            200: inline_serializer(
                "Presence",
                {
                    "topic": serializers.CharField(),
                    "connections": serializers.IntegerField(),
                    "users": serializers.ListField(child=serializers.DictField()),
                    "truncated": serializers.BooleanField(
                        required=False,
                        help_text="Present (true) when the presence caps left users unlisted.",
                    ),
                },
            ),
            **READ_ERRORS,
        },
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        tenant_id = request.auth.tenant_id
        return Response(presence_get(tenant_id=tenant_id, topic=query.validated_data["topic"]))
