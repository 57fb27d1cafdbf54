"""UCI Adult ("census income") data set: read, load (bundled copy) and download.

The files are the official UCI split (``adult.data`` for training, ``adult.test``
for evaluation) used by the census example of the Wide & Deep reference code.
Their quirks are handled here, vectorised (no Python loop per row):

- fields are separated by ``", "``; whitespace around every field is stripped;
- ``adult.test`` starts with a ``|1x3 Cross validator`` line (any line starting
  with ``|`` is skipped);
- ``adult.test`` labels end in ``"."`` (``">50K."`` is read as ``">50K"``);
- blank lines are ignored; ``?`` is read as null.

The bundled copies (``data/adult.data.gz``, ``data/adult.test.gz``) are the
original files, gzip-compressed; see ``data/ADULT_LICENSE.md`` (CC BY 4.0).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..badrows import (
    BAD_LABEL,
    NOT_A_NUMBER,
    NOT_FINITE,
    NOT_UTF8,
    WRONG_FIELDS,
    BadRows,
    as_text,
    shorten,
    utf8_problems,
)
from ..transform import DataError

__all__ = [
    "CSV_COLUMNS",
    "INT_COLUMNS",
    "LABEL_COLUMN",
    "POSITIVE_LABEL",
    "SHA256",
    "TEST_FILE",
    "TRAIN_FILE",
    "UCI_BASE_URL",
    "census_labels",
    "download_census",
    "load_census",
    "read_census",
]

CSV_COLUMNS: list[str] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "gender",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income_bracket",
]
INT_COLUMNS: tuple[str, ...] = (
    "age",
    "fnlwgt",
    "education_num",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
)
LABEL_COLUMN = "income_bracket"
POSITIVE_LABEL = ">50K"
CLASSES = ("<=50K", POSITIVE_LABEL)

TRAIN_FILE = "adult.data"
TEST_FILE = "adult.test"
UCI_BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"

# SHA-256 of the official UCI files (uncompressed).
SHA256: dict[str, str] = {
    TRAIN_FILE: "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    TEST_FILE: "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}

_SCHEMA = pa.schema([(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in CSV_COLUMNS])
_INT_INDICES = frozenset(CSV_COLUMNS.index(c) for c in INT_COLUMNS)
_GZIP_MAGIC = b"\x1f\x8b"

_INT_PATTERN = re.compile(rb"[+-]?[0-9]+")

_FIX_HINT = (
    "Fix or delete that line, or use the bundled copy (load_census() without data_dir) "
    "or re-download the official file (download_census / --download)."
)


def _decompress(raw: bytes) -> bytes:
    return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw


def _blank_comment_lines(text: bytes) -> bytes:
    """Empty every line starting with ``|`` but keep its line break, so line numbers hold.

    Cost is one ``find`` per comment line (adult.test has one), not per row.
    """
    starts = [0] if text.startswith(b"|") else []
    pos = text.find(b"\n|")
    while pos != -1:
        starts.append(pos + 1)
        pos = text.find(b"\n|", pos + 1)
    if not starts:
        return text
    parts, prev = [], 0
    for start in starts:
        end = text.find(b"\n", start)
        end = len(text) if end == -1 else end
        if end > start and text[end - 1 : end] == b"\r":
            end -= 1
        parts.append(text[prev:start])
        prev = end
    parts.append(text[prev:])
    return b"".join(parts)


def _find_bad_line(text: bytes) -> tuple[int, str, str] | None:
    """Locate the first malformed line (error path only). Returns (lineno, line, why)."""
    ncols = len(CSV_COLUMNS)
    classes = {c.encode() for c in CLASSES}
    for lineno, line in enumerate(text.split(b"\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(b"|"):
            continue
        fields = [f.strip() for f in stripped.split(b",")]
        shown = line.rstrip(b"\r").decode("utf-8", errors="replace")
        if len(fields) != ncols:
            return lineno, shown, f"expected {ncols} fields, got {len(fields)}"
        for i in sorted(_INT_INDICES):
            value = fields[i]
            if value == b"?":
                return lineno, shown, f"column {CSV_COLUMNS[i]!r} is missing"
            if not _INT_PATTERN.fullmatch(value):
                bad = value.decode("utf-8", errors="replace")
                return lineno, shown, f"column {CSV_COLUMNS[i]!r} is not an integer: {bad!r}"
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return lineno, shown, f"invalid UTF-8 ({e.reason})"
        if fields[-1].rstrip(b".") not in classes:
            label = fields[-1].decode("utf-8", errors="replace")
            return lineno, shown, f"label {label!r} is not one of {list(CLASSES)}"
    return None


def _malformed(name: str, text: bytes, err: Exception | None) -> DataError:
    bad = _find_bad_line(text)
    if bad is None:
        return DataError(
            f"{name}: cannot read census file ({err}). Check that it is a UCI Adult file, "
            "or use the bundled copy (load_census() without data_dir) or re-download the "
            "official file (download_census / --download)."
        )
    lineno, line, why = bad
    return DataError(
        f"{name}, line {lineno}: malformed census row ({why}): {shorten(line, 200)!r}. "
        f"{_FIX_HINT} Or skip such rows: --skip_bad_rows (on_bad_rows='skip')."
    )


def _parse(raw: bytes, name: str, bad_rows: BadRows | None = None) -> pa.Table:
    policy = bad_rows if bad_rows is not None else BadRows()
    text = _decompress(raw)

    def on_invalid(row: pacsv.InvalidRow) -> str:  # rows with the wrong number of fields
        if not row.text.strip():
            return "skip"
        if not policy.skip:
            return "error"
        policy.found(WRONG_FIELDS, 1, lambda: f"{name}: {WRONG_FIELDS}: {shorten(row.text)!r}")
        return "skip"

    try:
        # Everything is read as bytes, then checked, trimmed, '?' -> null, and cast:
        # vectorised Arrow kernels, one pass per column.
        table = pacsv.read_csv(
            pa.py_buffer(_blank_comment_lines(text)),
            # single-threaded: a Python handler on Arrow's threads can make a process that
            # exits right after the read abort in C++ (see widedeep.io)
            read_options=pacsv.ReadOptions(column_names=CSV_COLUMNS, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=",",
                quote_char=False,
                ignore_empty_lines=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.binary() for c in CSV_COLUMNS},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise _malformed(name, text, err) from err

    def check(reason: str, bad: np.ndarray) -> pa.Table:
        if not bad.any():
            return table
        if not policy.skip:
            raise _malformed(name, text, None)
        row = int(np.argmax(bad))
        shown = ", ".join(
            "?" if v is None else str(v) for v in table.slice(row, 1).to_pylist()[0].values()
        )
        policy.found(
            reason, int(bad.sum()), lambda: f"{name}: row {row + 1}: {reason}: {shorten(shown)!r}"
        )
        return table.filter(pa.array(~bad))

    table = as_text(check(NOT_UTF8, utf8_problems(table)))
    columns = {}
    for col_name in CSV_COLUMNS:
        col = pc.utf8_trim_whitespace(table.column(col_name))
        columns[col_name] = pc.if_else(pc.equal(col, "?"), pa.scalar(None, pa.string()), col)
    table = pa.table(columns)
    for col_name in INT_COLUMNS:
        col = table.column(col_name)
        ok = pc.match_substring_regex(col, r"^[+-]?[0-9]{1,18}$").fill_null(True)
        table = check(NOT_A_NUMBER, ~ok.to_numpy(zero_copy_only=False))
        table = check(NOT_FINITE, table.column(col_name).is_null().to_numpy(zero_copy_only=False))
    label = pc.utf8_rtrim(table.column(LABEL_COLUMN), characters=".")
    table = table.set_column(CSV_COLUMNS.index(LABEL_COLUMN), LABEL_COLUMN, label)
    known = pc.is_in(label, value_set=pa.array(CLASSES)).fill_null(False)
    table = check(BAD_LABEL, ~known.to_numpy(zero_copy_only=False))
    return table.cast(_SCHEMA)


def read_census(
    path: str | os.PathLike[str], on_bad_rows: str = "error", bad_rows: BadRows | None = None
) -> pa.Table:
    """Read one UCI Adult file (plain or gzip) into an Arrow table.

    Columns are ``CSV_COLUMNS``; ``INT_COLUMNS`` are int64, the others strings;
    ``?`` becomes null and the test file's trailing ``"."`` on labels is removed.
    A malformed row (wrong field count, a non-integer or missing number, bytes
    that are not UTF-8, a label other than ``<=50K`` / ``>50K``) raises
    ``DataError`` (file, line number, line, fix); with ``on_bad_rows="skip"`` (or a
    skipping ``bad_rows``) such rows are dropped and tallied instead.
    """
    path = Path(path)
    return _parse(path.read_bytes(), str(path), bad_rows or BadRows(on_bad_rows))


def census_labels(table: pa.Table) -> np.ndarray:
    """0/1 float32 labels (1 for ``">50K"``) of a table from ``read_census``."""
    positive = pc.equal(table.column(LABEL_COLUMN), POSITIVE_LABEL)
    return positive.to_numpy(zero_copy_only=False).astype(np.float32)


def _find_file(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"census file {name!r} (or {name}.gz) not found in {str(data_dir)!r}. "
        "Run with --download to fetch it from the UCI repository "
        "(download_census(data_dir)), or omit --data_dir to use the copy bundled with widedeep."
    )


def load_census(
    data_dir: str | os.PathLike[str] | None = None,
    on_bad_rows: str = "error",
    bad_rows: BadRows | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(train, test) tables from ``data_dir`` or, if None, from the bundled copy.

    Bad rows stop with file and line, or with ``on_bad_rows="skip"`` are dropped and
    tallied in ``bad_rows`` (see :func:`read_census`).
    """
    policy = bad_rows or BadRows(on_bad_rows)
    if data_dir is None:
        root = resources.files("widedeep.datasets").joinpath("data")
        return tuple(  # type: ignore[return-value]
            _parse(root.joinpath(f"{n}.gz").read_bytes(), f"<bundled {n}.gz>", policy)
            for n in (TRAIN_FILE, TEST_FILE)
        )
    data_dir = Path(data_dir)
    train_path = _find_file(data_dir, TRAIN_FILE)
    test_path = _find_file(data_dir, TEST_FILE)
    return read_census(train_path, bad_rows=policy), read_census(test_path, bad_rows=policy)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_census(
    data_dir: str | os.PathLike[str], base_url: str = UCI_BASE_URL, timeout: float = 60
) -> None:
    """Download ``adult.data`` and ``adult.test`` into ``data_dir``, checking SHA-256.

    Each file is written to a temporary file in ``data_dir`` and renamed into
    place only once its digest matches ``SHA256``; a mismatch removes the
    temporary file and raises ``ValueError``. Files already present with the
    right digest are not downloaded again.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name in (TRAIN_FILE, TEST_FILE):
        expected = SHA256[name]
        target = data_dir / name
        if target.is_file() and _sha256_of(target) == expected:
            continue
        url = base + name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=data_dir)
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    h.update(chunk)
                    out.write(chunk)
            actual = h.hexdigest()
            if actual != expected:
                raise ValueError(
                    f"checksum mismatch for {name} downloaded from {url}: "
                    f"expected SHA-256 {expected}, got {actual}; the file was not saved."
                )
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


def build_model_columns() -> tuple[list, list]:
    """The wide and deep columns of TensorFlow's census example, declared as it did but for
    one change: the deep part's numerics are standardised (``normalizer="standard"``).

    Why: fed raw, capital_gain (up to 99,999) puts first-layer pre-activations in the
    thousands, so one AdaGrad step of 0.001 on its weight moves them by ~100; ReLUs die and
    evaluations dip (AUC 0.838 at epoch 34 with seed 0).  Standardising is an affine
    reparametrisation of the first layer's input, so the model can express exactly the same
    functions; it only makes the optimisation well-conditioned.  The wide part's age buckets
    still cut the raw age.
    """
    from .. import feature_column as fc

    age = fc.numeric_column("age")

    def deep_numeric(key: str) -> fc.NumericColumn:
        return fc.numeric_column(key, normalizer="standard")

    education = fc.categorical_column_with_vocabulary_list(
        "education",
        [
            "Bachelors",
            "HS-grad",
            "11th",
            "Masters",
            "9th",
            "Some-college",
            "Assoc-acdm",
            "Assoc-voc",
            "7th-8th",
            "Doctorate",
            "Prof-school",
            "5th-6th",
            "10th",
            "1st-4th",
            "Preschool",
            "12th",
        ],
    )
    marital_status = fc.categorical_column_with_vocabulary_list(
        "marital_status",
        [
            "Married-civ-spouse",
            "Divorced",
            "Married-spouse-absent",
            "Never-married",
            "Separated",
            "Married-AF-spouse",
            "Widowed",
        ],
    )
    relationship = fc.categorical_column_with_vocabulary_list(
        "relationship",
        ["Husband", "Not-in-family", "Wife", "Own-child", "Unmarried", "Other-relative"],
    )
    workclass = fc.categorical_column_with_vocabulary_list(
        "workclass",
        [
            "Self-emp-not-inc",
            "Private",
            "State-gov",
            "Federal-gov",
            "Local-gov",
            "?",
            "Self-emp-inc",
            "Without-pay",
            "Never-worked",
        ],
    )
    occupation = fc.categorical_column_with_hash_bucket("occupation", hash_bucket_size=1000)
    age_buckets = fc.bucketized_column(age, boundaries=[18, 25, 30, 35, 40, 45, 50, 55, 60, 65])

    base_columns = [education, marital_status, relationship, workclass, occupation, age_buckets]
    crossed_columns = [
        fc.crossed_column(["education", "occupation"], hash_bucket_size=1000),
        fc.crossed_column([age_buckets, "education", "occupation"], hash_bucket_size=1000),
    ]
    wide_columns = base_columns + crossed_columns
    deep_columns = [
        deep_numeric("age"),
        deep_numeric("education_num"),
        deep_numeric("capital_gain"),
        deep_numeric("capital_loss"),
        deep_numeric("hours_per_week"),
        fc.indicator_column(workclass),
        fc.indicator_column(education),
        fc.indicator_column(marital_status),
        fc.indicator_column(relationship),
        fc.embedding_column(occupation, dimension=8),
    ]
    return wide_columns, deep_columns


def census_spec():
    """The reference FeatureSpec: the example's columns and the income label."""
    from ..transform import FeatureSpec, Label

    wide, deep = build_model_columns()
    return FeatureSpec(wide, deep, label=Label(LABEL_COLUMN, "binary", ("<=50K", POSITIVE_LABEL)))
