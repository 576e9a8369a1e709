"""Extract-shaped answers: values of the right kind, copied from the text, valid for the schema.

The examples are the extract kind's own (jobs/kinds/extract.py EXAMPLES, the ones the web form
offers), answers included. Each schema goes out as the extract kind sends it, under `data`, both
as written and as the SDK rewrites it (`$defs`, constraints moved into descriptions).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import pytest

from jobs.kinds import extract as extract_kind
from tests.devtools.claude_sim.helpers import MODEL, user_turn

# The extract kind's own examples: their answers are what a careful model gives.
EXAMPLES = {example.name: example for example in extract_kind.EXAMPLES}
EVENT_TEXT = EXAMPLES["Event"].input["text"]


def as_sent(schema: dict[str, Any], rewritten: bool) -> dict[str, Any]:
    """The output schema of an extract job: the job's schema under `data`."""
    wrapped = {
        "type": "object",
        "properties": {"data": schema},
        "required": ["data"],
        "additionalProperties": False,
    }
    return anthropic.transform_schema(wrapped) if rewritten else wrapped


def extract(
    client: anthropic.Anthropic, text: str, schema: dict[str, Any], *, rewritten: bool = False
) -> dict[str, Any]:
    """What the simulator extracts from `text`, checked against `schema`."""
    prompt = f"Extract data from the document below.\n\n<document>\n{text}\n</document>"
    message = client.messages.create(
        model=MODEL,
        max_tokens=4096,
        messages=user_turn(prompt),
        output_config={"format": {"type": "json_schema", "schema": as_sent(schema, rewritten)}},
    )
    data = json.loads(message.content[0].text)["data"]
    jsonschema.validate(data, schema)
    return data


@pytest.mark.parametrize("rewritten", [False, True], ids=["as-written", "sdk-rewritten"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_the_kinds_examples_get_the_values_the_text_gives(client, example, rewritten) -> None:
    text, schema = EXAMPLES[example].input["text"], EXAMPLES[example].input["schema"]

    data = extract(client, text, schema, rewritten=rewritten)

    assert data == EXAMPLES[example].output["data"]
    assert list(data) == list(schema["properties"])


def test_a_date_is_converted_when_the_description_asks_for_yyyy_mm_dd(client) -> None:
    schema = {
        "type": "object",
        "properties": {"due": {"type": "string", "description": "Due date, as YYYY-MM-DD"}},
    }

    data = extract(client, "Please pay by March 14, 2027 at the latest.", schema)

    assert data == {"due": "2027-03-14"}


def test_a_negated_statement_is_false(client) -> None:
    schema = {"type": "object", "properties": {"streamed_online": {"type": "boolean"}}}

    data = extract(client, "The keynote is not streamed online this year.", schema)

    assert data == {"streamed_online": False}


def test_arrays_keep_within_max_items(client) -> None:
    schema = {
        "type": "object",
        "properties": {"speakers": {"type": "array", "items": {"type": "string"}, "maxItems": 1}},
    }

    assert extract(client, EVENT_TEXT, schema) == {"speakers": ["Ana Costa"]}


def test_an_amount_is_a_decimal_found_in_the_text_not_an_identifiers_digits(client) -> None:
    schema = {
        "type": "object",
        "properties": {"order_number": {"type": "string"}, "price": {"type": "number"}},
    }

    data = extract(client, "Order PO-7731 shipped: 2 lamps, 18.90 each.", schema)

    assert data == {"order_number": "PO-7731", "price": 18.9}


def test_sibling_fields_of_one_kind_get_different_values(client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "guest": {"type": "string"},
            "start_date": {"type": "string"},
            "end_date": {"type": "string"},
        },
    }
    text = "Ana Costa welcomes Tom Becker from 2027-03-14 to 2027-03-16."

    data = extract(client, text, schema)

    assert data == {
        "host": "Ana Costa",
        "guest": "Tom Becker",
        "start_date": "2027-03-14",
        "end_date": "2027-03-16",
    }
