import json

import pydantic
import pytest

from jobs.kinds import classify

TEXT = "My parcel arrived broken and nobody answers the phone."
LABELS = ["complaint", "question", "praise"]


def errors(exc_info: pytest.ExceptionInfo[pydantic.ValidationError]) -> set[tuple]:
    return {(error["loc"], error["type"]) for error in exc_info.value.errors()}


def job(**fields) -> classify.Input:
    return classify.Input.model_validate({"text": TEXT, "labels": LABELS} | fields)


def test_input_defaults_to_one_label_and_no_instructions():
    parsed = job()

    assert (parsed.multi_label, parsed.instructions) == (False, None)


def test_blank_instructions_mean_none():
    assert job(instructions="  ").instructions is None


@pytest.mark.parametrize(
    ("fields", "loc", "error_type"),
    [
        ({"labels": ["only"]}, ("labels",), "too_short"),
        ({"labels": [f"label {n}" for n in range(51)]}, ("labels",), "too_long"),
        ({"labels": "complaint, question"}, ("labels",), "list_type"),
        ({"labels": ["complaint", ""]}, ("labels", 1), "blank"),
        ({"labels": ["complaint", "   "]}, ("labels", 1), "blank"),
        ({"labels": ["x" * 101, "question"]}, ("labels", 0), "string_too_long"),
        ({"labels": ["complaint", "ques\x00tion"]}, ("labels", 1), "nul_character"),
        ({"labels": ["Complaint", "question", "complaint "]}, ("labels",), "duplicate_label"),
        ({"multi_label": "sometimes"}, ("multi_label",), "bool_parsing"),
        ({"instructions": "x" * 2001}, ("instructions",), "string_too_long"),
        ({"instructions": "be\x00strict"}, ("instructions",), "nul_character"),
        ({"text": ""}, ("text",), "blank"),
        ({"threshold": 0.5}, ("threshold",), "extra_forbidden"),
    ],
)
def test_input_rejects(fields, loc, error_type):
    with pytest.raises(pydantic.ValidationError) as exc_info:
        job(**fields)

    assert errors(exc_info) == {(loc, error_type)}


def test_duplicate_labels_error_names_both():
    with pytest.raises(pydantic.ValidationError) as exc_info:
        job(labels=["Spam", "ham", "spam"])

    assert exc_info.value.errors()[0]["msg"] == (
        'labels must be distinct ignoring case: "Spam" and "spam" are the same'
    )


def test_prompt_lists_the_labels_as_json():
    assert f"JSON list: {json.dumps(LABELS)}" in classify.build_prompt(job())


@pytest.mark.parametrize(
    ("multi_label", "rule"),
    [(False, "Choose exactly one label"), (True, "Choose every label that applies")],
)
def test_prompt_states_the_choice_rule(multi_label, rule):
    assert rule in classify.build_prompt(job(multi_label=multi_label))


def test_prompt_fences_the_owners_instructions_before_the_text():
    prompt = classify.build_prompt(job(instructions="Anger means complaint. </instructions>"))

    assert "<instructions>\nAnger means complaint. &lt;/instructions>\n</instructions>" in prompt
    assert prompt.index("</instructions>") < prompt.index("<document>")
    assert prompt.endswith(f"<document>\n{TEXT}\n</document>")


def test_prompt_without_instructions_has_no_instructions_block():
    assert "<instructions>" not in classify.build_prompt(job())


def answer(labels: list[str], confidence: float = 0.8) -> dict:
    return {
        "rationale": "The writer reports a broken parcel.",
        "labels": labels,
        "confidence": confidence,
    }


def test_output_accepts_one_of_the_jobs_labels():
    output = classify.output_model(job()).model_validate(answer(["complaint"]))

    assert classify.result_from(output) == answer(["complaint"])


def test_output_accepts_several_labels_when_multi_label():
    model = classify.output_model(job(multi_label=True))

    assert model.model_validate(answer(["complaint", "question"])).labels == [
        "complaint",
        "question",
    ]


@pytest.mark.parametrize(
    ("multi_label", "reply", "loc", "error_type"),
    [
        (False, answer(["refund"]), ("labels", 0), "literal_error"),
        (False, answer(["Complaint"]), ("labels", 0), "literal_error"),
        (False, answer(["complaint", "question"]), ("labels",), "too_long"),
        (False, answer([]), ("labels",), "too_short"),
        (True, answer([]), ("labels",), "too_short"),
        (True, answer(["complaint", "complaint"]), ("labels",), "duplicate_label"),
        (False, answer(["complaint"], confidence=1.5), ("confidence",), "less_than_equal"),
        (False, answer(["complaint"], confidence=-0.1), ("confidence",), "greater_than_equal"),
        (False, answer(["complaint"]) | {"rationale": ""}, ("rationale",), "string_too_short"),
        (False, answer(["complaint"]) | {"topic": "post"}, ("topic",), "extra_forbidden"),
    ],
)
def test_output_rejects(multi_label, reply, loc, error_type):
    model = classify.output_model(job(multi_label=multi_label))

    with pytest.raises(pydantic.ValidationError) as exc_info:
        model.model_validate(reply)

    assert errors(exc_info) == {(loc, error_type)}


def test_output_schema_offers_only_the_jobs_labels():
    schema = classify.output_model(job()).model_json_schema()

    assert schema["properties"]["labels"]["items"]["enum"] == LABELS
    assert schema["properties"]["labels"]["maxItems"] == 1
