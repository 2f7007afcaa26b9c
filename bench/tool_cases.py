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
    ("Quel temps fait-il à Lyon aujourd'hui ?", "get_weather"),
    ("Check the forecast for München in celsius.", "get_weather"),
    ("Do I need an umbrella in São Paulo today?", "get_weather"),
    ("How hot is it in Phoenix, Arizona? Use fahrenheit.", "get_weather"),
    ("Current conditions in Kraków, please.", "get_weather"),
    ("Wie ist das Wetter in Zürich?", "get_weather"),
    ("I have 1250 apples and buy 375 more. How many now?", "add"),
    ("What's 0.1 + 0.2?", "add"),
    ("Add minus twelve to forty-two.", "add"),
    ("Compute 1e6 plus 2.5e5.", "add"),
    ("My rent is 1450.75 and utilities are 212.30; what is the total?", "add"),
    ("Tell carlos@example.org the report is due Friday.", "send_email"),
    (
        "Write to hr@example.com with subject 'Vacation request' asking for 3 days off in May.",
        "send_email",
    ),
    ("Email my landlord at owner@example.net that the heater is broken.", "send_email"),
    ("Send an email to team@example.com reminding everyone about lunch at noon.", "send_email"),
    ("Envoie un mail à marie@example.fr pour confirmer le rendez-vous de jeudi.", "send_email"),
    (
        "I'm looking for a waterproof hiking jacket, max 150 euros, tagged outdoor and rain.",
        "search_products",
    ),
    ("Show me laptops under 900 that are in stock right now.", "search_products"),
    ("Any organic green tea in the catalog?", "search_products"),
    ("Search for a yoga mat, tags: eco, non-slip, purple.", "search_products"),
    ("Find a birthday gift for a 10-year-old who likes dinosaurs, under 30.", "search_products"),
    ("I need a flight from London to New York on 2027-03-10 for Tom Smith, age 45.", "book_flight"),
    (
        "Book Madrid to Lisbon, 2026-12-24, for Ana (29), Luis (31) and their baby Sofía (1).",
        "book_flight",
    ),
    ("Get me from Tokyo to Seoul on 2027-02-01; passenger Kenji, 52.", "book_flight"),
    (
        "Flight for four from Chicago to Orlando on 2027-04-05: Ann 40, Bob 42, Cy 12, Di 9.",
        "book_flight",
    ),
    ("Reserve a seat from Zürich to Wien on 2027-06-18 for Greta, 67.", "book_flight"),
    ("Set an alarm at 07:45:00 labeled 'gym'.", "set_alarm"),
    ("Remind me with an alarm at 13:00:00 to call mom.", "set_alarm"),
    ("Alarm for quarter past five in the morning, no label.", "set_alarm"),
    ("Réveille-moi à 05:50:00, s'il te plaît.", "set_alarm"),
    ("I need to take the bread out at 18:20:00; set an alarm called 'oven'.", "set_alarm"),
    ("What's the time right now?", "get_time"),
    ("Could you tell me the current time?", "get_time"),
    ("Quelle heure est-il ?", "get_time"),
    ("Check the clock for me.", "get_time"),
    ("Translate 'the cat is sleeping on the sofa' into French.", "translate"),
    ("Say 'happy birthday' in Spanish.", "translate"),
    ("I need 'please close the door' in German.", "translate"),
    ("Translate 'where is the nearest train station?' to Japanese.", "translate"),
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
    "Write a limerick about a cat.",
    "What is the plural of mouse?",
    "Summarize the plot of Cinderella in two sentences.",
    "Why do leaves change color in the fall?",
    "Give me three tips for better sleep.",
    "What does 'serendipity' mean?",
    "Thanks, that was helpful!",
    "Suggest a name for a pet goldfish.",
    "How many legs does a spider have?",
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
    ("Describe a software engineer from Nairobi who speaks three languages.", "person"),
    ("Make up a chef who lives in Lyon, France.", "person"),
    ("A quick tomato soup recipe for 2 people.", "recipe"),
    ("Recipe for beef stew serving 6.", "recipe"),
    ("Classify: 'Worst customer service I have ever had.'", "sentiment"),
    ("Classify: 'The package arrived on Tuesday.'", "sentiment"),
    ("A product launch on 2027-02-14 in Berlin with Mia, Leo and Ravi.", "event"),
    ("An online book club meeting on 2026-12-10, no physical location.", "event"),
    ("Tell me about the novel Pride and Prejudice.", "book"),
]
