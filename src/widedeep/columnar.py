"""The vectorised encoder: an Arrow table of raw rows into ids, weights and floats.

Each raw string column is dictionary-encoded once per call; vocabulary
lookups and hashes run over the distinct values only; everything per row is a
NumPy array operation.  Also the column-level fitting helpers (vocabularies,
normaliser statistics) that ``FeatureSpec.fit`` uses.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import feature_column as fc
from .hashing import cross_hash, hash_strings
from .ids import Ids, cartesian, offsets_of

if TYPE_CHECKING:
    from .transform import FeatureSpec


_COMBINATION_TABLE_LIMIT = 1 << 20


class DataError(ValueError):
    """The data does not match the spec (missing column, wrong type, bad value)."""


def _state_key(column: fc.FeatureColumn) -> str:
    """Where a column's fitted state lives in ``state_``; numeric columns on one feature with
    different normalisers (e.g. standard and quantile ``age``) each keep their own."""
    key = f"{fc.to_dict(column)['type']}:{column.name}"
    if isinstance(column, fc.NumericColumn) and column.normalizer == "quantile":
        return f"{key}:quantile{column.num_quantiles}"
    if isinstance(column, fc.NumericColumn) and column.normalizer == "standard":
        return f"{key}:standard"
    return key


# --------------------------------------------------------------------------- encoding


class _Encoder:
    """Encodes one table; caches the per-key work shared by several columns."""

    def __init__(self, spec: FeatureSpec, table: pa.Table) -> None:
        self.spec = spec
        self.table = table
        self.n = table.num_rows
        self._cache: dict[Any, Any] = {}

    def _memo(self, key: Any, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # raw categorical values: distinct values + a code per value
    def source(self, key: str) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
        return self._memo(
            ("source", key), lambda: _dictionary(_column(self.table, key), key, self.n)
        )

    def numeric(self, column: fc.NumericColumn) -> np.ndarray:
        def compute():
            x = _numeric(self.table, column)
            state = self.spec.state_.get(_state_key(column))
            return _normalize(x, column, state)

        return self._memo(column, compute)

    def ids(self, column: fc.CategoricalColumn) -> Ids:
        return self._memo(column, lambda: self._ids(column))

    def _ids(self, column: fc.CategoricalColumn) -> Ids:
        if isinstance(column, fc.BucketizedColumn):
            x = _numeric(self.table, column.source_column)  # raw values: boundaries are raw
            k = column.source_column.dimension
            buckets = np.searchsorted(np.asarray(column.boundaries), x, side="right")
            ids = (buckets + np.arange(k) * (len(column.boundaries) + 1)).reshape(-1)
            return Ids(ids.astype(np.int64), None if k == 1 else np.arange(0, self.n * k + 1, k))
        if isinstance(column, fc.CrossedColumn):
            return self._cross(column)
        if isinstance(column, fc.WeightedCategoricalColumn):
            return self._weighted(column)
        if isinstance(column, fc.IdentityColumn):
            return self._identity(column)
        dictionary, codes, offsets = self.source(column.key)
        per_value = self._lookup(column, dictionary)
        return Ids(per_value[codes], offsets)

    def _lookup(self, column: fc.CategoricalColumn, dictionary: pa.Array) -> np.ndarray:
        """Id for each distinct value (last slot: the null code -1); -1 means no id."""
        missing = _missing_mask(dictionary)
        if isinstance(column, fc.HashBucketColumn):
            hashes = hash_strings(dictionary.to_pylist(), self.spec._hash_cache)
            ids = (hashes % np.uint64(column.hash_bucket_size)).astype(np.int64)
        else:
            if isinstance(column, fc.VocabularyListColumn):
                vocabulary = column.vocabulary_list
            else:
                vocabulary = self.spec.state_[_state_key(column)]["vocabulary"]
            ids = pc.index_in(dictionary, value_set=pa.array(list(vocabulary), pa.string()))
            ids = ids.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            oov = ids < 0
            if column.num_oov_buckets > 0 and oov.any():
                hashes = hash_strings(
                    dictionary.filter(pa.array(oov)).to_pylist(), self.spec._hash_cache
                )
                ids[oov] = len(vocabulary) + (hashes % np.uint64(column.num_oov_buckets)).astype(
                    np.int64
                )
            elif getattr(column, "default_value", -1) >= 0:
                ids[oov] = column.default_value
        ids[missing] = -1
        return np.append(ids, -1)

    def _identity(self, column: fc.IdentityColumn) -> Ids:
        arr = _column(self.table, column.key)
        offsets = None
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            offsets = np.asarray(arr.offsets, dtype=np.int64) - int(arr.offsets[0].as_py())
            arr = arr.flatten()
        values = _to_float(arr, column.key, allow_null=True)
        present = ~np.isnan(values)
        ints = np.where(present, values, -1)
        if (ints != np.floor(ints)).any():
            raise DataError(f"identity column {column.key!r}: values must be integers")
        in_range = present & (ints >= 0) & (ints < column.num_buckets)  # before the cast: inf
        ids = np.where(in_range, ints, -1).astype(np.int64)
        ids[present & ~in_range] = -1 if column.default_value is None else column.default_value
        return Ids(ids, offsets)

    def _weighted(self, column: fc.WeightedCategoricalColumn) -> Ids:
        inner = self.ids(column.categorical_column)
        arr = _column(self.table, column.weight_feature_key)
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            arr = arr.flatten()
        elif pa.types.is_null(arr.type) and inner.offsets is not None:
            arr = pa.array([], pa.float64())  # no weight lists at all, as a list column of nulls
        weights = _to_float(arr, column.weight_feature_key, allow_null=False).astype(np.float32)
        if len(weights) != len(inner.values):
            raise DataError(
                f"weighted column {column.name!r}: {column.weight_feature_key!r} must have one "
                f"weight per value of {column.categorical_column.name!r}"
            )
        return Ids(inner.values, inner.offsets, weights)

    def _cross(self, column: fc.CrossedColumn) -> Ids:
        # each component: ids (codes into ``table``, -1 = none) and the uint64 crossed per code
        parts: list[tuple[Ids, np.ndarray]] = []
        for key in column.keys:
            if isinstance(key, str):
                dictionary, codes, offsets = self.source(key)
                table = hash_strings(dictionary.to_pylist(), self.spec._hash_cache)
                valid = np.append(~_missing_mask(dictionary), False)
                parts.append((Ids(np.where(valid[codes], codes, -1), offsets), table))
            else:
                table = np.arange(self.spec.num_buckets(key), dtype=np.uint64)
                parts.append((self.ids(key), table))
        size = np.uint64(column.hash_bucket_size)
        if all(ids.offsets is None for ids, _ in parts):
            if any(len(table) == 0 for _, table in parts):  # a component missing in every row
                return Ids(np.full(self.n, -1, dtype=np.int64))
            if math.prod(len(table) for _, table in parts) <= _COMBINATION_TABLE_LIMIT:
                # hash every combination of the (few) distinct values once, then look rows up
                grids = np.meshgrid(*[table for _, table in parts], indexing="ij")
                combos = cross_hash([g.reshape(-1) for g in grids], column.hash_key) % size
                code = np.zeros(self.n, dtype=np.int64)
                for ids, table in parts:
                    code *= len(table)
                    code += ids.values
                missing = np.logical_or.reduce([ids.values < 0 for ids, _ in parts])
                code[missing] = 0  # a -1 component makes the code meaningless, maybe out of range
                out = combos.astype(np.int64)[code]
            else:
                missing = np.logical_or.reduce([ids.values < 0 for ids, _ in parts])
                comps = [table[np.maximum(ids.values, 0)] for ids, table in parts]
                out = (cross_hash(comps, column.hash_key) % size).astype(np.int64)
            out[missing] = -1
            return Ids(out)
        # multi-valued: the cartesian product of the components, row by row (vectorised)
        csrs = [(ids.csr(), table) for ids, table in parts]
        acc = Ids(np.arange(len(csrs[0][0].values)), csrs[0][0].offsets)
        picks = [acc.values]
        for ids, _ in csrs[1:]:
            left, right, offsets = cartesian(acc, ids)
            picks = [p[left] for p in picks] + [right]
            acc = Ids(np.arange(offsets[-1]), offsets)
        comps = [table[ids.values][p] for (ids, table), p in zip(csrs, picks)]
        out = (cross_hash(comps, column.hash_key) % size).astype(np.int64)
        return Ids(out, acc.offsets)


def _column(table: pa.Table, key: str) -> pa.Array:
    col = table.column(key)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _strings(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    if pa.types.is_dictionary(arr.type):
        return _strings(arr.dictionary_decode())
    if pa.types.is_floating(arr.type):  # 3.0 -> "3": the same id as the integer 3
        values = arr.to_numpy(zero_copy_only=False)
        if np.isnan(values).any():  # NaN is a missing value, as in pandas
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        whole = (values == np.floor(values)) & (np.abs(values) < 2**63)  # fits in int64
        if np.all(np.isnan(values) | whole):
            arr = pc.cast(arr, pa.int64())
    return pc.cast(arr, pa.string())


def _dictionary(arr: pa.Array, key: str, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
    """(distinct values, code per value with -1 for null, list offsets or None)."""
    offsets = None
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        offsets = offsets - offsets[0]
        if arr.null_count:  # a null list is an empty list
            lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, np.diff(offsets))
            arr = pc.list_flatten(arr)
            offsets = offsets_of(lengths)
        else:
            arr = arr.flatten()
    try:
        encoded = pc.dictionary_encode(_strings(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"column {key!r}: cannot read its values as categories ({e})") from None
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(-1)
    codes = indices.to_numpy(zero_copy_only=False)
    return encoded.dictionary, codes, offsets


def _missing_mask(dictionary: pa.Array) -> np.ndarray:
    """Empty strings are missing values: they get no id."""
    return pc.equal(dictionary, "").fill_null(True).to_numpy(zero_copy_only=False)


def _is_number_type(t: pa.DataType) -> bool:
    """Arrow types that read as numbers without parsing text."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or (pa.types.is_null(t))
    )


