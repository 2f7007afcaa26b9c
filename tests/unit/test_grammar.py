"""JSON Schema -> GBNF: the grammars compile in llama.cpp and accept exactly the valid JSON.

A grammar is probed with llama.cpp's own grammar sampler over the embedded model's
vocabulary (loaded vocabulary-only, no weights): a text is accepted when every token of it
is allowed in turn and the end-of-generation token is allowed after it.
"""

from __future__ import annotations

import json
from typing import Literal

import llama_cpp as L
import pytest
from pydantic import BaseModel, Field
from writerai.lib._pydantic import to_strict_json_schema

from inkstand.backends.constraint import Candidates, Constraint, grammar_sampler
from inkstand.chat.grammar import GrammarBuilder, check_schema, schema_grammar
from inkstand.chat.toolformat import Function, HermesFormat
from inkstand.config import find_embedded_model
from inkstand.errors import BadRequestError, UnsupportedFeatureError


class Probe:
    def __init__(self) -> None:
        params = L.llama_model_default_params()
        params.vocab_only = True
        self.model = L.llama_model_load_from_file(find_embedded_model().encode(), params)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.candidates = Candidates(L.llama_vocab_n_tokens(self.vocab))
        self.eos = L.llama_vocab_eos(self.vocab)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (L.llama_token * (len(data) + 8))()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, len(data) + 8, False, False)
        return list(buf[:n])

    def accepts(self, grammar: str, text: str) -> bool:
        sampler = grammar_sampler(self.vocab, grammar)
        assert sampler, f"llama.cpp refused the grammar:\n{grammar}"
        try:
            for token in self.tokenize(text):
                if not self.candidates.allows(sampler, token):
                    return False
                L.llama_sampler_accept(sampler, token)
            return self.candidates.allows(sampler, self.eos)
        finally:
            L.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def probe():
    return Probe()


class Address(BaseModel):
    city: str
    zip: str | None


class Person(BaseModel):
    name: str
    age: int
    kind: Literal["a", "b"]
    home: Address = Field(description="where they live")
    past: list[Address]


class Tree(BaseModel):
    name: str
    children: list[Tree]


PERSON = to_strict_json_schema(Person)
TREE = to_strict_json_schema(Tree)
OBJECT = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 5}, "n": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "text", "valid"),
    [
        (OBJECT, '{"city": "Paris"}', True),
        (OBJECT, '{"city": "Paris", "n": -12}', True),
        (OBJECT, '{"n": 1}', False),  # required missing
        (OBJECT, '{"city": "Paris", "n": 1.5}', False),  # not an integer
        (OBJECT, '{"city": "Paris", "x": 1}', False),  # additionalProperties false
        (OBJECT, '{"city": "Parisian"}', False),  # maxLength
        (OBJECT, '{"city": "a\\nb"}', True),  # an escaped newline
        (OBJECT, '{"city": "a\nb"}', False),  # a raw control character is not JSON
        (OBJECT, '{"city": "Paris"', False),  # unfinished
        ({"enum": ["x", 1, None]}, "null", True),
        ({"enum": ["x", 1, None]}, '"y"', False),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 1}, "[]", False),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 1}, "[true, false]", True),
        ({}, '{"any": [1, {"thing": null}]}', True),
        ({"type": "object", "properties": {"not": {"const": 1}}}, '{"not": 1}', True),
        (
            PERSON,
            json.dumps(
                {
                    "name": "Ann",
                    "age": 3,
                    "kind": "b",
                    "home": {"city": "Oslo", "zip": None},
                    "past": [{"city": "Rome", "zip": "00100"}],
                }
            ),
            True,
        ),
        (PERSON, '{"name": "Ann", "age": 3, "kind": "c"}', False),
        (TREE, '{"name": "a", "children": [{"name": "b", "children": []}]}', True),
        (TREE, '{"name": "a", "children": [{"name": "b"}]}', False),
        ({"allOf": [{"type": "string", "maxLength": 2}], "title": "t"}, '"ab"', True),
        ({"allOf": [{"type": "string", "maxLength": 2}], "title": "t"}, '"abc"', False),
        ({"allOf": [{"type": "string", "maxLength": 2}], "title": "t"}, "{}", False),
    ],
)
def test_grammar_accepts_exactly_valid_json(probe, schema, text, valid):
    assert probe.accepts(schema_grammar(schema, "the schema"), text) is valid


