"""Provides the REST API of the streams app: publish, history, subscriber tokens and stats."""

import io
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.conf import settings
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from eventhub.parsers import StrictJSONParser, nested_deeper
from streams import metrics, selectors, services
from streams.backends import RateLimited
from streams.envelope import Envelope, data_encode, event_id_parse
from streams.idempotency import idempotent
from streams.tokens import token_sign
from streams.topics import MAX_PATTERNS, PATTERN_RE, TOPIC_RE, TYPE_RE, pattern_valid


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


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Event data too large."
    default_code = "too_large"


def _unstorable_text(data, encoded: str) -> str | None:
    """Why `data` cannot be logged as sent, or None: a string holding U+0000 (PostgreSQL's
    jsonb refuses it) or half of a surrogate pair (not Unicode; no UTF-8 encoding exists).

    Both only appear as \\u escapes in the ASCII-only encoding, so most events skip the walk.
    """
    if "\\u" not in encoded:
        return None
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "Strings may not contain U+0000."
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "Strings may not contain unpaired surrogates (\\ud800-\\udfff)."
    return None


class StrictRegexField(serializers.RegexField):
    """A RegexField that takes strings only, as sent: DRF's CharField would turn 42 into "42"
    and strip surrounding whitespace, publishing a topic the client never wrote."""

    default_error_messages = {"invalid_type": "Must be a string."}

    def __init__(self, regex, **kwargs):
        super().__init__(regex, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_type")
        return super().to_internal_value(data)


class EventInputSerializer(serializers.Serializer):
    topic = StrictRegexField(TOPIC_RE, max_length=200)
    type = StrictRegexField(TYPE_RE, max_length=100, default="message")
    data = serializers.JSONField(allow_null=True)

    def validate(self, attrs):
        data = attrs["data"]
        if nested_deeper(data, settings.EVENTHUB_MAX_DATA_DEPTH):
            raise ValidationError(
                {"data": [f"Nested deeper than {settings.EVENTHUB_MAX_DATA_DEPTH}."]}
            )
        encoded = data_encode(data)
        if len(encoded) > settings.EVENTHUB_MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"Event data is {len(encoded)} bytes encoded; the limit is "
                f"{settings.EVENTHUB_MAX_EVENT_BYTES}."
            )
        unstorable = _unstorable_text(data, encoded)
        if unstorable:
            raise ValidationError({"data": [unstorable]})
        return services.EventInput(topic=attrs["topic"], type=attrs["type"], data_json=encoded)


@extend_schema_serializer(component_name="EventBatchInput")
class EventBatchInputSerializer(serializers.Serializer):
    events = serializers.ListField(child=EventInputSerializer(), allow_empty=False)

    def validate_events(self, value):
        if len(value) > settings.EVENTHUB_MAX_BATCH:
            raise ValidationError(f"At most {settings.EVENTHUB_MAX_BATCH} events per batch.")
        return value


class EventOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    seq = serializers.IntegerField()
    topic = serializers.CharField()
    type = serializers.CharField()
    received_at = serializers.DateTimeField()


def _accepted(envelope: Envelope) -> dict:
    return {
        "id": envelope.id,
        "seq": envelope.seq,
        "topic": envelope.topic,
        "type": envelope.type,
        "received_at": envelope.received_at.isoformat().replace("+00:00", "Z"),
    }


async def events_publish(
    *, principal, data, raw_body: bytes, path: str, idempotency_key: str | None, batch: bool
) -> dict:
    """The publish operation of `/api/v1/events` (one event) and `/batch`, for the DRF views and
    the ingest path alike: validates `data` (parsed from `raw_body`), sequences and fans out,
    once per Idempotency-Key. Returns the 202 body; raises APIException (and HubUnavailable)."""

    async def produce() -> dict:
        if batch:
            raw = data.get("events") if isinstance(data, dict) else None
            if isinstance(raw, list) and len(raw) > settings.EVENTHUB_MAX_BATCH:
                # Refuse an oversized batch before validating each of its events.
                raise ValidationError(
                    {"events": [f"At most {settings.EVENTHUB_MAX_BATCH} events per batch."]}
                )
            serializer = EventBatchInputSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            events = serializer.validated_data["events"]
        else:
            serializer = EventInputSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            events = [serializer.validated_data]
        try:
            envelopes = await services.aevent_publish(
                tenant_id=principal.tenant_id, events=events, rate=principal.publish_rate
            )
        except RateLimited as limited:
            raise Throttled(
                wait=limited.wait, detail="Publish rate limit exceeded for this tenant."
            ) from None
        if batch:
            return {"events": [_accepted(e) for e in envelopes]}
        return _accepted(envelopes[0])

    body, _ = await idempotent(
        tenant_id=principal.tenant_id,
        key=idempotency_key,
        path=path,
        body=raw_body,
        produce=produce,
    )
    return body


def _publish_view(request, *, batch: bool) -> Response:
    raw_body = request.body  # first: Django keeps it, and DRF parses its copy
    data = request.data  # DRF's negotiation: 415 for another content type, 400 for bad JSON
    meta = request.META
    try:
        declared = int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (TypeError, ValueError):
        declared = 0
    if raw_body and not declared:
        # DRF reads no body without a Content-Length (a chunked upload): parse what came.
        data = StrictJSONParser().parse(io.BytesIO(raw_body))
    body = async_to_sync(events_publish)(
        principal=request.auth,
        data=data,
        raw_body=raw_body,
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


def event_json(event) -> dict:
    """An event of the log in the shape subscribers receive."""
    return {
        "type": "event",
        "id": event.event_id,
        "seq": event.seq,
        "topic": event.topic,
        "event": event.type,
        "data": event.data,
        "ts": event.received_at.isoformat().replace("+00:00", "Z"),
    }


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
        events = list(
            selectors.event_history(
                tenant_id=request.auth.tenant_id,
                pattern=params.get("topic"),
                after_seq=params.get("after", 0),
                limit=params["limit"],
            )
        )
        next_url = None
        if len(events) == params["limit"]:
            following = {"after": events[-1].event_id, "limit": params["limit"]}
            if params.get("topic"):
                following["topic"] = params["topic"]
            next_url = request.build_absolute_uri(f"{request.path}?{urlencode(following)}")
        return Response({"results": [event_json(e) for e in events], "next": next_url})


class EventBatchPublishApi(_CountedPublish, APIView):
    """`/api/v1/events/batch`: publishes several events, all or nothing, in order."""

    required_scope = "publish"

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
        ttl = serializers.IntegerField(min_value=1, max_value=86400, default=3600)

    @extend_schema_serializer(component_name="Token")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        expires_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="token_issue",
        request=InputSerializer,
        responses={201: OutputSerializer, **READ_ERRORS},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        principal = request.auth
        token, expires_at = token_sign(
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            patterns=list(dict.fromkeys(serializer.validated_data["topics"])),
            ttl=serializer.validated_data["ttl"],
        )
        expires = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
        return Response({"token": token, "expires_at": expires}, status=status.HTTP_201_CREATED)


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
