"""The JSON Schema subset extract jobs accept: checking a schema, and the model built from it.

Supported: `object` (`properties`, `required`, `additionalProperties` false or absent, which means
false), `array` (`items`, `minItems`, `maxItems`), `string` (`enum`, `minLength`, `maxLength`),
`number` and `integer` (`minimum`, `maximum`), `boolean`; an `enum` of strings with or without
`"type": "string"`; `description` and `title` anywhere. The top level is an object. Nothing else:
no `$ref` (so no recursion), `anyOf`/`oneOf`/`allOf`, `format`, `pattern`, `const`, `default`...
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

# Objects and arrays nested in one another, the top level included: enough for records holding
# lists of records that hold lists, as in {"teams": [{"members": [{"tags": []}]}]}.
MAX_DEPTH = 6
MAX_PROPERTIES = 100  # in all objects together: any real form fits; the output grammar stays small
MAX_OPTIONAL_PROPERTIES = 24  # the Claude API refuses output schemas with more optional properties
MAX_ENUM_VALUES = 100  # per enum; a longer list of choices is a classify job
MAX_SCHEMA_BYTES = 16 * 1024  # as UTF-8 JSON; the schema is sent, and billed, with every call
# Plain keys any JSON tool handles: the pattern the Claude API enforces on tool input properties.
PROPERTY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

ANNOTATION_KEYWORDS = frozenset({"description", "title"})
KEYWORDS_BY_TYPE: dict[str, frozenset[str]] = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "array": frozenset({"type", "items", "minItems", "maxItems"}),
    "string": frozenset({"type", "enum", "minLength", "maxLength"}),
    "number": frozenset({"type", "minimum", "maximum"}),
    "integer": frozenset({"type", "minimum", "maximum"}),
    "boolean": frozenset({"type"}),
}
SUPPORTED_KEYWORDS = ANNOTATION_KEYWORDS.union(*KEYWORDS_BY_TYPE.values())
SCALAR_TYPES: dict[str, type] = {"string": str, "number": float, "integer": int, "boolean": bool}
# JSON Schema keyword -> the Pydantic constraint that enforces it.
CONSTRAINTS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_length",
    "maxItems": "max_length",
    "minimum": "ge",
    "maximum": "le",
}
ROOT_MODEL_NAME = "ExtractedData"


class SchemaError(ValueError):
    """A schema outside the supported subset; `path` is a JSON Pointer to the offending node."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --- checking ------------------------------------------------------------------------------------


def check_schema(schema: Any) -> None:
    """Raise SchemaError unless `schema` is in the supported subset and within the limits."""
    _check_size(schema)
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError("#", 'the top level must be an object schema: {"type": "object", ...}')
    _Walk().node(schema, "#", depth=0)


