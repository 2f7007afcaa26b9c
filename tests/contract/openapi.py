"""Writer's OpenAPI document (vendored beside this file) as JSON Schema validators.

The document is OpenAPI 3.0: `nullable: true` becomes "or null". Writer's real responses carry
null in a few members the document types as non-nullable (spec section 8, and the canonical
shapes of sections 2.7 and 3.8 it leads to); `NULL_BY_SPEC_8` allows null exactly there, and
nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI_PATH = Path(__file__).with_name("writer-openapi.yml")
OPENAPI_URI = "urn:writer:openapi"

# Spec section 8 (and the canonical shapes of sections 2.7 and 3.8 it leads to) has the server
# emit null where the OAS types a member as non-nullable. Null is allowed exactly here:
NULL_BY_SPEC_8 = {
    "chat_response": ["service_tier"],  # 2.7: "service_tier": null
    "chat_completion_chunk": ["service_tier", "usage"],  # 3.3 / 8.6: usage null until the end
    "chat_completion_usage": ["completion_tokens_details"],  # 2.6 / 8.5: object | null
    "chat_completion_response_message": [
        "tool_calls",  # 8.3: emit null when absent
        "translation_data",  # 2.3: object | null
        "web_search_data",  # 2.3: object | null
    ],
    "chat_completion_streaming_delta": [
        "content",  # 8.2 / 3.4: null on the first and the final chunk
        "tool_calls",  # 3.8: null on the first chunk
    ],
    "graph_data": ["sources", "subqueries"],  # 8.4: the object with null members
}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _to_json_schema(node: object) -> object:
    """OpenAPI 3.0 schema objects to JSON Schema: `nullable: true` becomes "or null"."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key in ("nullable", "example", "discriminator"):
            continue
        if key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _to_json_schema(value)
    return _nullable(out) if node.get("nullable") is True else out


def load_writer_schemas() -> dict[str, dict]:
    document = yaml.safe_load(OPENAPI_PATH.read_text())
    schemas = {name: _to_json_schema(s) for name, s in document["components"]["schemas"].items()}
    for name, members in NULL_BY_SPEC_8.items():
        properties = schemas[name]["properties"]
        for member in members:
            properties[member] = _nullable(properties[member])
    return schemas


def writer_validators() -> dict[str, Draft202012Validator]:
    """One validator per component schema, `$ref`s resolved through a registry."""
    schemas = load_writer_schemas()
    root = Resource({"components": {"schemas": schemas}}, specification=DRAFT202012)
    registry = Registry().with_resource(OPENAPI_URI, root)
    return {
        name: Draft202012Validator(
            {"$ref": f"{OPENAPI_URI}#/components/schemas/{name}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        for name in schemas
    }
