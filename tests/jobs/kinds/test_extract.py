import copy
import json

import jsonschema
import pydantic
import pytest
from anthropic.lib._parse._transform import transform_schema

from jobs.kinds import extract, schema

TEXT = "Ann Lee (31, member) bought 2 lamps, shipped to Leeds LS1 4AB."
PERSON = {
    "type": "object",
    "title": "Buyer",
    "description": "The person who bought something.",
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "Full name."},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "height_m": {"type": "number"},
        "member": {"type": "boolean"},
        "role": {"enum": ["buyer", "seller"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 8}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "orders": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["name", "age", "member", "orders"],
}
PERSON_DATA = {
    "name": "Ann Lee",
    "age": 31,
    "height_m": 1.7,
    "member": True,
    "role": "buyer",
    "address": {"city": "Leeds", "zip": "LS1 4AB"},
    "orders": [{"sku": "lamp", "qty": 2}],
}
# Names that are not Python identifiers or that clash with BaseModel's own attributes.
ODD_NAMES = [
    "schema",
    "json",
    "copy",
    "dict",
    "model_config",
    "model_fields",
    "first-name",
    "2nd.line",
]
ODD = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ODD_NAMES},
    "required": ODD_NAMES,
}


def errors(exc_info: pytest.ExceptionInfo[pydantic.ValidationError]) -> set[tuple]:
    return {(error["loc"], error["type"]) for error in exc_info.value.errors()}


def job(json_schema: dict) -> extract.Input:
    return extract.Input.model_validate({"text": TEXT, "schema": json_schema})


def output_model(json_schema: dict = PERSON) -> type[pydantic.BaseModel]:
    return extract.output_model(job(json_schema))


# --- input -------------------------------------------------------------------------------------


def test_input_takes_and_gives_back_the_schema_under_its_json_name():
    parsed = job(PERSON)

    assert parsed.json_schema == PERSON
    assert parsed.model_dump() == {"text": TEXT, "schema": PERSON}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"schema": PERSON}, {(("text",), "missing")}),
        ({"text": TEXT}, {(("schema",), "missing")}),
        ({"text": TEXT, "schema": "object"}, {(("schema",), "dict_type")}),
        ({"text": "\x00", "schema": PERSON}, {(("text",), "nul_character")}),
        (
            {"text": TEXT, "json_schema": PERSON},
            {(("schema",), "missing"), (("json_schema",), "extra_forbidden")},
        ),
    ],
)
def test_input_rejects(payload, expected):
    with pytest.raises(pydantic.ValidationError) as exc_info:
        extract.Input.model_validate(payload)

    assert errors(exc_info) == expected


def nested_objects(levels: int) -> dict:
    node: dict = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"a": node}, "required": ["a"]}
    return node


def nested_arrays(levels: int) -> dict:
    node: dict = {"type": "string"}
    for _ in range(levels):
        node = {"type": "array", "items": node}
    return {"type": "object", "properties": {"a": node}, "required": ["a"]}


def strings(count: int, *, required: bool = True) -> dict:
    names = [f"p{n}" for n in range(count)]
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": names if required else [],
    }


def with_property(node: dict) -> dict:
    return {"type": "object", "properties": {"x": node}}


@pytest.mark.parametrize(
    "json_schema",
    [
        PERSON,
        ODD,
        nested_objects(6),
        nested_arrays(5),
        strings(100),
        strings(24, required=False),
        with_property({"enum": [f"v{n}" for n in range(100)]}),
        with_property({"type": "string", "enum": ["a"], "title": "A", "description": "just a"}),
        with_property({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 1}),
        with_property({"type": "integer", "minimum": -5, "maximum": 5.5}),
        with_property({"type": "string", "minLength": 0, "maxLength": 0}),
        strings(1) | {"additionalProperties": False},
    ],
)
def test_supported_schemas_are_accepted(json_schema):
    assert job(json_schema).json_schema == json_schema


DEEPEST = "#" + "/properties/a" * 6