def _to_float(arr: pa.Array, key: str, allow_null: bool) -> np.ndarray:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), None, arr)
    if not _is_number_type(arr.type):
        try:
            arr = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad, row = _first_unparsable(arr)
            raise DataError(
                f"column {key!r}: value {bad!r} at row {row} is not a number; fix the data or "
                "declare the column as categorical"
            ) from None
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    if not allow_null and np.isnan(values).any():
        row = int(np.argmax(np.isnan(values)))
        raise DataError(f"column {key!r}: missing value at row {row}")
    return values


def _first_unparsable(arr: pa.Array) -> tuple[str, int]:
    for row, value in enumerate(arr.to_pylist()):  # error path only
        if value is None:
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            return (str(value)[:100], row)
    return ("?", -1)


def _numeric(table: pa.Table, column: fc.NumericColumn, for_fit: bool = False) -> np.ndarray:
    """[rows, dimension] float64 raw values, missing filled by default_value or an error."""
    arr = _column(table, column.key)
    k = column.dimension
    if (
        pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
    ):
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        if (lengths != k).any():
            row = int(np.argmax(lengths != k))
            raise DataError(
                f"numeric column {column.key!r}: row {row} has {lengths[row]} values, expected "
                f"shape {column.shape}"
            )
        arr = pc.list_flatten(arr)
    elif k != 1:
        raise DataError(
            f"numeric column {column.key!r}: expected lists of {k} values (shape {column.shape}), "
            f"got {arr.type}"
        )
    values = _to_float(arr, column.key, allow_null=True).reshape(-1, k)
    with np.errstate(over="ignore"):  # beyond float32 would be inf in the model
        bad = ~np.isfinite(values.astype(np.float32))
    if bad.any():
        if for_fit:
            return values[~bad.any(axis=1)]
        if column.default_value is None:
            row = int(np.argmax(bad.any(axis=1)))
            raise DataError(
                f"numeric column {column.key!r}: missing or non-finite value at row {row}; give "
                "numeric_column(..., default_value=...) or fix the data"
            )
        values = np.where(bad, column.default_value, values)
    return values


