"""A batch's items read from an uploaded file, and its results written as one.

Uploads are CSV with a header row, or JSON Lines. Both are read as a stream, one item at a
time, so a 64 MiB file is never held in memory as a whole (let alone in several copies); the
bytes read are counted as they pass, so a file over AIJOBS_BATCH_MAX_BYTES stops at the limit.
Anything wrong with the file as a file raises BatchFileError naming the problem and the line;
whether each item is a valid input for its kind is jobs.batches' concern.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import IO, Any

from django.conf import settings

from jobs import kinds
from jobs.usage import TOKEN_FIELDS

FORMATS = ("csv", "jsonl")
# Header names listed in an error message: enough to spot a typo, not a wall of text.
MAX_COLUMNS_NAMED = 20
# What a result column reads from a stored result.
Getter = Callable[[dict[str, Any]], Any]


class BatchFileError(Exception):
    """A file (or body) that cannot be a batch: `code` names the problem, `status` its HTTP
    status (400, 413 or 422)."""

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class BatchItem:
    """One item as submitted: its number (1-based; in a file, its line), its custom_id if it
    has one, and its input (`text` and any overrides of the batch's parameters)."""

    number: int
    custom_id: str | None
    input: dict[str, Any]


def read_items(
    stream: IO[bytes],
    *,
    file_format: str,
    text_column: str = "text",
    id_column: str | None = None,
) -> Iterator[BatchItem]:
    """The items of a CSV or JSONL file, read as they are needed.

    CSV: the header row names the columns; `text_column` holds each item's text and
    `id_column` (optional) its custom_id; other columns are ignored. JSONL: each line is an
    object, either `{"custom_id"?, "input": {...}}` as in a JSON body, or a flat record read
    like a CSV row. Blank lines are skipped in both.
    """
    if file_format not in FORMATS:
        raise BatchFileError(
            "bad_format", f"format must be one of {', '.join(FORMATS)}", status=400
        )
    # utf-8-sig: a byte order mark (as spreadsheet programs write) is dropped, not read as text.
    text = io.TextIOWrapper(io.BufferedReader(_Bounded(stream)), encoding="utf-8-sig", newline="")
    read = _csv_items if file_format == "csv" else _jsonl_items
    try:
        yield from read(text, text_column, id_column)
    except UnicodeDecodeError:
        raise BatchFileError(
            "not_utf8", "the file is not UTF-8 text (save it as UTF-8; a BOM is fine)"
        ) from None


class _Bounded(io.RawIOBase):
    """A binary stream that refuses to be read past AIJOBS_BATCH_MAX_BYTES."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream
        self._left = settings.AIJOBS_BATCH_MAX_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # One byte more than is allowed tells "exactly at the limit" from "over it".
        chunk = self._stream.read(min(len(buffer), self._left + 1))
        self._left -= len(chunk)
        if self._left < 0:
            raise too_large()
        buffer[: len(chunk)] = chunk
        return len(chunk)


def too_large() -> BatchFileError:
    limit = settings.AIJOBS_BATCH_MAX_BYTES
    return BatchFileError(
        "too_large", f"a batch may have at most {limit} bytes (AIJOBS_BATCH_MAX_BYTES)", status=413
    )


def _csv_items(text: IO[str], text_column: str, id_column: str | None) -> Iterator[BatchItem]:
    reader = csv.reader(text, strict=True)
    header = _header(reader)
    text_at = _column_index(header, text_column, "no_text_column")
    id_at = None if id_column is None else _column_index(header, id_column, "no_id_column")
    while True:
        line = reader.line_num + 1  # where the next record starts; a quoted field may span lines
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BatchFileError("bad_csv", f"line {line}: {exc}") from None
        if not row:
            continue
        if len(row) != len(header):
            raise BatchFileError(
                "ragged_row", f"line {line} has {len(row)} fields; the header has {len(header)}"
            )
        custom_id = row[id_at] if id_at is not None and row[id_at] else None
        yield BatchItem(number=line, custom_id=custom_id, input={"text": row[text_at]})


def _header(reader: Any) -> list[str]:
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise BatchFileError("empty_file", "the file is empty") from None
    except csv.Error as exc:
        raise BatchFileError("bad_csv", f"line 1: {exc}") from None
    if not any(header):
        raise BatchFileError("no_header", "line 1 must be a header row naming the columns")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BatchFileError(
            "no_header", f"the header row names these columns more than once: {', '.join(repeated)}"
        )
    return header


def _column_index(header: list[str], name: str, code: str) -> int:
    if name in header:
        return header.index(name)
    shown = ", ".join(header[:MAX_COLUMNS_NAMED]) + (
        ", ..." if len(header) > MAX_COLUMNS_NAMED else ""
    )
    raise BatchFileError(
        code, f'the header row has no column "{name}" (its columns: {shown}); is line 1 a header?'
    )


def _jsonl_items(text: IO[str], text_column: str, id_column: str | None) -> Iterator[BatchItem]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchFileError("bad_json_line", f"line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise BatchFileError("bad_json_line", f"line {number} is not a JSON object")
        yield _record_item(number, record, text_column, id_column)


def _record_item(
    number: int, record: dict[str, Any], text_column: str, id_column: str | None
) -> BatchItem:
    if "input" in record:
        if not isinstance(record["input"], dict):
            raise BatchFileError("bad_json_line", f'line {number}: "input" must be an object')
        return BatchItem(number=number, custom_id=record.get("custom_id"), input=record["input"])
    item_input = {"text": record[text_column]} if text_column in record else {}
    custom_id = record.get(id_column) if id_column else None
    return BatchItem(number=number, custom_id=custom_id, input=item_input)


# --- results -------------------------------------------------------------------------------


def result_columns(kind: str, params: dict[str, Any]) -> dict[str, Getter]:
    """The CSV columns a batch's results take, each with how to read it from a result.

    A kind module may shape them with `result_columns(params)` (classify gives a column per
    label, extract one per top-level field of the schema); otherwise each field of its Output
    is a column.
    """
    module = kinds.get_kind(kind)
    own = getattr(module, "result_columns", None)
    if own is not None:
        return own(params)
    return {name: itemgetter(name) for name in module.Output.model_fields}


def results_csv(kind: str, params: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The result rows as CSV text, header first, one line at a time."""
    columns = result_columns(kind, params)
    header = ["custom_id", "job_id", "status", *columns, "error_code", "error_message"]
    line = _CsvLine()
    yield line.of([*header, *TOKEN_FIELDS])
    for row in rows:
        result = row["result"]
        cells = [_cell(_read(getter, result)) for getter in columns.values()]
        usage = [row[name] for name in TOKEN_FIELDS]
        leading = [row["custom_id"], row["job_id"], row["status"]]
        texts = [*leading, *cells, row["error_code"], row["error_message"]]
        yield line.of([*map(_inert, texts), *usage])


def results_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, default=str) + "\n"


