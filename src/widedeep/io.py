"""Rows from and to files: CSV (optionally gzipped), Parquet and JSON lines, as Arrow tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .transform import DataError

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
) -> pa.Table:
    """Read a whole file as a Table.

    A CSV has a header row unless ``column_names`` is given (then every row is data).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; check the path")
    kind = file_format(path)
    try:
        if kind == "parquet":
            return pq.read_table(path)
        if kind == "jsonl":
            return pajson.read_json(path)
        if delimiter is None:
            delimiter = "\t" if ".tsv" in path.name.lower() else ","
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=column_names),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it as {kind}: {e}") from None


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