@pytest.mark.parametrize(
    ("keyword", "schema"),
    [
        ("not", {"not": {"type": "string"}}),
        ("if", {"if": {"type": "string"}, "then": {"minLength": 1}}),
        ("patternProperties", {"type": "object", "patternProperties": {"^a": {}}}),
        ("minimum", {"type": "object", "properties": {"n": {"type": "number", "minimum": 1}}}),
        ("pattern", {"type": "string", "pattern": "^a+$"}),
        ("uniqueItems", {"type": "array", "uniqueItems": True}),
        ("allOf", {"allOf": [{"type": "object"}, {"required": []}]}),
        ("allOf", {"allOf": [{"type": "string"}], "minLength": 2}),
        ("oneOf", {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}),
        ("oneOf", {"oneOf": [{"type": "integer"}, {"type": "number"}]}),
        ("$ref", {"$ref": "https://example.com/schema.json"}),
        ("`x`", {"type": "object", "required": ["x"]}),
        ("`minLength`", {"type": ["string", "null"], "minLength": 2}),
    ],
)
def test_inexpressible_features_are_named(keyword, schema):
    with pytest.raises(UnsupportedFeatureError) as caught:
        schema_grammar(schema, "`the schema`")
    assert keyword in caught.value.description
    assert "`the schema`" in caught.value.description


def test_where_the_feature_sits_is_named():
    schema = {"type": "object", "properties": {"deep": {"type": "array", "items": {"not": {}}}}}
    with pytest.raises(UnsupportedFeatureError, match=r"properties\.deep\.items"):
        check_schema(schema, "`s`")


@pytest.mark.parametrize("schema", [{"type": 5}, {"required": "x"}, [1]])
def test_invalid_schemas_are_bad_requests(schema):
    with pytest.raises(BadRequestError, match="JSON Schema"):
        check_schema(schema, "`s`")


def test_definitions_of_two_schemas_do_not_collide(probe):
    def with_item(props: dict) -> dict:
        return {
            "$defs": {"Item": {"type": "object", "properties": props, "required": list(props)}},
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
        }

    builder = GrammarBuilder()
    a = builder.add(with_item({"a": {"type": "integer"}}), "a")
    b = builder.add(with_item({"b": {"type": "string"}}), "b")
    builder.rule("root", f"{a} | {b}")
    grammar = builder.text()
    assert probe.accepts(grammar, '{"item": {"a": 1}}')
    assert probe.accepts(grammar, '{"item": {"b": "x"}}')
    assert not probe.accepts(grammar, '{"item": {"b": 1}}')


WEATHER = Function(
    "get_weather",
    "Weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Function("time", None, None)


def call(name: str, arguments: dict) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


def calls_grammar(functions: list[Function], several: bool) -> str:
    builder = GrammarBuilder()
    builder.rule("root", HermesFormat().add_calls(builder, functions, several=several))
    return builder.text()


def test_tool_call_grammar_forces_valid_calls(probe):
    grammar = calls_grammar([WEATHER, CLOCK], several=True)
    assert probe.accepts(grammar, call("get_weather", {"city": "Oslo"}))
    assert probe.accepts(grammar, call("time", {}) + call("get_weather", {"city": "Oslo"}))
    assert not probe.accepts(grammar, call("get_weather", {}))  # `city` is required
    assert not probe.accepts(grammar, call("time", {"x": 1}))  # no parameters
    assert not probe.accepts(grammar, call("other", {}))
    assert not probe.accepts(grammar, "Sure! " + call("time", {}))
    assert not probe.accepts(grammar, "")


def test_a_named_function_allows_one_call_to_it(probe):
    grammar = calls_grammar([WEATHER], several=False)
    assert probe.accepts(grammar, call("get_weather", {"city": "Oslo"}))
    assert not probe.accepts(grammar, call("get_weather", {"city": "A"}) * 2)


def lazy(probe: Probe) -> Constraint:
    grammar = calls_grammar([CLOCK], several=False)
    return Constraint(
        lambda: grammar_sampler(probe.vocab, grammar), ("<tool_call>",), probe.tokenize
    )


@pytest.mark.parametrize(
    "pieces",
    [
        ["Sure. <", "tool", "_", "call", ">"],
        ["<tool_call>"],
        ["x<tool_ca", "ll>\n{"],
        ["a" * 30, "<", "tool_call", ">\n"],
    ],
)
def test_a_lazy_constraint_arms_when_the_trigger_is_complete(probe, pieces):
    constraint = lazy(probe)
    for piece in pieces[:-1]:
        constraint.watch(piece.encode(), probe.candidates)
        assert constraint.sampler is None
    constraint.watch(pieces[-1].encode(), probe.candidates)
    assert constraint.sampler is not None
    constraint.free()


def test_a_trigger_followed_by_text_the_grammar_refuses_leaves_it_unarmed(probe):
    constraint = lazy(probe)
    constraint.watch(b"<tool_call>```", probe.candidates)
    assert constraint.sampler is None
    constraint.watch(b"<tool_call>\n", probe.candidates)  # disarmed for good
    assert constraint.sampler is None


BOUNDED = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 1, "exclusiveMaximum": 100}},
    "required": ["n"],
}


