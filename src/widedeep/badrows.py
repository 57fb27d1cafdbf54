"""The bad-row policy: find the rows a spec cannot encode, then stop at the first or skip them.

Real files have a malformed line now and then.  By default the first bad row
stops everything with ``file:line``, the offending text and the fix; with
``on_bad_rows="skip"`` (``--skip_bad_rows``) bad rows are dropped and counted
per reason, and ``max_bad_rows`` aborts once more than that many were seen.

Finding bad rows is vectorised: one mask per column, computed with Arrow and
NumPy the way the encoder (:mod:`widedeep.transform`) reads the values, so
that every row that survives encodes without error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import feature_column as fc
from .columnar import DataError, _column, _is_number_type, _strings
from .transform import FeatureSpec

POLICIES = ("error", "skip")
TEXT_LIMIT = 120

# Reasons a row is dropped (the keys of the tally).
WRONG_FIELDS = "wrong number of fields"
NOT_UTF8 = "not valid UTF-8"
NOT_A_NUMBER = "not a number"
NOT_FINITE = "missing, NaN or infinite number"
NOT_AN_INTEGER = "not an integer"
BAD_LABEL = "label not one of the declared classes"
LABEL_OUT_OF_RANGE = "label outside the declared output_range"
MISSING_LABEL = "missing label"
BAD_WEIGHT = "missing or invalid weight"

_FIXES = {
    WRONG_FIELDS: "fix or delete that line",
    NOT_UTF8: "set the file's encoding with --encoding (encoding= in Python), e.g. latin-1",
    NOT_A_NUMBER: "fix the value, or declare the column as categorical",
    NOT_FINITE: "fix the value, or give numeric_column(..., default_value=...)",
    NOT_AN_INTEGER: "identity columns take whole numbers; fix the value",
    BAD_LABEL: "fix the label, or declare the label's classes to include it",
    LABEL_OUT_OF_RANGE: "fix the label, or widen the label's output_range",
    MISSING_LABEL: "fix the label, or drop the row",
    BAD_WEIGHT: "give every row a finite numeric weight",
}

# What Arrow's string -> float64 cast accepts (checked before casting, so that one bad value
# does not hide which rows are good).
_FLOAT_PATTERN = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$"


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[:limit] + "..."


class BadRows:
    """What to do with bad rows (``on_bad_rows``, ``max_bad_rows``) and the tally of skipped ones.

    ``max_bad_rows`` alone implies skipping up to that many.  Pass one instance to
    every reader of a run to get one tally (``counts`` per reason, ``to_dict()``).
    """

    def __init__(self, on_bad_rows: str = "error", max_bad_rows: int | None = None) -> None:
        if on_bad_rows not in POLICIES:
            raise ValueError(f"on_bad_rows must be one of {POLICIES}, got {on_bad_rows!r}")
        if max_bad_rows is not None and max_bad_rows < 0:
            raise ValueError(f"max_bad_rows must be >= 0, got {max_bad_rows}")
        self.on_bad_rows = "skip" if max_bad_rows is not None else on_bad_rows
        self.max_bad_rows = max_bad_rows
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.ignored_columns: list[str] = []

    @property
    def skip(self) -> bool:
        return self.on_bad_rows == "skip"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def found(self, reason: str, count: int, where: Callable[[], str]) -> None:
        """Record ``count`` bad rows; ``where()`` describes the first (file:line: problem: text)."""
        if count == 0:
            return
        if not self.skip:
            raise DataError(
                f"{where()}. To fix: {_FIXES.get(reason, 'fix the data')}; or pass "
                "--skip_bad_rows (on_bad_rows='skip') to skip such rows"
            )
        self.counts[reason] = self.counts.get(reason, 0) + count
        if reason not in self.examples:
            self.examples[reason] = where()
        if self.max_bad_rows is not None and self.total > self.max_bad_rows:
            raise DataError(
                f"more than --max_bad_rows {self.max_bad_rows} bad rows ({self.summary()}); "
                f"the first: {self.examples[reason]}. Fix the data or raise the limit"
            )

    def ignore_columns(self, names: list[str]) -> None:
        self.ignored_columns += [n for n in names if n not in self.ignored_columns]

    def summary(self) -> str:
        """One line: how many rows were skipped, per reason."""
        if not self.counts:
            return "no bad rows"
        parts = ", ".join(f"{n:,} {reason}" for reason, n in self.counts.items())
        return f"skipped {self.total:,} bad row(s): {parts}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able tally (the ``bad_rows`` field of metrics.jsonl)."""
        return {
            "skipped": self.total,
            "by_reason": dict(self.counts),
            "first": dict(self.examples),
            "ignored_columns": list(self.ignored_columns),
        }

    def __repr__(self) -> str:
        return f"BadRows({self.on_bad_rows!r}, max_bad_rows={self.max_bad_rows}): {self.summary()}"


