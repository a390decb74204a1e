"""Provides the JSON parser used by the API: strict JSON, and hostile nesting is a 400.

Nesting is measured on the text, never by walking parsed objects: a body of a million empty
objects costs a Python loop per object to walk (seconds for 4 MiB), but only a few C-speed
passes over its brackets here.
"""

import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper documents are refused as they are parsed, far below where encoding them again (DRF's
# JSONField does) would exhaust Python's recursion limit: that depth depends on how deep the
# stack already is, so without a fixed cap the same body could be a 400 or a 500.
MAX_JSON_DEPTH = 100

_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _structure(text: str) -> bytes:
    """The brackets of a valid JSON text, in order, with every string (and what it holds)
    removed: escaped backslashes, then escaped quotes, then every other quote-delimited run."""
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(text.split('"')[::2]) if '"' in text else text
    # Outside strings JSON is ASCII; anything else was inside a string.
    return outside.encode("ascii", "ignore").translate(None, _NOT_BRACKETS)


def json_deeper(text: str, limit: int) -> bool:
    """True when the valid JSON `text` nests containers deeper than `limit`.

    Each pass removes the innermost level of every branch, so a document `limit` deep is gone
    after `limit` passes; a document with no more brackets than that cannot be deeper.
    """
    brackets = _structure(text)
    if len(brackets) <= 2 * limit:
        return False
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"\0").replace(b"{}", b"\0").replace(b"\0", b"")
    return bool(brackets)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def json_parse_text(text: str, *, depth: int = MAX_JSON_DEPTH):
    """Parses a whole JSON text strictly; raises ParseError (400) as DRF's parser would."""
    try:
        data = DECODER.decode(text)
    except RecursionError:
        raise ParseError("JSON is nested too deeply.") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    if json_deeper(text, depth):
        raise ParseError("JSON is nested too deeply.")
    return data


def json_text(raw: bytes) -> str:
    """The body as text; raises ParseError when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None


class StrictJSONParser(JSONParser):
    """Parses JSON bodies as UTF-8; NaN, Infinity and nesting deeper than MAX_JSON_DEPTH are
    parse errors."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        return json_parse_text(json_text(raw))


class RawJSONParser(JSONParser):
    """Takes a JSON body without parsing it, for views that parse within bounds of their own
    (the publish endpoints): DRF still negotiates the content type (415) first."""

    def parse(self, stream, media_type=None, parser_context=None):
        return {}
