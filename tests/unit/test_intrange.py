"""Integer ranges as GBNF: exactly the integers in range, spelled as JSON spells them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inkstand.chat.intrange import integer_bounds, integer_range


def as_regex(gbnf: str) -> re.Pattern:
    """The expression as a Python regex (it uses only literals, classes, `|`, `()` and `*`)."""
    pattern = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf).replace(" ", "")
    return re.compile(pattern)


def inside(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


bounds = st.one_of(st.none(), st.integers(-5000, 5000))


@given(bounds, bounds, st.lists(st.integers(-20_000, 20_000), min_size=20, max_size=60))
def test_range_matches_exactly_its_integers(low, high, values):
    if low is not None and high is not None and low > high:
        low, high = high, low
    regex = as_regex(integer_range(low, high))
    edges = [b + d for b in (low, high) if b is not None for d in (-1, 0, 1)]
    for value in [*values, *edges, 0, -1, 1]:
        assert bool(regex.fullmatch(str(value))) == inside(value, low, high), value


@pytest.mark.parametrize("text", ["01", "-0", "00", "+1", "", "1.0", "-"])
def test_no_leading_zeros_signs_or_fractions(text):
    assert not as_regex(integer_range(None, None)).fullmatch(text)
    assert not as_regex(integer_range(-10, 10)).fullmatch(text)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"minimum": 1}, (1, None)),
        ({"maximum": 9.5}, (None, 9)),
        ({"exclusiveMinimum": 0, "maximum": 10}, (1, 10)),
        ({"minimum": 0.5, "exclusiveMaximum": 3}, (1, 2)),
        ({"minimum": 2, "exclusiveMinimum": 4}, (5, None)),
    ],
)
def test_bounds_of_a_schema(schema, expected):
    assert integer_bounds(schema) == expected