def _check_size(schema: Any) -> None:
    try:
        size = len(json.dumps(schema, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as error:
        raise SchemaError("#", "the schema must be plain JSON") from error
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError("#", f"the schema is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES}")


@dataclass
class _Walk:
    """One pass over a schema, counting properties across all of its objects."""

    properties: int = 0
    optional: int = 0

    def node(self, schema: Any, path: str, depth: int) -> None:
        """Check the schema at `path`, inside `depth` objects and arrays."""
        if not isinstance(schema, dict):
            raise SchemaError(path, "must be a schema (a JSON object)")
        type_ = _checked_type(schema, path)
        if type_ == "object":
            self.object(schema, path, _deeper(depth, path))
        elif type_ == "array":
            self.array(schema, path, _deeper(depth, path))
        elif type_ == "string":
            _check_string(schema, path)
        elif type_ in ("number", "integer"):
            _check_bounds(schema, "minimum", "maximum", path, count=False)

    def object(self, schema: dict[str, Any], path: str, depth: int) -> None:
        if schema.get("additionalProperties", False) is not False:
            raise SchemaError(path, '"additionalProperties" may only be false')
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise SchemaError(path, '"properties" must be an object naming at least one property')
        required = _required(schema, properties, path)
        self.count(len(properties), len(properties) - len(required), path)
        for name, subschema in properties.items():
            _check_property_name(name, path)
            self.node(subschema, f"{path}/properties/{name}", depth)

    def array(self, schema: dict[str, Any], path: str, depth: int) -> None:
        if "items" not in schema:
            raise SchemaError(path, 'an array needs "items", the schema of its elements')
        _check_bounds(schema, "minItems", "maxItems", path, count=True)
        self.node(schema["items"], f"{path}/items", depth)

    def count(self, properties: int, optional: int, path: str) -> None:
        self.properties += properties
        self.optional += optional
        if self.properties > MAX_PROPERTIES:
            raise SchemaError(path, f"the schema has more than {MAX_PROPERTIES} properties in all")
        if self.optional > MAX_OPTIONAL_PROPERTIES:
            raise SchemaError(
                path,
                f"the schema has more than {MAX_OPTIONAL_PROPERTIES} optional properties in all "
                '(properties not listed in "required")',
            )


def _checked_type(schema: dict[str, Any], path: str) -> str:
    """The node's type, once its keywords and annotations are known to fit it."""
    unsupported = sorted(schema.keys() - SUPPORTED_KEYWORDS)
    if unsupported:
        raise SchemaError(path, f"unsupported keyword {json.dumps(unsupported[0])}")
    type_ = _type_of(schema, path)
    misplaced = sorted(schema.keys() - KEYWORDS_BY_TYPE[type_] - ANNOTATION_KEYWORDS)
    if misplaced:
        allowed = ", ".join(sorted(KEYWORDS_BY_TYPE[type_] | ANNOTATION_KEYWORDS))
        raise SchemaError(
            path,
            f"keyword {json.dumps(misplaced[0])} does not apply to {type_} (allowed: {allowed})",
        )
    for keyword in ANNOTATION_KEYWORDS & schema.keys():
        if not isinstance(schema[keyword], str):
            raise SchemaError(path, f'"{keyword}" must be a string')
    return type_


def _type_of(schema: dict[str, Any], path: str) -> str:
    """The node's declared type; an enum without one is a string enum."""
    types = ", ".join(KEYWORDS_BY_TYPE)
    if "type" not in schema:
        if "enum" in schema:
            return "string"
        raise SchemaError(path, f'"type" is missing (one of {types})')
    type_ = schema["type"]
    if not isinstance(type_, str) or type_ not in KEYWORDS_BY_TYPE:
        raise SchemaError(path, f'"type" must be one of {types}, not {json.dumps(type_)}')
    return type_


def _deeper(depth: int, path: str) -> int:
    if depth >= MAX_DEPTH:
        raise SchemaError(path, f"objects and arrays are nested more than {MAX_DEPTH} levels deep")
    return depth + 1


def _required(schema: dict[str, Any], properties: dict[str, Any], path: str) -> set[str]:
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        raise SchemaError(path, '"required" must be a list of property names')
    for name in required:
        if name not in properties:
            raise SchemaError(path, f'"required" names {json.dumps(name)}, which is not a property')
    if len(set(required)) != len(required):
        raise SchemaError(path, '"required" names a property twice')
    return set(required)


def _check_property_name(name: Any, path: str) -> None:
    if not isinstance(name, str) or not PROPERTY_NAME.fullmatch(name):
        raise SchemaError(
            f"{path}/properties",
            f"property name {json.dumps(name)} must be 1 to 64 characters, each an ASCII letter, "
            "a digit, '_', '-' or '.'",
        )


def _check_string(schema: dict[str, Any], path: str) -> None:
    _check_bounds(schema, "minLength", "maxLength", path, count=True)
    if "enum" not in schema:
        return
    values = schema["enum"]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise SchemaError(path, '"enum" must be a non-empty list of strings')
    if len(values) > MAX_ENUM_VALUES:
        raise SchemaError(path, f'"enum" has {len(values)} values; at most {MAX_ENUM_VALUES}')
    if "minLength" in schema or "maxLength" in schema:
        raise SchemaError(path, '"enum" cannot be combined with "minLength" or "maxLength"')


def _check_bounds(schema: dict[str, Any], low: str, high: str, path: str, *, count: bool) -> None:
    """`low` and `high` are counts (whole numbers >= 0) or finite numbers, and low <= high."""
    for keyword in (low, high):
        if keyword in schema and not _is_bound(schema[keyword], count=count):
            kind = "a whole number >= 0" if count else "a finite number"
            raise SchemaError(path, f'"{keyword}" must be {kind}')
    if low in schema and high in schema and schema[low] > schema[high]:
        raise SchemaError(path, f'"{low}" is greater than "{high}"')


def _is_bound(value: Any, *, count: bool) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never to JSON
        return False
    if count:
        return isinstance(value, int) and value >= 0
    return isinstance(value, (int, float)) and math.isfinite(value)


# --- building ------------------------------------------------------------------------------------


def build_model(schema: dict[str, Any], name: str = ROOT_MODEL_NAME) -> type[BaseModel]:
    """The model whose instances are exactly the objects a checked object `schema` accepts.

    Properties keep their names as aliases (fields are `field_0`, `field_1`...), so any name
    works, "schema" and "first-name" included; validate and dump by alias. The model is strict:
    "3" is not an integer and 1 is not a boolean, as in JSON Schema (stricter only in refusing
    1.0 as an integer).
    """
    required = set(schema.get("required", []))
    fields = {
        f"field_{index}": _field(prop, subschema, required=prop in required)
        for index, (prop, subschema) in enumerate(schema["properties"].items())
    }
    config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    if "title" in schema:
        config["title"] = schema["title"]
    # An object's description goes on its model: the SDK drops siblings of a "$ref".
    return create_model(name, __config__=config, __doc__=schema.get("description"), **fields)


def _field(name: str, schema: dict[str, Any], *, required: bool) -> tuple[Any, Any]:
    annotation = _annotation(schema, name)
    if required:
        return annotation, Field(alias=name)
    # Optional here, so a null ("not in the document") passes and is dropped from the result;
    # but shown to the model as a plain property left out of "required", because each nullable
    # union counts against the API's small limit on union-typed properties.
    return annotation | None, Field(default=None, alias=name, json_schema_extra=_not_nullable)


def _not_nullable(field_schema: dict[str, Any]) -> None:
    """Rewrite `{"anyOf": [S, {"type": "null"}], "default": null}` as plain S."""
    variants = field_schema.pop("anyOf")
    field_schema.update(next(v for v in variants if v != {"type": "null"}))
    field_schema.pop("default", None)


def _annotation(schema: dict[str, Any], name: str) -> Any:
    type_ = _type_of(schema, name)
    if type_ == "object":
        return build_model(schema, name)
    if type_ == "array":
        inner = list[_annotation(schema["items"], f"{name} item")]
    elif "enum" in schema:
        inner = Literal[tuple(schema["enum"])]
    else:
        inner = SCALAR_TYPES[type_]
    constraints = {CONSTRAINTS[key]: value for key, value in schema.items() if key in CONSTRAINTS}
    return Annotated[
        inner,
        Field(description=schema.get("description"), title=schema.get("title"), **constraints),
    ]