@pytest.mark.parametrize(
    ("json_schema", "path", "reason"),
    [
        ({"type": "array", "items": {"type": "string"}}, "#", "the top level must be an object"),
        ({"properties": {"a": {"type": "string"}}}, "#", "the top level must be an object"),
        (
            with_property({"type": "string", "format": "email"}),
            "#/properties/x",
            'keyword "format"',
        ),
        (with_property({"$ref": "#/$defs/x"}), "#/properties/x", 'unsupported keyword "$ref"'),
        (with_property({"anyOf": [{"type": "string"}]}), "#/properties/x", 'keyword "anyOf"'),
        (with_property({"oneOf": [{"type": "string"}]}), "#/properties/x", 'keyword "oneOf"'),
        (with_property({"type": "string", "pattern": "^a"}), "#/properties/x", 'keyword "pattern"'),
        (strings(1) | {"$defs": {}}, "#", 'unsupported keyword "$defs"'),
        (strings(1) | {"patternProperties": {}}, "#", 'unsupported keyword "patternProperties"'),
        (nested_objects(7), DEEPEST, "nested more than 6 levels deep"),
        (nested_arrays(6), "#/properties/a/items/items/items/items/items", "more than 6 levels"),
        (strings(101), "#", "more than 100 properties in all"),
        (with_property(strings(100)), "#/properties/x", "more than 100 properties in all"),
        (strings(25, required=False), "#", "more than 24 optional properties in all"),
        (strings(1) | {"description": "x" * 16_400}, "#", "bytes as JSON; at most 16384"),
        (with_property({"type": "number", "maximum": float("nan")}), "#", "must be plain JSON"),
        (strings(1) | {"additionalProperties": True}, "#", '"additionalProperties" may only be'),
        (strings(1) | {"additionalProperties": {}}, "#", '"additionalProperties" may only be'),
        ({"type": "object", "properties": {}}, "#", '"properties" must be an object naming'),
        ({"type": "object"}, "#", '"properties" must be an object naming'),
        (with_property({"type": "array"}), "#/properties/x", 'an array needs "items"'),
        (with_property({"type": "array", "items": []}), "#/properties/x/items", "must be a schema"),
        (with_property("string"), "#/properties/x", "must be a schema"),
        (with_property({"enum": [1, 2]}), "#/properties/x", '"enum" must be a non-empty list of'),
        (with_property({"enum": []}), "#/properties/x", '"enum" must be a non-empty list of'),
        (with_property({"enum": list(map(str, range(101)))}), "#/properties/x", "101 values"),
        (with_property({"enum": ["a"], "maxLength": 3}), "#/properties/x", "cannot be combined"),
        (with_property({"type": "integer", "enum": ["1"]}), "#/properties/x", "does not apply"),
        (with_property({"type": ["string", "null"]}), "#/properties/x", '"type" must be one of'),
        (with_property({"type": "null"}), "#/properties/x", '"type" must be one of'),
        (with_property({"description": "no type"}), "#/properties/x", '"type" is missing'),
        (with_property({"type": "integer", "minLength": 1}), "#/properties/x", "does not apply"),
        (
            with_property({"type": "number", "minimum": 2, "maximum": 1}),
            "#/properties/x",
            "greater",
        ),
        (with_property({"type": "number", "minimum": "0"}), "#/properties/x", "a finite number"),
        (with_property({"type": "array", "items": {}, "minItems": -1}), "#/properties/x", ">= 0"),
        (with_property({"type": "string", "maxLength": True}), "#/properties/x", "a whole number"),
        (with_property({"type": "string", "title": 7}), "#/properties/x", '"title" must be a'),
        (
            {"type": "object", "properties": {"first name": {"type": "string"}}},
            "#/properties",
            "'-'",
        ),
        (
            {"type": "object", "properties": {"a" * 65: {"type": "string"}}},
            "#/properties",
            "1 to 64",
        ),
        (strings(1) | {"required": ["p0", "p1"]}, "#", '"required" names "p1", which is not'),
        (strings(1) | {"required": ["p0", "p0"]}, "#", '"required" names a property twice'),
        (strings(1) | {"required": "p0"}, "#", '"required" must be a list'),
    ],
)
def test_unsupported_schemas_are_rejected_with_the_path(json_schema, path, reason):
    with pytest.raises(pydantic.ValidationError) as exc_info:
        job(json_schema)

    (error,) = exc_info.value.errors()
    assert (error["loc"], error["type"]) == (("schema",), "unsupported_schema")
    assert error["msg"].startswith(f"{path}: ")
    assert reason in error["msg"]


def test_schema_errors_name_the_keyword_and_its_path():
    with pytest.raises(schema.SchemaError) as exc_info:
        schema.check_schema(with_property({"type": "string", "format": "email"}))

    assert str(exc_info.value) == '#/properties/x: unsupported keyword "format"'
    assert (exc_info.value.path, exc_info.value.reason) == (
        "#/properties/x",
        'unsupported keyword "format"',
    )


# --- prompt ------------------------------------------------------------------------------------


def test_prompt_asks_for_output_matching_the_schema_then_fences_the_text():
    prompt = extract.build_prompt(job(PERSON))

    assert "must match the given JSON schema" in prompt
    assert prompt.endswith(f"<document>\n{TEXT}\n</document>")


# --- output ------------------------------------------------------------------------------------


def test_output_satisfying_the_schema_is_accepted_and_stored_as_given():
    output = output_model().model_validate({"data": PERSON_DATA})

    assert extract.result_from(output) == {"data": PERSON_DATA}


def test_output_is_validated_from_json_as_the_sdk_does():
    adapter = pydantic.TypeAdapter(output_model())

    output = adapter.validate_json(json.dumps({"data": PERSON_DATA}))

    assert extract.result_from(output) == {"data": PERSON_DATA}


