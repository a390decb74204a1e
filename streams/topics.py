"""Provides topic and topic-pattern syntax: validation, matching and containment."""

import re
from collections.abc import Callable, Iterable

# Anchored, because validators such as DRF's RegexField search rather than match.
TOPIC_RE = re.compile(r"\A[A-Za-z0-9_.:/-]{1,200}\Z")
PATTERN_RE = re.compile(r"\A(?:\*|[A-Za-z0-9_.:/-]{1,200}\*?)\Z")
TYPE_RE = re.compile(r"\A[A-Za-z0-9_.:/-]{1,100}\Z")
# Per subscription and per token (contract v2): bounds the index work one connection adds.
MAX_PATTERNS = 100


def topic_valid(topic: object) -> bool:
    return isinstance(topic, str) and TOPIC_RE.fullmatch(topic) is not None


def pattern_valid(pattern: object) -> bool:
    return isinstance(pattern, str) and PATTERN_RE.fullmatch(pattern) is not None


def patterns_parse(raw: str | None) -> tuple[str, ...] | None:
    """Parses `P1,P2` (default `*`); returns None when any pattern is malformed."""
    if raw is None or raw == "":
        return ("*",)
    patterns = tuple(dict.fromkeys(p for p in raw.split(",")))
    if len(patterns) > MAX_PATTERNS or not all(pattern_valid(p) for p in patterns):
        return None
    return patterns


def pattern_matches(pattern: str, topic: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


def patterns_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of whether any of `patterns` matches a topic, for many topics: one set look-up
    and one C-level `startswith` over every prefix, not a Python call per pattern (a replay
    sizes a whole buffer against a connection's up to MAX_PATTERNS on the loop)."""
    patterns = tuple(patterns)
    if "*" in patterns:
        return lambda topic: True
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return lambda topic: topic in exact or topic.startswith(prefixes)


def pattern_within(pattern: str, allowed: Iterable[str]) -> bool:
    """True when every topic `pattern` matches is matched by one of `allowed`."""
    for grant in allowed:
        if grant.endswith("*"):
            if pattern.startswith(grant[:-1]):
                return True
        elif pattern == grant:
            return True
    return False