class _CsvLine:
    """One CSV line at a time from csv.writer, for a response that streams them."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def of(self, cells: list[Any]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        return self._buffer.getvalue()


def _read(getter: Getter, result: dict[str, Any] | None) -> Any:
    """The column's value, or None for an item without a result (or a result without it)."""
    if result is None:
        return None
    try:
        return getter(result)
    except (KeyError, TypeError):
        return None


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's "CSV
# injection"); model output and item ids are user-influenced text, so such a cell is
# written with a leading apostrophe, which spreadsheets show as plain text. A sign before
# nothing but digits and punctuation (a phone number, a negative amount) can only be
# arithmetic, never a function or a cell reference, and is left as written. JSONL is untouched.
_FORMULA_STARTS = ("=", "@", "\t", "\r")
_SIGNS = ("+", "-")
_ARITHMETIC = re.compile(r"[0-9 .,()+\-/]*")


def _inert(value: Any) -> Any:
    """Text a spreadsheet would evaluate as a formula, made plain text; anything else unchanged."""
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_STARTS) or (
        value.startswith(_SIGNS) and not _ARITHMETIC.fullmatch(value)
    ):
        return "'" + value
    return value


def _cell(value: Any) -> Any:
    """A value as a spreadsheet reads it: lists of words joined, anything nested as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "; ".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value