def _fit_normalizer(values: np.ndarray, column: fc.NumericColumn) -> dict[str, Any]:
    if len(values) == 0:
        raise DataError(f"numeric column {column.key!r}: no finite values to fit the normalizer on")
    if column.normalizer == "standard":
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
    q = np.arange(1, column.num_quantiles) / column.num_quantiles
    return {"boundaries": np.quantile(values, q, axis=0).T.tolist()}  # [dimension][n_q - 1]


def _normalize(x: np.ndarray, column: fc.NumericColumn, state: dict | None) -> np.ndarray:
    if column.normalizer is None:
        return x
    if column.normalizer == "log":
        return np.sign(x) * np.log1p(np.abs(x))
    if column.normalizer == "standard":
        return (x - np.asarray(state["mean"])) / np.asarray(state["std"])
    out = np.empty_like(x)
    for j, boundaries in enumerate(state["boundaries"]):
        out[:, j] = np.searchsorted(boundaries, x[:, j], side="right") / (column.num_quantiles - 1)
    return out


def _learn_vocabulary(table: pa.Table, column: fc.VocabularyFromDataColumn) -> list[str]:
    dictionary, codes, _ = _dictionary(_column(table, column.key), column.key, table.num_rows)
    counts = np.bincount(codes[codes >= 0], minlength=len(dictionary))
    values = np.asarray(dictionary.to_pylist(), dtype=object)
    keep = (counts >= column.min_count) & ~_missing_mask(dictionary)
    values, counts = values[keep], counts[keep]
    order = sorted(
        range(len(values)), key=lambda i: (-counts[i], values[i])
    )  # distinct values only
    if column.max_size is not None:
        order = order[: column.max_size]
    vocabulary = [str(values[i]) for i in order]
    if not vocabulary:
        raise DataError(
            f"vocabulary column {column.key!r}: no value occurs at least min_count="
            f"{column.min_count} times in the training data; lower min_count"
        )
    return vocabulary
