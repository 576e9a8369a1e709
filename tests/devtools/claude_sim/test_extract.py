"""Extract-shaped answers: values of the right kind, copied from the text, valid for the schema.

The three examples are the web form's (webapp/forms.py SCHEMA_EXAMPLES), copied here: devtools
and its tests do not import the web app. Each schema goes out as the extract kind sends it,
under `data`, both as written and as the SDK rewrites it (`$defs`, constraints moved into
descriptions).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import pytest

from tests.devtools.claude_sim.helpers import MODEL, user_turn

CONTACT_TEXT = (
    "Hi, this is Maria Lopez from Northwind Traders. You can reach me at "
    "maria.lopez@northwind.example or on +1 415 555 0136 any weekday."
)
CONTACT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The person's full name"},
        "email": {"type": "string", "description": "Email address"},
        "phone": {"type": "string", "description": "Phone number as written"},
        "company": {"type": "string", "description": "Company or organisation"},
    },
    "required": ["name", "email"],
}
INVOICE_TEXT = (
    "Invoice INV-2041, issued 2026-11-02 by Acme Hosting. 3 x VPS small at 12.00 "
    "and 1 x Backup plan at 4.50. Total due: 40.50 EUR within 30 days."
)
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "issue_date": {"type": "string", "description": "As YYYY-MM-DD"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "number"},
        "line_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "unit_price": {"type": "number"},
                },
                "required": ["description", "unit_price"],
            },
        },
    },
    "required": ["invoice_number", "total", "line_items"],
}
EVENT_TEXT = (
    "Join us for PyCon Lisbon on 14 March 2027 at the Congress Centre. Talks by Ana "
    "Costa and Tom Becker; the keynote is also streamed online."
)
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "date": {"type": "string", "description": "The date as written"},
        "venue": {"type": "string"},
        "streamed_online": {"type": "boolean"},
        "speakers": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
    },
    "required": ["title", "date"],
}
EXAMPLES = {
    "contact": (
        CONTACT_TEXT,
        CONTACT_SCHEMA,
        {
            "name": "Maria Lopez",
            "email": "maria.lopez@northwind.example",
            "phone": "+1 415 555 0136",
            "company": "Northwind Traders",
        },
    ),
    "invoice": (
        INVOICE_TEXT,
        INVOICE_SCHEMA,
        {
            "invoice_number": "INV-2041",
            "issue_date": "2026-11-02",
            "currency": "EUR",
            "total": 40.5,
            "line_items": [
                {"description": "VPS small", "quantity": 3, "unit_price": 12.0},
                {"description": "Backup plan", "quantity": 1, "unit_price": 4.5},
            ],
        },
    ),
    "event": (
        EVENT_TEXT,
        EVENT_SCHEMA,
        {
            "title": "PyCon Lisbon",
            "date": "14 March 2027",
            "venue": "Congress Centre",
            "streamed_online": True,
            "speakers": ["Ana Costa", "Tom Becker"],
        },
    ),
}


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
def test_form_examples_get_the_values_the_text_gives(client, example, rewritten) -> None:
    text, schema, expected = EXAMPLES[example]

    data = extract(client, text, schema, rewritten=rewritten)

    assert data == expected
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
