"""JSON Schema -> GBNF grammar, for structured output and tool-call arguments.

The conversion is llama-cpp-python's `SchemaConverter` (llama.cpp's json-schema-to-grammar),
used as a library, with one correction: its string character rule admits raw control
characters, which JSON forbids inside strings; ours does not.

The converter silently ignores what it cannot express, so every schema is first checked
here: a keyword the grammar cannot honour gets a 400 that names it and where it is, never
output that only looks compliant. Refused: `not`, `if`/`then`/`else`, `allOf` (except one
part with annotations, which is inlined), `patternProperties`, `propertyNames`,
`dependentRequired`, `dependentSchemas`, `dependencies`, `unevaluatedProperties`,
`unevaluatedItems`, `contains`, `uniqueItems`, `minProperties`, `maxProperties`,
`multipleOf`, `pattern`, `$dynamicRef`, `$recursiveRef`, remote `$ref`s, `prefixItems`
together with `items`, a type list with other constraints, `required` names missing from
`properties`, and bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) on
anything but integers: integer bounds are enforced (`chat/intrange.py`). Limits: subschemas
nested at most 32 deep, counts (`minItems`, `maxItems`, `minLength`, `maxLength`) at most
1,000, integer bounds at most 30 digits. `format` is an annotation (as JSON Schema says):
`date`, `time`, `date-time` and `uuid` are enforced, others are not. `oneOf` is accepted
when its alternatives cannot overlap (distinct types, or objects told apart by a required
`const` property, as pydantic's discriminated unions are) and generated as `anyOf`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError as MetaSchemaError
from jsonschema.validators import validator_for
from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

from inkstand.chat.intrange import integer_bounds, integer_range
from inkstand.errors import BadRequestError, UnsupportedFeatureError

# JSON string characters: anything but `"`, `\` and control characters, or an escape.
JSON_CHAR = BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F])",
    [],
)

UNSUPPORTED = (
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "pattern",
    "$dynamicRef",
    "$recursiveRef",
    "additionalItems",
)
# Keywords that describe rather than constrain; a type list may carry these.
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$schema",
    "$id",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "type",
    "nullable",
}
MAX_DEPTH = 32  # nested subschemas; deeper ones would exhaust the converter's recursion
# Counted repetitions become nested rules; llama.cpp's grammar parser recurses through them
# and crashes the process (stack overflow) somewhere past 20,000.
MAX_REPEAT = 1000
COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
MAX_BOUND_DIGITS = 30
BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMAS = ("additionalProperties", "items")


class _Converter(SchemaConverter):
    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def _add_primitive(self, name: str, rule: BuiltinRule):
        return super()._add_primitive(name, JSON_CHAR if name == "char" else rule)

    def visit(self, schema, name):
        bounded = schema.get("type") == "integer" and BOUNDS & set(schema)
        if not bounded or "enum" in schema or "const" in schema:
            return super().visit(schema, name)
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        return self._add_rule(rule_name, integer_range(*integer_bounds(schema)) + " space")


@dataclass(frozen=True)
class GrammarLimits:
    """How large one request's grammar may grow (GBNF text bytes, rules)."""

    max_bytes: int = 512 * 1024
    max_rules: int = 4096


class GrammarBuilder:
    """Collects schemas into one grammar; each `add` returns the rule that matches it.

    Schemas must have passed `check_schema`. The grammar is measured after every schema it
    takes, so one that grows past `limits` is refused before the next is converted.
    """

    def __init__(self, limits: GrammarLimits | None = None) -> None:
        self._converter = _Converter()
        self._extra: dict[str, str] = {}
        self._schemas = 0
        self._limits = limits or GrammarLimits()

    def add(self, schema: dict[str, Any] | None, where: str) -> str:
        """The rule for JSON text valid against `schema` (None: any JSON object)."""
        rule = self._convert({"type": "object"} if schema is None else schema, where)
        self._check_size()
        return rule

    def _check_size(self) -> None:
        rules = self._converter._rules  # the converter's own table: name -> body
        size = sum(len(name) + len(body) + 5 for name, body in rules.items())
        for limit, value, max_value in (
            ("max_grammar_bytes", size, self._limits.max_bytes),
            ("max_grammar_rules", len(rules), self._limits.max_rules),
        ):
            if value > max_value:
                raise BadRequestError(
                    f"The tools' and response format's JSON Schemas make a grammar of over "
                    f"{max_value} {'bytes' if limit.endswith('bytes') else 'rules'} "
                    f"(`{limit}`); send fewer or smaller schemas (long `maxLength`/"
                    "`maxItems` bounds grow it most).",
                    extras={"limit": limit, "value": max_value},
                )

    def _convert(self, schema: dict[str, Any], where: str) -> str:
        prefix = f"s{self._schemas}"
        self._schemas += 1
        try:
            schema = _prefix_defs(copy.deepcopy(schema), prefix)
            resolved = self._converter.resolve_refs(schema, prefix)
            return self._converter.visit(resolved, prefix)
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise UnsupportedFeatureError(
                f"{where} cannot be turned into a grammar for constrained output: {exc}"
            ) from exc

    def rule(self, name: str, body: str) -> None:
        self._extra[name] = body

    def text(self) -> str:
        rules = self._converter.format_grammar()
        extra = "\n".join(f"{name} ::= {body}" for name, body in self._extra.items())
        return f"{extra}\n{rules}\n"