# --------------------------------------------------------------------------- masks


def utf8_problems(table: pa.Table) -> np.ndarray:
    """Rows holding bytes that are not UTF-8 text (Arrow reads such CSV columns as binary)."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for name in table.column_names:
        arr = _column(table, name)
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            try:
                pc.cast(arr, pa.string())  # validates in one pass; the common case
            except pa.ArrowInvalid:
                bad |= _per_distinct(arr, _is_utf8)
    return bad


def as_text(table: pa.Table) -> pa.Table:
    """Binary columns (all of whose values are UTF-8 now) as strings."""
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            table = table.set_column(i, name, pc.cast(col, pa.string()))
    return table


def problems(
    spec: FeatureSpec, table: pa.Table, label: bool = True
) -> list[tuple[str, str, np.ndarray]]:
    """(reason, column, row mask) for every kind of row ``spec.transform`` would refuse.

    Only the columns present are checked (a missing column is an error for the whole
    table, raised by the encoder).  Categorical values never make a row bad.
    """
    out: list[tuple[str, str, np.ndarray]] = []
    present = set(table.column_names)
    seen: set[tuple[str, Any]] = set()
    for column in spec.columns:
        if isinstance(column, fc.NumericColumn) and column.key in present:
            if (column.key, column.default_value) in seen:
                continue
            seen.add((column.key, column.default_value))
            unparsable, values, rows = _numbers(_column(table, column.key))
            out.append((NOT_A_NUMBER, column.key, _any_per_row(unparsable, rows)))
            if column.default_value is None:
                with np.errstate(over="ignore"):  # as the encoder checks: float32 range
                    finite = np.isfinite(values.astype(np.float32))
                out.append((NOT_FINITE, column.key, _any_per_row(~finite, rows)))
        elif isinstance(column, fc.IdentityColumn) and column.key in present:
            unparsable, values, rows = _numbers(_column(table, column.key))
            fractional = np.isfinite(values) & (values != np.floor(np.nan_to_num(values)))
            out.append((NOT_A_NUMBER, column.key, _any_per_row(unparsable, rows)))
            out.append((NOT_AN_INTEGER, column.key, _any_per_row(fractional, rows)))
        elif isinstance(column, fc.WeightedCategoricalColumn):
            key = column.weight_feature_key
            if key in present:
                unparsable, values, rows = _numbers(_column(table, key))
                out.append((BAD_WEIGHT, key, _any_per_row(unparsable | np.isnan(values), rows)))
    if label and spec.label is not None and spec.label.key in present:
        out += _label_problems(spec, _column(table, spec.label.key))
        w = spec.weight_column
        if w and w in present:
            unparsable, values, rows = _numbers(_column(table, w))
            out.append((BAD_WEIGHT, w, _any_per_row(unparsable | ~np.isfinite(values), rows)))
    return [(reason, key, mask) for reason, key, mask in out if mask.any()]


def _label_problems(spec: FeatureSpec, arr: pa.Array) -> list[tuple[str, str, np.ndarray]]:
    key, head = spec.label.key, spec.label.head
    missing = arr.is_null().to_numpy(zero_copy_only=False)
    if head == "regression" or (head == "binary" and spec.label.classes is None):
        unparsable, values, _ = _numbers(arr)
        missing = missing | (np.isnan(values) & ~unparsable)
        bad = unparsable | ~np.isfinite(values) & ~missing
        if head == "binary":
            bad = bad | (np.isfinite(values) & ~np.isin(values, (0.0, 1.0)))
        problems = [(MISSING_LABEL, key, missing), (BAD_LABEL, key, bad)]
        if spec.label.output_range is not None:
            lo, hi = spec.label.output_range
            with np.errstate(invalid="ignore"):  # NaN: already missing or bad
                outside = (values < lo) | (values > hi)
            problems.append((LABEL_OUT_OF_RANGE, key, outside))
        return problems
    classes = spec.label.classes
    if classes is None and spec.is_fitted:
        classes = spec.classes_
    try:
        text = _strings(arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"label column {key!r}: values are not class names ({e})") from None
    missing = text.is_null().to_numpy(zero_copy_only=False)
    if classes is None:  # classes learned from these rows by fit
        return [(MISSING_LABEL, key, missing)]
    known = pc.is_in(text, value_set=pa.array(list(classes), pa.string()))
    bad = ~known.fill_null(True).to_numpy(zero_copy_only=False)
    return [(MISSING_LABEL, key, missing), (BAD_LABEL, key, bad)]


def _numbers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(unparsable mask, float64 values with NaN for null/unparsable, list offsets) per value."""
    offsets = None
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = np.asarray(arr.offsets, dtype=np.int64) - int(arr.offsets[0].as_py())
        arr = arr.flatten()
    elif pa.types.is_fixed_size_list(arr.type):
        k = arr.type.list_size
        offsets = np.arange(0, len(arr) * k + 1, k)
        arr = arr.flatten()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    unparsable = np.zeros(len(arr), dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), None, arr)
        ok = pc.match_substring_regex(arr, _FLOAT_PATTERN, ignore_case=True).fill_null(True)
        unparsable = ~ok.to_numpy(zero_copy_only=False)
        arr = pc.if_else(ok, arr, None)
    if not _is_number_type(arr.type):
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            unparsable = np.ones(len(arr), dtype=bool)  # e.g. nested values: no number at all
            arr = pa.nulls(len(arr), pa.float64())
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    return unparsable, values, offsets


