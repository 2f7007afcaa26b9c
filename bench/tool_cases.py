"""The labelled cases of bench/tools.py: functions, prompts, schemas.

Varied on purpose: flat and nested parameters, enums, numbers, booleans, arrays, optional
members, functions without parameters, several functions offered at once.
"""

from __future__ import annotations

from typing import Any


def function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


STR = {"type": "string", "maxLength": 60}
FUNCTIONS: dict[str, dict[str, Any]] = {
    "get_weather": function(
        "get_weather",
        "Get the current weather in a city",
        {"city": STR, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city"],
    ),
    "add": function(
        "add", "Add two numbers", {"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]
    ),
    "send_email": function(
        "send_email",
        "Send an email",
        {"to": STR, "subject": STR, "body": {"type": "string", "maxLength": 200}},
        ["to", "subject", "body"],
    ),
    "search_products": function(
        "search_products",
        "Search the product catalog",
        {
            "query": STR,
            "max_price": {"type": "number"},
            "in_stock": {"type": "boolean"},
            "tags": {"type": "array", "items": STR, "maxItems": 5},
        },
        ["query"],
    ),
    "book_flight": function(
        "book_flight",
        "Book a flight",
        {
            "origin": STR,
            "destination": STR,
            "date": {"type": "string", "format": "date"},
            "passengers": {
                "type": "array",
                "minItems": 1,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": STR,
                        "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    },
                    "required": ["name", "age"],
                    "additionalProperties": False,
                },
            },
        },
        ["origin", "destination", "date", "passengers"],
    ),
    "set_alarm": function(
        "set_alarm",
        "Set an alarm",
        {"time": {"type": "string", "format": "time"}, "label": {"anyOf": [STR, {"type": "null"}]}},
        ["time", "label"],
    ),
    "get_time": {"type": "function", "function": {"name": "get_time", "description": "Now"}},
    "translate": function(
        "translate",
        "Translate text",
        {"text": STR, "target": {"type": "string", "enum": ["fr", "de", "es", "ja"]}},
        ["text", "target"],
    ),
}

# (prompt, the function it needs)
NEEDS = [
    ("What is the weather in Paris?", "get_weather"),
    ("Is it cold in Oslo right now, in fahrenheit?", "get_weather"),
    ("Weather for Tokyo please.", "get_weather"),
    ("What is 17 plus 25?", "add"),
    ("Add 3.5 and 9.", "add"),
    ("Sum -4 and 100.", "add"),
    ("Email bob@example.com that the meeting moved to 3pm.", "send_email"),
    ("Send a thank-you email to ann@example.com.", "send_email"),
    ("Find running shoes under 80 dollars.", "search_products"),
    ("Search for red umbrellas that are in stock.", "search_products"),
    ("Book a flight from Boston to Denver on 2026-12-03 for Ann, 34.", "book_flight"),
    ("Fly me and my son (8) from Rome to Paris on 2027-01-15.", "book_flight"),
    ("Wake me up at 06:30:00.", "set_alarm"),
    ("Set an alarm for 22:15:00 called 'pills'.", "set_alarm"),
    ("What time is it?", "get_time"),
    ("Translate 'good morning' into German.", "translate"),
    ("How do you say 'thank you' in Japanese?", "translate"),
    ("Translate 'where is the station' to Spanish.", "translate"),
]
# Prompts that need no tool (for `auto`).
CHAT = [
    "Write a haiku about autumn.",
    "Who wrote Romeo and Juliet?",
    "Say hello.",
    "What is the capital of Italy?",
    "Give me a synonym for happy.",
    "Tell me a short joke.",
    "What color is the sky on a clear day?",
    "Explain what a noun is in one sentence.",
]


def strict(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "person": strict(
        {
            "name": STR,
            "age": {"type": "integer"},
            "home": strict({"city": STR, "country": STR}),
            "languages": {"type": "array", "items": STR, "maxItems": 6},
        }
    ),
    "recipe": strict(
        {
            "title": STR,
            "servings": {"type": "integer", "minimum": 1, "maximum": 12},
            "vegetarian": {"type": "boolean"},
            "ingredients": {
                "type": "array",
                "maxItems": 8,
                "items": strict({"item": STR, "grams": {"type": "number"}}),
            },
        }
    ),
    "sentiment": strict(
        {
            "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "confidence": {"type": "number"},
        }
    ),
    "event": strict(
        {
            "name": STR,
            "date": {"type": "string", "format": "date"},
            "attendees": {"type": "array", "items": STR, "maxItems": 5},
            "location": {"anyOf": [STR, {"type": "null"}]},
        }
    ),
    "book": {
        "$defs": {"Author": strict({"name": STR, "born": {"type": "integer"}})},
        **strict(
            {"title": STR, "author": {"$ref": "#/$defs/Author"}, "pages": {"type": "integer"}}
        ),
    },
}
JSON_PROMPTS = [
    ("Describe a person who lives in Oslo.", "person"),
    ("Invent a retired teacher.", "person"),
    ("Give me a pancake recipe.", "recipe"),
    ("A vegetarian chili recipe for 4.", "recipe"),
    ("Classify: 'I love this phone!'", "sentiment"),
    ("Classify: 'The delivery was late and the box was broken.'", "sentiment"),
    ("Classify: 'It is a chair.'", "sentiment"),
    ("Plan a birthday party next Saturday.", "event"),
    ("A team meeting on 2026-12-01 with Ann and Bo.", "event"),
    ("Tell me about the novel Dune.", "book"),
    ("Describe a famous book about a whale.", "book"),
    ("Invent a science fiction novel.", "book"),
]
