"""Provides the reading of publish bodies into EventInput: size limits, then parsing and
validation in bounded steps, so that no body, however large or hostile, holds the event loop.

A body is refused by its size before it is parsed (413): one event needs a small multiple of
EVENTHUB_MAX_EVENT_BYTES, a batch up to EVENTHUB_MAX_BODY_BYTES. A small body is parsed at once;
a larger batch is read one event at a time, each event from a window of the text no larger
than a single event's body may be, yielding to the loop between events. So the longest stall is
one event's parse and check (a few milliseconds), memory holds one event's objects at a time
besides what was validated, and one tenant's large bodies are read one after another.

Over 300 lines: the limits, the bounded parse and the serializers are one gate, and each
limit is checked where the text is read.
"""

import asyncio
import json
import re
import time
import weakref

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError

from eventhub.parsers import DECODER, MAX_JSON_DEPTH, json_deeper, json_parse_text, json_text
from streams.envelope import data_encode
from streams.services import EventInput
from streams.topics import TOPIC_RE, TYPE_RE

# One event's body may be this many times its encoded data (whitespace, topic, type), plus this.
EVENT_BODY_FACTOR = 2
EVENT_BODY_OVERHEAD = 16 * 1024
# Bodies up to this size are parsed in one step; larger batches one event at a time.
WHOLE_PARSE_BYTES = 64 * 1024
# Time the reader may hold the loop before it yields.
SLICE_SECONDS = 0.002


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Event data too large."
    default_code = "too_large"


def body_limit(*, batch: bool) -> int | None:
    """The most bytes a publish body may have; None: no limit (Django's cap is off)."""
    cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if batch:
        return cap
    event = EVENT_BODY_FACTOR * settings.EVENTHUB_MAX_EVENT_BYTES + EVENT_BODY_OVERHEAD
    return event if cap is None else min(cap, event)


def body_expensive(size: int) -> bool:
    """True for a body whose reading takes more than one step: worth a rate check first."""
    return size > WHOLE_PARSE_BYTES


# A NUL that is a real \u escape (preceded by an even number of backslashes).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _unstorable_text(data, encoded: str) -> str | None:
    """Why `data` cannot be logged as sent, or None: a string holding U+0000 (PostgreSQL's
    jsonb refuses it) or half of a surrogate pair (not Unicode; no UTF-8 encoding exists).

    Both only appear as \\u escapes in the ASCII-only encoding, so most events skip the check;
    the others are encoded once more with non-ASCII kept, where only NUL stays escaped and a
    lone surrogate is what UTF-8 refuses.
    """
    if "\\u" not in encoded:
        return None
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if _NUL_ESCAPE.search(text):
        return "Strings may not contain U+0000."
    try:
        text.encode("utf-8")
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
        return _event_checked(attrs["topic"], attrs["type"], data, data_encode(data))


def _event_checked(topic: str, type_: str, data, encoded: str) -> EventInput:
    """The event, once its data passed the checks the fields cannot make: depth, encoded
    size, storability."""
    if json_deeper(encoded, settings.EVENTHUB_MAX_DATA_DEPTH):
        raise ValidationError({"data": [f"Nested deeper than {settings.EVENTHUB_MAX_DATA_DEPTH}."]})
    if len(encoded) > settings.EVENTHUB_MAX_EVENT_BYTES:
        raise PayloadTooLarge(
            f"Event data is {len(encoded)} bytes encoded; the limit is "
            f"{settings.EVENTHUB_MAX_EVENT_BYTES}."
        )
    unstorable = _unstorable_text(data, encoded)
    if unstorable:
        raise ValidationError({"data": [unstorable]})
    return EventInput(topic=topic, type=type_, data_json=encoded)


def _event_valid(item) -> EventInput | None:
    """The event of a parsed item whose fields are plainly valid, without DRF's serializer, or
    None: the serializer then decides, with its error messages.

    A serializer deep-copies its declared fields for every instance: a fifth of the publish
    path's own CPU (profiled with `bench/publish.py`), spent on events that are nearly always
    valid. What passes here is exactly what the fields would take unchanged: `topic` and
    `type` strings of their patterns (the fields' regex and length checks; the patterns admit
    no NUL or surrogate), `data` present and encodable as strict JSON (`null` allowed).
    """
    if type(item) is not dict or "data" not in item:
        return None
    topic = item.get("topic")
    type_ = item.get("type", "message")
    if (
        type(topic) is not str
        or type(type_) is not str
        or TOPIC_RE.fullmatch(topic) is None
        or TYPE_RE.fullmatch(type_) is None
    ):
        return None
    data = item["data"]
    try:
        encoded = data_encode(data)
    except ValueError:
        return None
    return _event_checked(topic, type_, data, encoded)


