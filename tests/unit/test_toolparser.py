"""The incremental tool-call parser: the same result under every chunking of the same text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from inkstand.chat.toolparser import (
    CLOSE,
    OPEN,
    TAIL,
    Arguments,
    CallEnd,
    CallStart,
    Match,
    Text,
    ToolCallParser,
    match_steps,
)


@dataclass
class Parsed:
    content: str = ""
    calls: list[list] = field(default_factory=list)  # [name, arguments, ended]


def run(pieces: list[str]) -> Parsed:
    """Feed `pieces` one by one; check the event order rules; return what they add up to."""
    parser, out = ToolCallParser(), Parsed()
    events = [e for piece in pieces for e in parser.feed(piece)] + parser.finish()
    for event in events:
        if isinstance(event, Text):
            assert event.text, "no empty text events"
            out.content += event.text
        elif isinstance(event, CallStart):
            assert event.index == len(out.calls), "calls are numbered 0, 1, 2 in order"
            assert not out.calls or out.calls[-1][2], "a call starts after the last one ended"
            out.calls.append([event.name, "", False])
        elif isinstance(event, Arguments):
            assert event.index == len(out.calls) - 1 and not out.calls[-1][2]
            assert event.text
            out.calls[-1][1] += event.text
        else:
            assert isinstance(event, CallEnd)
            assert event.index == len(out.calls) - 1 and not out.calls[-1][2]
            out.calls[-1][2] = True
    return out


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def call_text(name: str, arguments: object, space: str = "\n") -> str:
    args = json.dumps(arguments)
    return f'{OPEN}{space}{{"name": {json.dumps(name)}, "arguments": {args}}}{space}{CLOSE}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
names = st.text(min_size=1, max_size=12)
calls = st.builds(call_text, names, st.dictionaries(st.text(max_size=5), json_values))
noise = st.sampled_from(
    ["<", "<tool", OPEN, f"{OPEN}{{", f'{OPEN} {{"name": 1', CLOSE, "}", '"', "\\", " ", "\n"]
    + [f'{OPEN}{{"name": "\\x", "arguments": ', '{"name": "f", "arguments": ']
)
prose = st.text(alphabet="ab <>{}\"'\n_tolc/", max_size=20)
texts = st.lists(st.one_of(calls, noise, prose), max_size=6).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_every_chunking_gives_the_same_result(text, cuts):
    assert run(split(text, cuts)) == run([text])


@settings(max_examples=200, deadline=None)
@given(texts)
def test_one_character_at_a_time_gives_the_same_result(text):
    assert run(list(text)) == run([text])


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abc .!\n", max_size=10).filter(lambda t: t.strip()),
    st.lists(
        st.tuples(names, st.dictionaries(st.text(max_size=5), json_values)), min_size=1, max_size=3
    ),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_well_formed_calls_are_found_whole(prefix, wanted, cuts):
    text = prefix + "".join(call_text(n, a) for n, a in wanted) + "\n"
    parsed = run(split(text, cuts))
    assert parsed.content == prefix
    assert [(n, json.loads(a), ended) for n, a, ended in parsed.calls] == [
        (n, a, True) for n, a in wanted
    ]


def test_plain_text_passes_through_untouched():
    assert run(["Hello <b>world</b> <tool", "_cal"]) == Parsed("Hello <b>world</b> <tool_cal")


def test_a_marker_without_a_call_is_text():
    assert run([f"{OPEN} not json"]).content == f"{OPEN} not json"
    assert run([f'{OPEN}{{"arguments": {{}}, "name": "f"}}']).calls == []


def test_a_name_that_is_not_a_json_string_makes_the_marker_text():
    text = f'{OPEN}{{"name": "a\\q", "arguments": {{}}}}{CLOSE}'
    assert run([text]) == Parsed(text)


def test_a_call_cut_off_ends_where_it_stopped():
    parsed = run([f'{OPEN}\n{{"name": "f", "arguments": {{"city": "Par'])
    assert parsed.calls == [["f", '{"city": "Par', True]]


def test_whitespace_between_and_after_calls_is_not_content():
    text = call_text("a", {}) + "\n\n" + call_text("b", {"x": 1}) + "\n "
    assert run([text]) == Parsed("", [["a", "{}", True], ["b", '{"x": 1}', True]])


def test_arguments_stream_as_they_arrive():
    parser = ToolCallParser()
    assert parser.feed(f'{OPEN}\n{{"name": "f", "arguments": {{"ci') == [
        CallStart(0, "f"),
        Arguments(0, '{"ci'),
    ]
    assert parser.feed('ty": 1}') == [Arguments(0, 'ty": 1}')]
    assert parser.feed("}\n</tool") == []
    assert parser.feed("_call>") == [CallEnd(0)]


def test_tail_matching_reports_prefixes():
    assert match_steps(" }\n</tool", TAIL)[0] is Match.PREFIX
    assert match_steps(" }\n</tool_call>x", TAIL)[:2] == (Match.DONE, 15)
    assert match_steps(" ]", TAIL)[0] is Match.FAIL
