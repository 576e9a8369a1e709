"""Answers built from the prompt: labels, summaries, values for a schema, prose."""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field

from tests.devtools.claude_sim.helpers import (
    MODEL,
    NEWS_TEXT,
    POLITICS_TEXT,
    Classification,
    create,
    user_turn,
)


class Summary(BaseModel):
    summary: str
    key_points: list[str]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class LineItem(BaseModel):
    name: str
    quantity: int = Field(ge=1, le=10)
    color: Color


class Invoice(BaseModel):
    customer: str
    invoice_number: int
    total: float
    paid: bool
    items: list[LineItem]
    note: str | None = None


def test_classify_shaped_parse_picks_the_label_with_most_word_overlap(client) -> None:
    message = client.messages.parse(
        model=MODEL,
        max_tokens=1024,
        messages=user_turn(POLITICS_TEXT),
        output_format=Classification,
    )

    output = message.parsed_output
    assert output.labels == ["politics"]
    assert 0 <= output.confidence <= 1
    assert output.rationale
    assert message.model == MODEL
    assert message.id.startswith("msg_sim_")
    assert message._request_id.startswith("req_sim_")


def test_summary_shaped_parse_uses_lead_sentences_within_the_word_limit(client) -> None:
    prompt = f"Summarize in at most 12 words.\n<text>{NEWS_TEXT}</text>"

    message = client.messages.parse(
        model=MODEL, max_tokens=1024, messages=user_turn(prompt), output_format=Summary
    )

    output = message.parsed_output
    assert output.summary == "The council approved the new budget on Monday."
    assert len(output.summary.split()) <= 12
    assert output.key_points
    assert all(point in NEWS_TEXT for point in output.key_points)


def test_nested_model_is_filled_from_the_text(client) -> None:
    text = "Invoice number 1234 for customer: ACME Corp, total 99.50 EUR. Two red widgets."

    output = client.messages.parse(
        model=MODEL, max_tokens=1024, messages=user_turn(text), output_format=Invoice
    ).parsed_output

    assert output.customer == "ACME Corp"
    assert output.invoice_number == 1234
    assert output.total == 99.5
    assert output.paid is False
    assert output.items
    assert all(1 <= item.quantity <= 10 and item.color is Color.RED for item in output.items)


def test_create_without_a_schema_answers_with_the_lead_sentences(client) -> None:
    message = create(client, NEWS_TEXT)

    assert (
        message.content[0].text
        == "The council approved the new budget on Monday. Taxes will not rise this year."
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
