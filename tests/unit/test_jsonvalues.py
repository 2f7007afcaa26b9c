"""`json_values_over` against a count made by parsing: never under the values, never over
values plus keys plus arrays, whatever the strings hold."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from inkstand.jsonvalues import json_values_over

TRICKY_TEXT = st.text(alphabet=st.sampled_from('ab:,[]{}"\\\n\u00e9'), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TRICKY_TEXT, inner, max_size=5),
    max_leaves=40,
)


def census(value: object) -> tuple[int, int]:
    """(values, values + keys + arrays) of a parsed document."""
    if isinstance(value, list):
        parts = [census(item) for item in value]
        return 1 + sum(p[0] for p in parts), 2 + sum(p[1] for p in parts)
    if isinstance(value, dict):
        parts = [census(item) for item in value.values()]
        return 1 + sum(p[0] for p in parts), 1 + len(value) + sum(p[1] for p in parts)
    return 1, 1


@settings(max_examples=400, deadline=None)
@given(JSON, st.booleans())
def test_the_count_lies_between_values_and_values_with_keys(value: object, ascii_only: bool):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    values, most = census(value)
    for limit in range(max(values - 3, 0), values):
        assert json_values_over(raw, limit) is not None, (raw, limit)
    assert json_values_over(raw, most) is None, raw


def test_small_values_are_refused_by_their_marks() -> None:
    raw = b"[" + b",".join([b'{"a":[]}'] * 1000) + b"]"
    assert json_values_over(raw, 999) is not None
    assert json_values_over(raw, 4001) is None


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"messages": [{"role": "user", "content": ",:[ " * 50_000}]}).encode()
    assert json_values_over(raw, 10) is None


def test_escaped_quotes_do_not_hide_values() -> None:
    raw = json.dumps({"a": '\\"' * 1000, "b": [0] * 1000}).encode()
    assert json_values_over(raw, 900) is not None
    assert json_values_over(raw, 1010) is None


def test_many_strings_are_over_the_limit_without_cutting_them_out() -> None:
    raw = json.dumps(["x,"] * 10_000).encode()
    assert json_values_over(raw, 1000) == 10_000 * 2 // 4
