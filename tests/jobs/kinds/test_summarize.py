import pydantic
import pytest

from jobs.kinds import summarize

TEXT = "The council approved the new budget on Monday. Libraries get longer opening hours."


def errors(exc_info: pytest.ExceptionInfo[pydantic.ValidationError]) -> set[tuple]:
    return {(error["loc"], error["type"]) for error in exc_info.value.errors()}


def test_input_defaults_to_120_words_of_prose():
    parsed = summarize.Input.model_validate({"text": TEXT})

    assert (parsed.max_words, parsed.style) == (120, "paragraph")


def test_input_keeps_the_text_exactly_as_given():
    assert summarize.Input(text="  spaced  \n").text == "  spaced  \n"


@pytest.mark.parametrize(
    ("payload", "loc", "error_type"),
    [
        ({}, ("text",), "missing"),
        ({"text": ""}, ("text",), "blank"),
        ({"text": " \n\t "}, ("text",), "blank"),
        ({"text": "a\x00b"}, ("text",), "nul_character"),
        ({"text": TEXT, "max_words": 9}, ("max_words",), "greater_than_equal"),
        ({"text": TEXT, "max_words": 1001}, ("max_words",), "less_than_equal"),
        ({"text": TEXT, "style": "haiku"}, ("style",), "literal_error"),
        ({"text": TEXT, "tone": "formal"}, ("tone",), "extra_forbidden"),
    ],
)
def test_input_rejects(payload, loc, error_type):
    with pytest.raises(pydantic.ValidationError) as exc_info:
        summarize.Input.model_validate(payload)

    assert errors(exc_info) == {(loc, error_type)}


def test_blank_text_error_says_what_is_wrong():
    with pytest.raises(pydantic.ValidationError) as exc_info:
        summarize.Input(text="   ")

    assert exc_info.value.errors()[0]["msg"] == "must not be empty or only whitespace"


@pytest.mark.parametrize(
    ("style", "expected"),
    [("paragraph", "prose, in one or more paragraphs"), ("bullets", "a bulleted list")],
)
def test_prompt_states_the_word_limit_and_style(style, expected):
    prompt = summarize.build_prompt(summarize.Input(text=TEXT, max_words=42, style=style))

    assert "at most 42 words" in prompt
    assert expected in prompt


def test_prompt_ends_with_the_text_fenced():
    prompt = summarize.build_prompt(summarize.Input(text=TEXT))

    assert prompt.endswith(f"<document>\n{TEXT}\n</document>")


def output_json(summary: str = "The budget passed.", **fields) -> dict:
    return {
        "summary": summary,
        "key_points": ["Budget approved.", "Libraries open longer."],
    } | fields


def test_output_accepts_a_summary_with_key_points():
    model = summarize.output_model(summarize.Input(text=TEXT))

    output = model.model_validate(output_json())

    assert summarize.result_from(output) == output_json()


@pytest.mark.parametrize(
    ("answer", "loc", "error_type"),
    [
        ({"summary": "The budget passed."}, ("key_points",), "missing"),
        (output_json(key_points=[]), ("key_points",), "too_short"),
        (output_json(key_points=["ok", " "]), ("key_points", 1), "blank"),
        (output_json(key_points=["point"] * 11), ("key_points",), "too_long"),
        (output_json(summary=""), ("summary",), "string_too_short"),
        (output_json(title="Budget"), ("title",), "extra_forbidden"),
    ],
)
def test_output_rejects(answer, loc, error_type):
    model = summarize.output_model(summarize.Input(text=TEXT))

    with pytest.raises(pydantic.ValidationError) as exc_info:
        model.model_validate(answer)

    assert errors(exc_info) == {(loc, error_type)}


@pytest.mark.parametrize(("words", "accepted"), [(20, True), (30, True), (31, False)])
def test_output_allows_half_again_the_word_limit(words, accepted):
    model = summarize.output_model(summarize.Input(text=TEXT, max_words=20))
    answer = output_json(summary=" ".join(["word"] * words))

    if accepted:
        model.model_validate(answer)
    else:
        with pytest.raises(pydantic.ValidationError, match="31 words; at most 20"):
            model.model_validate(answer)


def test_output_schema_tells_the_model_the_word_limit():
    model = summarize.output_model(summarize.Input(text=TEXT, max_words=55))

    assert "at most 55 words" in model.model_json_schema()["properties"]["summary"]["description"]


@pytest.mark.parametrize(
    ("text", "count"),
    [("one two three", 3), ("- one\n- two\n• three", 3), ("well - it's done.", 3), ("", 0)],
)
def test_count_words_skips_bullets_and_lone_punctuation(text, count):
    assert summarize.count_words(text) == count