GBNF_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def literal(text: str) -> str:
    """A GBNF string literal matching exactly `text`."""
    out = []
    for char in text:
        if char in GBNF_ESCAPES:
            out.append(GBNF_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def schema_grammar(schema: dict[str, Any] | None, where: str) -> str:
    """A grammar whose `root` matches JSON valid against `schema` (None: any JSON object)."""
    if schema is not None:
        check_schema(schema, where)
    builder = GrammarBuilder()
    builder.rule("root", builder.add(schema, where))
    return builder.text()


def check_schema(schema: Any, where: str) -> None:
    """400 unless `schema` is a valid JSON Schema object that a grammar can fully express."""
    if not isinstance(schema, dict):
        raise BadRequestError(f"{where} must be a JSON Schema object.")
    nodes = list(_subschemas(schema, "", where))  # depth-checked before anything recurses
    try:
        with warnings.catch_warnings():  # an unknown `$schema` is validated as the latest
            warnings.simplefilter("ignore", DeprecationWarning)
            validator_for(schema).check_schema(schema)
    except MetaSchemaError as exc:
        path = "".join(f"[{p!r}]" for p in exc.path)
        raise BadRequestError(
            f"{where} is not a valid JSON Schema: {exc.message} (at {path or 'the top'})."
        ) from exc
    for path, node in nodes:
        _check_node(node, f"{where}{path}")
        if "oneOf" in node and not _disjoint(node["oneOf"], schema):
            raise UnsupportedFeatureError(
                f"{where}{path} has `oneOf` alternatives that may overlap, and a grammar "
                "cannot make the output match exactly one; use `anyOf`, or distinct types or "
                "a `const` discriminator property."
            )


def _disjoint(alternatives: list[Any], root: dict[str, Any]) -> bool:
    """Whether no JSON value can match two of `alternatives` (checked conservatively)."""
    resolved = [_local(alt, root) for alt in alternatives]
    if not all(isinstance(alt, dict) for alt in resolved):
        return False
    types = [alt.get("type") for alt in resolved]
    if all(isinstance(t, str) for t in types) and len(set(types)) == len(types):
        return not {"integer", "number"} <= set(types)
    return _discriminated(resolved, root)


def _discriminated(alternatives: list[dict[str, Any]], root: dict[str, Any]) -> bool:
    """Objects that all require one property whose single allowed value differs."""
    shared = set.intersection(*(set(alt.get("required", ())) for alt in alternatives))
    for name in shared:
        values = [_single_value(_local(_property(alt, name), root)) for alt in alternatives]
        if all(v is not None for v in values) and len({json.dumps(v) for v in values}) == len(
            values
        ):
            return True
    return False


def _property(schema: dict[str, Any], name: str) -> Any:
    properties = schema.get("properties")
    return properties.get(name) if isinstance(properties, dict) else None


def _single_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return [enum[0]] if isinstance(enum, list) and len(enum) == 1 else None


def _local(schema: Any, root: dict[str, Any]) -> Any:
    """`schema`, or what its local `$ref` points to."""
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target


def _check_node(node: dict[str, Any], where: str) -> None:
    found = [k for k in UNSUPPORTED if k in node]
    if node.get("uniqueItems") is True:
        found.append("uniqueItems")
    if "allOf" in node and (len(node["allOf"]) != 1 or set(node) - ANNOTATIONS - {"allOf"}):
        found.append("allOf")  # only `{"allOf": [one schema]}` (plus annotations) is inlined
    if found:
        raise UnsupportedFeatureError(
            f"{where} uses {', '.join(f'`{k}`' for k in found)}, which constrained output "
            "cannot enforce; remove it from the schema."
        )
    _check_bounds(node, where)
    _check_counts(node, where)
    ref = node.get("$ref")
    if ref is not None and not ref.startswith("#/"):
        raise UnsupportedFeatureError(
            f"{where} has `$ref` {ref!r}: only references inside the schema (`#/...`) work."
        )
    if "prefixItems" in node and "items" in node:
        raise UnsupportedFeatureError(f"{where} combines `prefixItems` and `items`.")
    if isinstance(node.get("type"), list) and set(node) - ANNOTATIONS:
        extra = sorted(set(node) - ANNOTATIONS)
        raise UnsupportedFeatureError(
            f"{where} has a list of types together with {', '.join(f'`{k}`' for k in extra)}; "
            "use `anyOf` with one schema per type instead."
        )
    missing = [k for k in node.get("required", ()) if k not in node.get("properties", {})]
    if missing:
        raise UnsupportedFeatureError(
            f"{where} requires {', '.join(f'`{k}`' for k in missing)} without describing "
            "them in `properties`."
        )


def _check_counts(node: dict[str, Any], where: str) -> None:
    large = [k for k in COUNTS if isinstance(node.get(k), int) and node[k] > MAX_REPEAT]
    if large:
        raise UnsupportedFeatureError(
            f"{where} has {', '.join(f'`{k}`' for k in large)} over {MAX_REPEAT}, more than a "
            "grammar can count; use a smaller limit or none."
        )


def _check_bounds(node: dict[str, Any], where: str) -> None:
    bounds = sorted(BOUNDS & set(node))
    if not bounds:
        return
    if node.get("type") != "integer":
        raise UnsupportedFeatureError(
            f"{where} uses {', '.join(f'`{k}`' for k in bounds)}, which constrained output "
            'enforces only on `"type": "integer"`; remove it from the schema.'
        )
    low, high = integer_bounds(node)
    if any(b is not None and len(str(abs(b))) > MAX_BOUND_DIGITS for b in (low, high)):
        raise UnsupportedFeatureError(
            f"{where} has an integer bound over {MAX_BOUND_DIGITS} digits; use a smaller one."
        )
    if low is not None and high is not None and low > high:
        raise BadRequestError(f"{where} allows no integer: its bounds exclude every value.")


def _subschemas(
    node: Any, path: str, where: str, depth: int = 0
) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    if depth > MAX_DEPTH:
        raise UnsupportedFeatureError(
            f"{where} nests schemas more than {MAX_DEPTH} levels deep (at {path})."
        )
    yield path, node
    below = depth + 1
    for key in SUBSCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            yield from _subschemas(sub, f"{path}.{key}.{name}", where, below)
    for key in SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield from _subschemas(sub, f"{path}.{key}[{i}]", where, below)
    for key in SUBSCHEMAS:
        sub = node.get(key)
        if isinstance(sub, list):  # draft 4 tuple `items`
            for i, item in enumerate(sub):
                yield from _subschemas(item, f"{path}.{key}[{i}]", where, below)
        else:
            yield from _subschemas(sub, f"{path}.{key}", where, below)


def _prefix_defs(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Rename local definitions so that two schemas in one grammar cannot share a rule.

    The converter names a referenced rule after the last segment of its `$ref`."""

    def rename(node: Any) -> Any:
        if isinstance(node, list):
            return [rename(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "allOf" in node:  # checked: exactly one part and annotations; use the part
            return rename(node["allOf"][0])
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                parts = value.split("/")
                parts[-1] = f"{prefix}-{parts[-1]}"
                out[key] = "/".join(parts)
            elif key in ("$defs", "definitions") and isinstance(value, dict):
                out[key] = {f"{prefix}-{name}": rename(sub) for name, sub in value.items()}
            elif key in ("enum", "const", "default", "examples"):
                out[key] = value
            else:
                out[key] = rename(value)
        return out

    return rename(schema)