def _event_validate(item) -> EventInput:
    """One event of a body, validated; raises ValidationError (400) or PayloadTooLarge (413)."""
    event = _event_valid(item)
    return event if event is not None else EventInputSerializer().run_validation(item)


class EventBatchInputSerializer(serializers.Serializer):
    events = serializers.ListField(child=EventInputSerializer(), allow_empty=False)

    def validate_events(self, value):
        if len(value) > settings.EVENTHUB_MAX_BATCH:
            raise ValidationError(f"At most {settings.EVENTHUB_MAX_BATCH} events per batch.")
        return value


def _batch_too_long() -> ValidationError:
    return ValidationError({"events": [f"At most {settings.EVENTHUB_MAX_BATCH} events per batch."]})


class _Slicer:
    """Yields to the loop once the reader has held it for SLICE_SECONDS."""

    def __init__(self) -> None:
        self.since = time.perf_counter()

    async def maybe_yield(self) -> None:
        if time.perf_counter() - self.since > SLICE_SECONDS:
            await asyncio.sleep(0)
            self.since = time.perf_counter()


# One tenant's large bodies are read one after another: their cost is its own.
_readers: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()


async def events_read(*, tenant_id: int, raw_body: bytes, batch: bool) -> list[EventInput]:
    """The events of a publish body (one, or a batch), validated; raises RequestDataTooBig
    (413) for a body over its limit, ParseError (400), ValidationError (400) and
    PayloadTooLarge (413) as DRF's parser and serializers would."""
    limit = body_limit(batch=batch)
    if limit is not None and len(raw_body) > limit:
        raise RequestDataTooBig
    if not raw_body:
        return _validate_whole({}, batch=batch)  # as DRF reads no body: an empty one is {}
    if not body_expensive(len(raw_body)):
        return _validate_whole(json_parse_text(json_text(raw_body)), batch=batch)
    lock = _readers.get(tenant_id)
    if lock is None:
        lock = _readers[tenant_id] = asyncio.Lock()
    async with lock:
        slicer = _Slicer()
        text = json_text(raw_body)
        if not batch:
            data = json_parse_text(text)
            await slicer.maybe_yield()
            return _validate_whole(data, batch=False)
        return await _BatchReader(text, slicer).read()


def _validate_whole(data, *, batch: bool) -> list[EventInput]:
    if not batch:
        event = _event_valid(data)
        if event is not None:
            return [event]
        serializer = EventInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return [serializer.validated_data]
    raw = data.get("events") if isinstance(data, dict) else None
    if isinstance(raw, list) and len(raw) > settings.EVENTHUB_MAX_BATCH:
        raise _batch_too_long()  # before validating each of its events
    events = _events_valid(raw)
    if events is not None:
        return events
    serializer = EventBatchInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["events"]


def _events_valid(raw) -> list[EventInput] | None:
    """A batch's events when every one is plainly valid (see `_event_valid`), or None: the
    serializer then reads the whole batch again, to name every error by its index."""
    if not isinstance(raw, list) or not raw:
        return None
    events = []
    try:
        for item in raw:
            event = _event_valid(item)
            if event is None:
                return None
            events.append(event)
    except ValidationError:
        return None
    return events


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_MISSING = object()
# How far from a window's end a parse error may be and still mean "cut by the window".
_CUT_MARGIN = 64