def _any_per_row(mask: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    if offsets is None:
        return mask
    csum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    return (csum[offsets[1:]] - csum[offsets[:-1]]) > 0


def _per_distinct(arr: pa.Array, ok: Callable[[Any], bool]) -> np.ndarray:
    """Rows whose value fails ``ok``, calling it once per distinct value (not per row)."""
    encoded = pc.dictionary_encode(arr)
    good = np.array([ok(v) for v in encoded.dictionary.to_pylist()] + [True], dtype=bool)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return ~good[codes]


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- the policy


def drop_bad_rows(
    spec: FeatureSpec,
    table: pa.Table,
    bad_rows: BadRows | None = None,
    *,
    label: bool = True,
    where: Callable[[int], tuple[str, str | None]] | None = None,
) -> pa.Table:
    """``table`` without the rows ``spec`` cannot encode, under ``bad_rows``'s policy.

    ``where(row)`` names a row for messages: (``file:line``, its text or None); by
    default ``("row N", None)``.
    Columns the spec does not read are left in place and listed in
    ``bad_rows.ignored_columns``.
    """
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    where = where or (lambda row: (f"row {row}", None))
    used = set(spec.input_keys)
    if label and spec.label is not None:
        used |= {spec.label.key} | ({spec.weight_column} if spec.weight_column else set())
    bad_rows.ignore_columns([c for c in table.column_names if c not in used])

    binary = utf8_problems(table)
    rows = np.flatnonzero(~binary)  # original row of each row of ``text``
    text = as_text(table.filter(pa.array(~binary)) if binary.any() else table)
    found = [(NOT_UTF8, None, binary, table, where)] if binary.any() else []
    drop = np.zeros(text.num_rows, dtype=bool)
    for reason, key, mask in problems(spec, text, label=label):
        mask = mask & ~drop  # count each row once, under its first reason
        if mask.any():
            found.append((reason, key, mask, text, lambda r: where(int(rows[r]))))
            drop |= mask
    if not bad_rows.skip:  # stop at the first bad row of the file, whatever its reason
        found.sort(key=lambda f: np.argmax(f[2]) if f[0] == NOT_UTF8 else rows[np.argmax(f[2])])
    for reason, key, mask, rows_of, name in found:
        _report(bad_rows, reason, key, mask, rows_of, name)
    return text.filter(pa.array(~drop)) if drop.any() else text


def _report(
    bad_rows: BadRows,
    reason: str,
    key: str | None,
    mask: np.ndarray,
    table: pa.Table,
    where: Callable[[int], tuple[str, str | None]],
) -> None:
    row = int(np.argmax(mask))

    def describe() -> str:
        location, text = where(row)
        what = reason
        if key is not None:
            value = shorten(repr(table.column(key)[row].as_py()), 60)
            what = f"column {key!r}: {reason} ({value})"
        return f"{location}: {what}" + ("" if text is None else f" in {shorten(text)!r}")

    bad_rows.found(reason, int(mask.sum()), describe)
