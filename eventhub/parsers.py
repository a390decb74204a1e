"""Provides the JSON parser used by the API: strict JSON, and hostile nesting is a 400."""

import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper documents are refused as they are parsed, far below where encoding them again (DRF's
# JSONField does) would exhaust Python's recursion limit: that depth depends on how deep the
# stack already is, so without a fixed cap the same body could be a 400 or a 500.
MAX_JSON_DEPTH = 100


def nested_deeper(value, limit: int) -> bool:
    """True when `value` nests containers deeper than `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(JSONParser):
    """Parses JSON bodies as UTF-8; NaN, Infinity and nesting deeper than MAX_JSON_DEPTH are
    parse errors."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError("JSON is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        # No document nests deeper than it has opening brackets: most bodies skip the walk
        # (the serializer walks each event's data again, to its own smaller limit).
        opening = raw.count(b"[") + raw.count(b"{")
        if opening > MAX_JSON_DEPTH and nested_deeper(data, MAX_JSON_DEPTH):
            raise ParseError("JSON is nested too deeply.")
        return data
