"""Topic and pattern syntax: validation, matching and containment (streams.topics)."""

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams.topics import (
    MAX_PATTERNS,
    pattern_matches,
    pattern_valid,
    pattern_within,
    patterns_matcher,
    patterns_parse,
    topic_valid,
)

# A small alphabet makes shared prefixes, and so the interesting cases, likely.
ALPHABET = "aAb._-"


@pytest.mark.parametrize(
    "topic", ["orders", "orders.created", "a", "A-Z_0:9/x.y", "t" * 200, "Orders.Created"]
)
def test_it_accepts_a_valid_topic(topic):
    assert topic_valid(topic)


@pytest.mark.parametrize(
    "topic",
    ["", "t" * 201, "has space", "orders.*", "*", "a,b", "café", "a\n", "\n", None, 5, ["a"]],
)
def test_it_rejects_an_invalid_topic(topic):
    assert not topic_valid(topic)


@pytest.mark.parametrize("pattern", ["*", "orders", "orders.*", "orders*", "t" * 200 + "*"])
def test_it_accepts_a_valid_pattern(pattern):
    assert pattern_valid(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["", "**", "*orders", "or*ders", "orders.**", "orders.*x", "has space*", "t" * 201, None],
)
def test_it_rejects_an_invalid_pattern(pattern):
    assert not pattern_valid(pattern)


@pytest.mark.parametrize("raw", [None, ""])
def test_no_topics_means_every_topic(raw):
    assert patterns_parse(raw) == ("*",)


def test_it_parses_a_list_of_patterns_without_duplicates_in_order():
    assert patterns_parse("orders.*,billing,orders.*,*") == ("orders.*", "billing", "*")


@pytest.mark.parametrize("raw", ["a,,b", "a,", ",a", "bad topic", "a,b c", "a*b"])
def test_it_refuses_a_list_with_a_malformed_pattern(raw):
    assert patterns_parse(raw) is None


def test_it_refuses_more_patterns_than_allowed():
    allowed = ",".join(f"t{i}" for i in range(MAX_PATTERNS))
    assert patterns_parse(allowed) is not None
    assert patterns_parse(allowed + ",one-more") is None


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("*", "anything", True),
        ("orders", "orders", True),
        ("orders", "orders.created", False),
        ("orders", "Orders", False),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.", True),
        ("orders.*", "orders", False),
        ("orders.*", "Orders.created", False),
        ("orders*", "orders", True),
        ("orders*", "ordersx", True),
        ("a.b", "aXb", False),
    ],
)
def test_a_pattern_matches_its_topic_or_its_prefix(pattern, topic, matches):
    assert pattern_matches(pattern, topic) is matches


@pytest.mark.parametrize(
    ("pattern", "allowed", "within"),
    [
        ("orders.created", ["orders.*"], True),
        ("orders.*", ["orders.*"], True),
        ("orders.eu.*", ["orders.*"], True),
        ("orders.created", ["orders.created"], True),
        ("anything.*", ["*"], True),
        ("*", ["*"], True),
        ("*", ["orders.*"], False),
        ("orders.*", ["orders.created"], False),
        ("orders*", ["orders.*"], False),
        ("orders", ["orders.*"], False),
        ("orders.*", ["orders"], False),
        ("users.x", ["orders.*", "billing"], False),
        ("billing", ["orders.*", "billing"], True),
        ("orders.x", [], False),
    ],
)
def test_a_pattern_is_within_a_grant_only_when_the_grant_covers_all_its_topics(
    pattern, allowed, within
):
    assert pattern_within(pattern, allowed) is within


# Properties ---------------------------------------------------------------------------------

topics = st.text(alphabet=ALPHABET, min_size=1, max_size=8)
patterns = st.one_of(st.just("*"), topics, topics.map(lambda t: t + "*"))


def reference_matches(pattern: str, topic: str) -> bool:
    """An independent reading of the contract: `*` is a trailing wildcard, nothing else is."""
    regex = re.escape(pattern[:-1]) + ".*" if pattern.endswith("*") else re.escape(pattern)
    return re.fullmatch(regex, topic, flags=re.DOTALL) is not None


@given(pattern=patterns, topic=topics)
def test_pattern_matches_agrees_with_a_reference(pattern, topic):
    assert pattern_valid(pattern)
    assert topic_valid(topic)
    assert pattern_matches(pattern, topic) == reference_matches(pattern, topic)


@given(several=st.lists(patterns, max_size=6), topic=topics)
def test_a_matcher_of_several_patterns_matches_what_one_of_them_matches(several, topic):
    expected = any(reference_matches(pattern, topic) for pattern in several)
    assert patterns_matcher(several)(topic) == expected


@given(pattern=patterns, grant=patterns, suffix=st.text(alphabet=ALPHABET, max_size=4))
def test_a_pattern_within_a_grant_matches_no_topic_the_grant_does_not(pattern, grant, suffix):
    # A topic `pattern` matches: the pattern itself, or its prefix and any continuation.
    topic = pattern[:-1] + suffix if pattern.endswith("*") else pattern
    assume(topic_valid(topic))
    assert pattern_matches(pattern, topic)
    if pattern_within(pattern, [grant]):
        assert pattern_matches(grant, topic)


@given(topic=topics, grant=patterns)
def test_a_topic_is_within_a_grant_exactly_when_the_grant_matches_it(topic, grant):
    assert pattern_within(topic, [grant]) == pattern_matches(grant, topic)


@given(pattern=patterns, grants=st.lists(patterns, max_size=4))
def test_a_pattern_is_within_several_grants_when_within_one_of_them(pattern, grants):
    assert pattern_within(pattern, grants) == any(pattern_within(pattern, [g]) for g in grants)