def test_optional_properties_left_out_or_null_are_left_out_of_the_result():
    answer = {
        "name": "Ann",
        "age": 31,
        "member": False,
        "orders": [],
        "role": None,
        "address": None,
    }

    result = extract.result_from(output_model().model_validate({"data": answer}))

    assert result == {"data": {"name": "Ann", "age": 31, "member": False, "orders": []}}
    jsonschema.validate(result["data"], PERSON)


REMOVE = object()


def changed(path: tuple, value: object) -> dict:
    """PERSON_DATA with the value at `path` replaced, or removed when `value` is REMOVE."""
    data = copy.deepcopy(PERSON_DATA)
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    if value is REMOVE:
        del node[last]
    else:
        node[last] = value
    return {"data": data}


@pytest.mark.parametrize(
    ("path", "value", "error_type"),
    [
        (("age",), "31", "int_type"),
        (("age",), 31.5, "int_type"),
        (("age",), 151, "less_than_equal"),
        (("member",), 1, "bool_type"),
        (("member",), "yes", "bool_type"),
        (("name",), 7, "string_type"),
        (("name",), "", "string_too_short"),
        (("height_m",), "1.7", "float_type"),
        (("name",), REMOVE, "missing"),
        (("nickname",), "Annie", "extra_forbidden"),
        (("role",), "admin", "literal_error"),
        (("address", "city"), REMOVE, "missing"),
        (("address", "zip"), "LS1 4AB XYZ", "string_too_long"),
        (("address", "country"), "UK", "extra_forbidden"),
        (("orders", 0, "qty"), 0, "greater_than_equal"),
        (("orders", 0, "sku"), REMOVE, "missing"),
        (("orders",), [{"sku": "lamp", "qty": 1}] * 4, "too_long"),
        (("orders",), {"sku": "lamp", "qty": 1}, "list_type"),
    ],
)
def test_output_violating_the_schema_is_rejected(path, value, error_type):
    with pytest.raises(pydantic.ValidationError) as exc_info:
        output_model().model_validate(changed(path, value))

    assert errors(exc_info) == {(("data", *path), error_type)}


def test_output_without_data_is_rejected():
    with pytest.raises(pydantic.ValidationError) as exc_info:
        output_model().model_validate({"name": "Ann"})

    assert errors(exc_info) == {(("data",), "missing"), (("name",), "extra_forbidden")}


def test_nested_arrays_of_objects_work():
    deep = {
        "type": "object",
        "properties": {
            "teams": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "members": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "tags": {"type": "array", "items": {"type": "string"}}
                                },
                                "required": ["tags"],
                            },
                        },
                    },
                    "required": ["name", "members"],
                },
            }
        },
        "required": ["teams"],
    }
    data = {"teams": [{"name": "red", "members": [{"tags": ["a", "b"]}, {"tags": []}]}]}

    output = output_model(deep).model_validate({"data": data})

    assert extract.result_from(output) == {"data": data}
    with pytest.raises(pydantic.ValidationError) as exc_info:
        output_model(deep).model_validate(
            {"data": {"teams": [{"name": "red", "members": [{"tags": [1]}]}]}}
        )
    assert errors(exc_info) == {(("data", "teams", 0, "members", 0, "tags", 0), "string_type")}


def test_odd_property_names_round_trip_to_their_original_names():
    data = {name: f"value of {name}" for name in ODD_NAMES}

    output = output_model(ODD).model_validate({"data": data})

    assert extract.result_from(output) == {"data": data}


def sent_schema(model: type[pydantic.BaseModel]) -> dict:
    """The schema messages.parse sends for `model`, as the SDK transforms it."""
    return transform_schema(pydantic.TypeAdapter(model).json_schema())


def test_schema_sent_to_the_model_uses_the_original_property_names():
    sent = sent_schema(output_model(ODD))

    assert list(sent["$defs"]["ExtractedData"]["properties"]) == ODD_NAMES


def test_schema_sent_to_the_model_keeps_optional_properties_plain():
    sent = sent_schema(output_model(PERSON))

    data = sent["$defs"]["ExtractedData"]
    assert data["required"] == PERSON["required"]
    assert data["properties"]["height_m"] == {"type": "number", "title": "Height M"}
    assert "anyOf" not in json.dumps(sent)


def test_schema_sent_to_the_model_keeps_descriptions_and_titles():
    data = sent_schema(output_model(PERSON))["$defs"]["ExtractedData"]

    assert (data["title"], data["description"]) == ("Buyer", PERSON["description"])
    assert data["properties"]["name"]["description"].startswith("Full name.")


def test_jsonschema_check_catches_what_a_built_model_lets_through(monkeypatch):
    permissive = pydantic.create_model("Permissive", __config__=pydantic.ConfigDict(extra="allow"))
    monkeypatch.setattr(extract, "build_model", lambda json_schema: permissive)

    with pytest.raises(pydantic.ValidationError) as exc_info:
        output_model().model_validate({"data": {"name": "Ann"}})

    assert errors(exc_info) == {(("data",), "schema_mismatch")}
    assert "does not match the job's schema at $" in str(exc_info.value)
