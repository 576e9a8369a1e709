"""Reading a batch's items from CSV and JSONL files, and writing its results (no database)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from jobs.batch_files import BatchFileError, BatchItem, read_items, results_csv, results_jsonl
from tests.kinds import example_input, example_output


def items(data: bytes, file_format: str = "csv", **options) -> list[BatchItem]:
    return list(read_items(io.BytesIO(data), file_format=file_format, **options))


def file_error(data: bytes, file_format: str = "csv", **options) -> BatchFileError:
    with pytest.raises(BatchFileError) as error:
        items(data, file_format, **options)
    return error.value


def test_csv_rows_become_items_numbered_by_their_line():
    data = b'id,text,extra\nt1,"First, with a comma",x\n\nt2,"Two\nlines",y\nt3,Third,z\n'

    read = items(data, id_column="id")

    assert read == [
        BatchItem(number=2, custom_id="t1", input={"text": "First, with a comma"}),
        BatchItem(number=4, custom_id="t2", input={"text": "Two\nlines"}),
        BatchItem(number=6, custom_id="t3", input={"text": "Third"}),
    ]


def test_a_utf8_bom_and_crlf_line_ends_are_read_as_plain_text():
    data = "\ufefftext\r\nCafé crème\r\n".encode()

    assert items(data) == [BatchItem(number=2, custom_id=None, input={"text": "Café crème"})]


def test_another_text_column_and_an_empty_id_cell():
    data = b"body,ref\nHello,\nWorld,r2\n"

    read = items(data, text_column="body", id_column="ref")

    assert [(item.custom_id, item.input["text"]) for item in read] == [
        (None, "Hello"),
        ("r2", "World"),
    ]


@pytest.mark.parametrize(
    ("data", "options", "code", "words"),
    [
        ("Caf\xe9\ntext\n".encode("latin-1"), {}, "not_utf8", "UTF-8"),
        (b"", {}, "empty_file", "empty"),
        (b"\nsome text\n", {}, "no_header", "header"),
        (b"text,text\na,b\n", {}, "no_header", "more than once"),
        (b"body,id\nHello,1\n", {}, "no_text_column", '"text"'),
        (b"text\nHello\n", {"id_column": "ref"}, "no_id_column", '"ref"'),
        (b"text,id\nHello,1\nBye\n", {}, "ragged_row", "line 3"),
        (b'text\n"unterminated\n', {}, "bad_csv", "line 2"),
    ],
)
def test_a_bad_csv_file_is_refused_naming_its_problem(data, options, code, words):
    error = file_error(data, **options)

    assert (error.code, error.status) == (code, 422)
    assert words in error.message


def test_a_file_over_the_byte_limit_is_refused_with_413(settings):
    settings.AIJOBS_BATCH_MAX_BYTES = 1024
    data = b"text\n" + b"x" * 1100 + b"\n"

    error = file_error(data)

    assert (error.code, error.status) == ("too_large", 413)
    assert items(b"text\n" + b"x" * 1010 + b"\n")[0].number == 2, "exactly at the limit is fine"


def test_jsonl_lines_are_items_as_in_a_json_body_or_flat_records():
    lines = [
        {"custom_id": "a", "input": {"text": "One", "max_words": 20}},
        {"body": "Two", "ref": "b"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode() + b"\n\n"

    read = items(data, "jsonl", text_column="body", id_column="ref")

    assert read == [
        BatchItem(number=1, custom_id="a", input={"text": "One", "max_words": 20}),
        BatchItem(number=2, custom_id="b", input={"text": "Two"}),
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"text": "fine"}\n{"text": \n', "line 2 is not JSON"),
        (b'["a list"]\n', "line 1 is not a JSON object"),
        (b'{"input": "text"}\n', '"input" must be an object'),
    ],
)
def test_a_bad_jsonl_line_is_refused_with_its_number(data, words):
    error = file_error(data, "jsonl")

    assert error.code == "bad_json_line"
    assert words in error.message


def test_an_unknown_format_is_a_400():
    assert file_error(b"text\nHi\n", "xlsx").status == 400


def row(custom_id: str, result, status: str = "succeeded", **rest):
    usage = {"input_tokens": 10, "output_tokens": 5}
    usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "custom_id": custom_id,
        "job_id": f"job-{custom_id}",
        "status": status,
        "result": result,
        "error_code": rest.get("error_code", ""),
        "error_message": rest.get("error_message", ""),
        **usage,
        "cost_usd": "0.000040",
    }


def read_csv(lines) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(lines))))


def test_classify_results_get_the_labels_joined_and_a_column_per_label():
    params = {"labels": ["shipping", "billing", "other"], "multi_label": True}
    result = {"rationale": "Late parcel, charged twice.", "labels": ["shipping", "billing"]}

    (line,) = read_csv(results_csv("classify", params, [row("t1", result | {"confidence": 0.8})]))

    assert line["labels"] == "shipping; billing"
    assert (line["label:shipping"], line["label:billing"], line["label:other"]) == ("1", "1", "0")
    assert (line["confidence"], line["custom_id"], line["cost_usd"]) == ("0.8", "t1", "0.000040")


def test_extract_results_get_a_column_per_top_level_field_of_the_schema():
    params = {"schema": example_input("extract")["schema"]}
    result = example_output("extract")

    (line,) = read_csv(results_csv("extract", params, [row("c1", result)]))

    for name, value in result["data"].items():
        assert line[f"data.{name}"] == str(value)
    assert "data" not in line


def test_a_failed_item_has_empty_result_cells_and_its_error():
    failed = row("t2", None, "failed", error_code="invalid_output", error_message="no JSON")

    (line,) = read_csv(results_csv("summarize", {}, [failed]))

    assert (line["summary"], line["key_points"]) == ("", "")
    assert (line["status"], line["error_code"], line["error_message"]) == (
        "failed",
        "invalid_output",
        "no JSON",
    )


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text():
    formula = '=HYPERLINK("http://127.0.0.1/x","click")'
    result = {"summary": formula, "key_points": ["+A1", "@SUM(A1)", "plain"]}
    failed = row("t3", None, "failed", error_code="invalid_output", error_message="-cmd|x")

    first, second = read_csv(results_csv("summarize", {}, [row("-a1", result), failed]))

    assert first["summary"] == "'" + formula
    # A joined list is one cell: only its start matters.
    assert first["key_points"] == "'+A1; @SUM(A1); plain"
    assert first["custom_id"] == "'-a1"
    assert second["error_message"] == "'-cmd|x"
    assert first["input_tokens"] == "10"


@pytest.mark.parametrize("value", ["+1 415 555 0136", "-12.50", "(555) 0136", "plain"])
def test_csv_cells_that_can_only_be_numbers_or_text_are_written_as_they_are(value):
    (line,) = read_csv(results_csv("summarize", {}, [row("t4", {"summary": value})]))

    assert line["summary"] == value


def test_jsonl_results_are_one_object_a_line():
    rows = [row("a", {"summary": "Short."}), row("b", None, "canceled")]

    lines = list(results_jsonl(rows))

    assert [json.loads(line) for line in lines] == rows
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