@pytest.mark.parametrize(
    ("n", "valid"),
    [("1", True), ("99", True), ("0", False), ("100", False), ("-5", False), ("007", False)],
)
def test_integer_bounds_are_enforced(probe, n, valid):
    assert probe.accepts(schema_grammar(BOUNDED, "s"), f'{{"n": {n}}}') is valid


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "number", "minimum": 0}, "`minimum`, which constrained output enforces only"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "allows no integer"),
    ],
    ids=["bounds on a number", "an empty range"],
)
def test_number_bounds_and_empty_ranges_are_refused(schema, says):
    with pytest.raises(BadRequestError, match=says):
        schema_grammar(schema, "`s`")


def nested(depth: int, leaf: dict) -> dict:
    for _ in range(depth):
        leaf = {"type": "object", "properties": {"a": leaf}, "required": ["a"]}
    return leaf


def test_deep_schemas_are_refused_not_crashed():
    schema_grammar(nested(30, {"type": "integer"}), "`s`")
    with pytest.raises(UnsupportedFeatureError, match="levels deep"):
        schema_grammar(nested(400, {"type": "integer"}), "`s`")
    deep_value: list = []
    for _ in range(600):
        deep_value = [deep_value]
    with pytest.raises(UnsupportedFeatureError):
        schema_grammar({"type": "object", "x-extra": deep_value}, "`s`")


def test_an_unknown_meta_schema_is_validated_as_the_latest():
    schema_grammar({"$schema": "https://example.com/unknown", "type": "object"}, "`s`")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "maxItems": 200_000},
        {"type": "string", "maxLength": 5000},
        {"type": "integer", "minimum": 10**40},
    ],
    ids=["maxItems", "maxLength", "huge bound"],
)
def test_counts_a_grammar_cannot_hold_are_refused(schema):
    # 200,000 nested repetitions crash llama.cpp's grammar parser (a stack overflow).
    with pytest.raises(UnsupportedFeatureError, match="over"):
        schema_grammar(schema, "`s`")


def test_the_largest_allowed_counts_compile(probe):
    schema = {"type": "array", "items": {"type": "string", "maxLength": 1000}, "maxItems": 1000}
    assert probe.accepts(schema_grammar(schema, "`s`"), '["a", "b"]')


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('{"pet": {"kind": "cat", "lives": 9}}', True),
        ('{"pet": {"kind": "dog", "good": true}}', True),
        ('{"pet": {"kind": "dog", "lives": 9}}', False),
    ],
)
def test_a_discriminated_union_is_accepted_as_one_of(probe, text, valid):
    schema = to_strict_json_schema(Pet)
    assert "oneOf" in json.dumps(schema)
    assert probe.accepts(schema_grammar(schema, "`s`"), text) is valid


def test_one_of_with_distinct_types_is_accepted():
    schema_grammar({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "`s`")