class _BatchReader:
    """Reads `{"events": [...], ...}` from a large text one value at a time.

    Every value but the top-level object and its `events` list is parsed from a window of the
    text no larger than one event's body may be: a longer value is refused (413) without
    parsing the rest of it. Errors name positions in the whole text, as a whole parse would.
    """

    def __init__(self, text: str, slicer: _Slicer) -> None:
        self.text = text
        self.slicer = slicer
        self.window = body_limit(batch=False) or len(text)

    async def read(self) -> list[EventInput]:
        text = self.text
        i = self._skip(0)
        if text.startswith("{", i):
            return await self._read_object(i + 1)
        # Not an object: as a whole parse would, check it is JSON, then refuse its shape.
        value, i = self._value(i, MAX_JSON_DEPTH)
        self._end(i)
        return _validate_whole(value, batch=True)

    async def _read_object(self, i: int) -> list[EventInput]:
        text = self.text
        # Other keys are parsed (the body must be JSON) and dropped, as the serializer would.
        other_events = _MISSING
        events: list[EventInput] | None = None
        errors: dict[int, object] = {}
        i = self._skip(i)
        if text.startswith("}", i):
            return _validate_whole({}, batch=True)
        while True:
            if not text.startswith('"', i):
                self._fail("Expecting property name enclosed in double quotes", i)
            key, i = self._value(i, 0)
            i = self._skip(i)
            if not text.startswith(":", i):
                self._fail("Expecting ':' delimiter", i)
            i = self._skip(i + 1)
            if key == "events" and text.startswith("[", i):
                events, errors, i = await self._read_events(i + 1)
                other_events = _MISSING
            else:
                value, i = self._value(i, MAX_JSON_DEPTH - 1)  # within the object
                if key == "events":  # the last one counts, as in a whole parse
                    other_events, events, errors = value, None, {}
                del value
                await self.slicer.maybe_yield()
            i = self._skip(i)
            if text.startswith(",", i):
                i = self._skip(i + 1)
                continue
            if text.startswith("}", i):
                self._end(i + 1)
                break
            self._fail("Expecting ',' delimiter", i)
        if events is None:
            shape = {} if other_events is _MISSING else {"events": other_events}
            return _validate_whole(shape, batch=True)
        if errors:
            raise ValidationError({"events": errors})
        if not events:
            return _validate_whole({"events": []}, batch=True)
        return events

    async def _read_events(self, i: int) -> tuple[list[EventInput], dict[int, object], int]:
        text = self.text
        events: list[EventInput] = []
        errors: dict[int, object] = {}
        i = self._skip(i)
        if text.startswith("]", i):
            return events, errors, i + 1
        index = 0
        while True:
            if index >= settings.EVENTHUB_MAX_BATCH:
                raise _batch_too_long()
            # Within the object and the list.
            item, i = self._value(i, MAX_JSON_DEPTH - 2)
            await self.slicer.maybe_yield()
            try:
                events.append(_event_validate(item))
            except ValidationError as exc:
                errors[index] = exc.detail
            del item
            await self.slicer.maybe_yield()
            index += 1
            i = self._skip(i)
            if text.startswith(",", i):
                i = self._skip(i + 1)
                continue
            if text.startswith("]", i):
                return events, errors, i + 1
            self._fail("Expecting ',' delimiter", i)

    def _value(self, i: int, depth: int):
        """Parses the value at `i` from at most one window of the text; returns (value, end).
        Raises ParseError when it nests deeper than `depth`, as a whole parse would."""
        text, window = self.text, self.window
        cut = i + window < len(text)
        view = text[i : i + window] if cut else text
        offset = i if cut else 0
        try:
            value, end = DECODER.raw_decode(view, 0 if cut else i)
        except RecursionError:
            raise ParseError("JSON is nested too deeply.") from None
        except json.JSONDecodeError as exc:
            if cut and (
                exc.pos >= len(view) - _CUT_MARGIN or exc.msg.startswith("Unterminated string")
            ):
                raise PayloadTooLarge(
                    f"An event of this batch takes more than {window} bytes of JSON; its data "
                    f"may be at most {settings.EVENTHUB_MAX_EVENT_BYTES} bytes encoded."
                ) from None
            self._fail(exc.msg, exc.pos + offset)
        except ValueError as exc:  # NaN, Infinity
            raise ParseError(f"JSON parse error - {exc}") from None
        end += offset
        if isinstance(value, dict | list) and json_deeper(text[i:end], depth):
            raise ParseError("JSON is nested too deeply.")
        return value, end

    def _skip(self, i: int) -> int:
        return _WHITESPACE.match(self.text, i).end()

    def _end(self, i: int) -> None:
        i = self._skip(i)
        if i != len(self.text):
            self._fail("Extra data", i)

    def _fail(self, message: str, position: int):
        error = json.JSONDecodeError(message, self.text, position)
        raise ParseError(f"JSON parse error - {error}")


__all__ = [
    "EventBatchInputSerializer",
    "EventInputSerializer",
    "PayloadTooLarge",
    "body_expensive",
    "body_limit",
    "events_read",
]
