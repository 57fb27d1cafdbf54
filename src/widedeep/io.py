"""Rows from and to files: CSV (optionally gzipped), Parquet and JSON lines, as Arrow tables.

Given a spec, ``read_table`` also applies the bad-row policy (:mod:`widedeep.badrows`):
by default the first bad row stops with ``file:line``, its text and the fix;
``on_bad_rows="skip"`` drops bad rows and counts them per reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .badrows import WRONG_FIELDS, BadRows, drop_bad_rows, shorten
from .transform import DataError, FeatureSpec

CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".data", ".test")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def file_format(path: str | Path) -> str:
    """'csv', 'parquet' or 'jsonl' from the file name (a trailing .gz is looked through)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise DataError(
        f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl (optionally .gz)"
    )


def read_table(
    path: str | Path,
    column_names: list[str] | None = None,
    delimiter: str | None = None,
    *,
    encoding: str = "utf-8",
    spec: FeatureSpec | None = None,
    label: bool = True,
    on_bad_rows: str = "error",
    max_bad_rows: int | None = None,
    bad_rows: BadRows | None = None,
) -> pa.Table:
    """Read a whole file as a Table; with ``spec``, keep only rows it can encode.

    A CSV has a header row unless ``column_names`` is given (then every row is data).
    Bad rows (wrong number of fields; with ``spec``: unparsable or non-finite
    numbers, unknown labels...) stop with ``file:line`` by default; with
    ``on_bad_rows="skip"`` they are dropped and tallied in ``bad_rows`` (pass a
    :class:`BadRows` to read the tally; it then sets the policy).  An empty file,
    or one without data rows, is an error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; check the path")
    policy = bad_rows if bad_rows is not None else BadRows(on_bad_rows, max_bad_rows)
    kind = file_format(path)
    if kind == "csv":
        if delimiter is None:
            delimiter = "\t" if ".tsv" in path.name.lower() else ","
        table = _read_csv(path, column_names, delimiter, encoding, policy)
        lines = _Lines(path, delimiter, encoding, header=column_names is None)
        where = lines.describe
    else:
        try:
            table = pq.read_table(path) if kind == "parquet" else pajson.read_json(path)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read it as {kind}: {e}") from None
        where = lambda row: (f"{path}: row {row + 1}", None)  # noqa: E731
    try:
        names = table.column_names
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: the header is not valid UTF-8 text; set the file's encoding with "
            "--encoding (encoding= in Python), e.g. latin-1"
        ) from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: column(s) {twice} appear more than once; rename them")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows (only a header); give a file with data")
    if spec is not None:
        table = drop_bad_rows(spec, table, policy, label=label, where=where)
        if table.num_rows == 0:
            raise DataError(f"{path}: every row is bad ({policy.summary()}); check the file")
    return table


def _read_csv(
    path: Path, column_names: list[str] | None, delimiter: str, encoding: str, policy: BadRows
) -> pa.Table:
    def on_invalid(row: pacsv.InvalidRow) -> str:  # skip mode only
        policy.found(
            WRONG_FIELDS, 1, lambda: _wrong_fields(path, delimiter, encoding, column_names)
        )
        return "skip"

    # A Python handler runs on Arrow's threads, and a process exiting just after such a read
    # can abort in C++ ("terminate called without an active exception"): so the handler
    # is passed only when skipping, and then the read is single-threaded.
    try:
        with _quiet_undecodable_rows():
            return pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(
                    column_names=column_names, encoding=encoding, use_threads=not policy.skip
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, invalid_row_handler=on_invalid if policy.skip else None
                ),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; give a Python codec name") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid {encoding} text ({e.reason} at byte {e.start}); set the file's "
            "encoding with --encoding (encoding= in Python), e.g. latin-1"
        ) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        if "Expected" in str(e) and "columns, got" in str(e):
            if policy.skip:  # Arrow could not decode the row to hand it over to be skipped
                where = _wrong_fields(path, delimiter, encoding, column_names)
                raise DataError(
                    f"{where}; the line is not valid {encoding} text either: set the file's "
                    "encoding with --encoding (encoding= in Python), e.g. latin-1, or fix it"
                ) from None
            policy.found(
                WRONG_FIELDS, 1, lambda: _wrong_fields(path, delimiter, encoding, column_names)
            )
        if "Empty CSV file" in str(e):
            raise DataError(f"{path} is empty; give a file with a header and data rows") from None
        raise DataError(f"{path}: cannot read it as CSV: {e}") from None


@contextmanager
def _quiet_undecodable_rows() -> Iterator[None]:
    """Arrow cannot hand a row that is not UTF-8 to the handler: it prints the decoding
    error and fails the read, which we then report in one line; keep stderr clean."""
    previous = sys.unraisablehook

    def hook(info: Any) -> None:
        if not isinstance(info.exc_value, UnicodeDecodeError):
            previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _wrong_fields(path: Path, delimiter: str, encoding: str, column_names: list[str] | None) -> str:
    """``file:line: wrong number of fields (expected n, got m): text`` of the first such line."""
    lines = _Lines(path, delimiter, encoding, header=False)
    records = lines.records()
    first = next(records, None)
    if first is None:
        return f"{path}: {WRONG_FIELDS}"
    expected = len(column_names) if column_names else len(first[1])
    for line, fields in [first, *records] if column_names else records:
        if len(fields) != expected:
            return (
                f"{path}:{line}: {WRONG_FIELDS} (expected {expected}, got {len(fields)}): "
                f"{shorten(delimiter.join(fields))!r}"
            )
    return f"{path}: {WRONG_FIELDS}"


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write a Table as CSV, Parquet or JSON lines, chosen by the file name."""
    path = Path(path)
    kind = file_format(path)
    if path.name.lower().endswith(".gz"):
        raise DataError(f"{path}: cannot write compressed files; drop the .gz")
    if kind == "parquet":
        pq.write_table(table, path)
    elif kind == "jsonl":
        with open(path, "w") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row) + "\n")
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter=delimiter))


class _Lines:
    """Line numbers and text of a CSV file's records, found by re-reading it (error path only).

    Arrow's reader does not tell which line a row came from; Python's ``csv`` module
    parses the same dialect and counts physical lines, so rows map back to ``file:line``.
    Reading stops at the row asked for.
    """

    def __init__(self, path: Path, delimiter: str, encoding: str, header: bool) -> None:
        self.path, self.delimiter, self.encoding, self.header = path, delimiter, encoding, header

    def records(self) -> Iterator[tuple[int, list[str]]]:
        opener = gzip.open if self.path.name.lower().endswith(".gz") else open
        with opener(self.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding=self.encoding, errors="replace", newline="")
            reader = csv.reader(text, delimiter=self.delimiter)
            start = 1
            for fields in reader:
                if fields:  # Arrow skips empty lines too
                    yield start, fields
                start = reader.line_num + 1

    def describe(self, row: int) -> tuple[str, str | None]:
        """(``file:line``, text) of data row ``row`` (rows of a wrong field count were skipped)."""
        records = self.records()
        try:
            _, header = next(records)
        except StopIteration:
            return f"{self.path}: row {row + 1}", None
        width = len(header)
        if not self.header:
            records = _chain_first((1, header), records)
        seen = -1
        for line, fields in records:
            if len(fields) == width:
                seen += 1
                if seen == row:
                    return f"{self.path}:{line}", self.delimiter.join(fields)
        return f"{self.path}: row {row + 1}", None


def _chain_first(first, rest):
    yield first
    yield from rest
