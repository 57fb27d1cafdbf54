"""FeatureSpec: feature columns declared once, fitted to data, saved with the model.

``fit`` learns the data-dependent state (vocabularies, normaliser statistics)
into ``state_``; ``transform`` encodes raw rows into a :class:`Batch`.  The
spec round-trips through JSON, so the model directory carries it and training
and serving cannot drift apart.

Encoding is columnar (Arrow + NumPy): each raw string column is
dictionary-encoded once per call, lookups and hashes run over the distinct
values only, and everything per row is a vectorised array operation.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import feature_column as fc
from .batch import Batch
from .feature_column import FeatureColumnError
from .hashing import cross_hash, cross_hash_one, hash_string, hash_strings
from .ids import Ids, assemble, cartesian, combine, offsets_of

SPEC_FORMAT_VERSION = 1
HEADS = ("binary", "multiclass", "regression")
_COMBINATION_TABLE_LIMIT = 1 << 20


class DataError(ValueError):
    """The data does not match the spec (missing column, wrong type, bad value)."""


@dataclass(frozen=True)
class Label:
    """The target: a binary class (``classes`` = (negative, positive)), classes, or a number.

    A binary label without ``classes`` must hold 0/1 (or true/false) values.
    """

    key: str
    head: str = "binary"
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise FeatureColumnError(
                f"label {self.key!r}: head must be one of {HEADS}, got {self.head!r}"
            )
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
            if self.head == "binary" and len(self.classes) != 2:
                raise FeatureColumnError(
                    f"label {self.key!r}: a binary label declares exactly two classes "
                    f"(negative, positive), got {list(self.classes)}"
                )


# --------------------------------------------------------------------------- input


def as_table(data: Any) -> pa.Table:
    """Any supported input (Arrow, pandas, dict of columns, row dicts, one row dict) as a Table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    try:
        if _is_columns(data):
            return pa.table({k: _as_array(v) for k, v in data.items()})
        if isinstance(data, Mapping):
            return _from_rows([data])  # one row
        if isinstance(data, list) and (not data or isinstance(data[0], Mapping)):
            return _from_rows(data)
        if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
            return pa.Table.from_pandas(data, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as e:
        raise DataError(
            f"cannot read the data as columns: {e}; give every value of a feature one type "
            "(all numbers, all strings, or all lists)"
        ) from None
    raise DataError(
        f"cannot read data of type {type(data).__name__}; pass a pyarrow Table, a pandas "
        "DataFrame, a dict of columns, a list of row dicts or one row dict"
    )


def _is_columns(data: Any) -> bool:
    """A dict of columns (every value array-like), as opposed to one row dict."""
    if not isinstance(data, Mapping):
        return False
    values = list(data.values())
    return bool(values) and all(_is_column(v) for v in values)


def _from_rows(rows: list) -> pa.Table:
    """Row dicts as a table; a key absent from some rows is missing (null) there."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for k in keys:
        try:
            columns[k] = pa.array([row.get(k) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise DataError(
                f"column {k!r}: {e}; give every row's {k!r} the same type (all numbers, all "
                "strings, or all lists)"
            ) from None
    return pa.table(columns)


def _is_column(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray, pa.Array, pa.ChunkedArray)) or (
        type(v).__name__ == "Series"
    )


def _as_array(v: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(v, (pa.Array, pa.ChunkedArray)):
        return v
    if isinstance(v, np.ndarray) and v.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
    return pa.array(v, from_pandas=True)


# --------------------------------------------------------------------------- the spec


class FeatureSpec:
    """Wide and deep feature columns plus the label, fitted to data and saved as JSON.

    ``wide_columns`` are categorical (or numeric: a weight times the value);
    ``deep_columns`` are numeric, indicator or embedding columns.  ``fit``
    learns ``state_``; ``transform`` encodes rows into a :class:`Batch`.
    """

    def __init__(
        self,
        wide_columns: Sequence[fc.FeatureColumn] = (),
        deep_columns: Sequence[fc.FeatureColumn] = (),
        label: Label | str | None = None,
        weight_column: str | None = None,
    ) -> None:
        self.wide_columns = tuple(wide_columns)
        self.deep_columns = tuple(deep_columns)
        self.label = Label(label) if isinstance(label, str) else label
        self.weight_column = weight_column
        self._validate()
        self._hash_cache: dict[str, int] = {}

    def _validate(self) -> None:
        for c in self.wide_columns:
            if not isinstance(c, fc.CATEGORICAL_TYPES + (fc.NumericColumn,)):
                raise FeatureColumnError(
                    f"wide column {c.name!r} is a {type(c).__name__}; the wide (linear) part takes "
                    "categorical, bucketized, crossed or numeric columns"
                )
        for c in self.deep_columns:
            if not isinstance(c, fc.DENSE_TYPES):
                raise FeatureColumnError(
                    f"deep column {c.name!r} is categorical; wrap it in indicator_column(...) or "
                    "embedding_column(...) for the deep part"
                )
        if not self.wide_columns and not self.deep_columns:
            raise FeatureColumnError("a FeatureSpec needs at least one wide or deep column")

    # ----------------------------------------------------------------- properties

    @property
    def columns(self) -> list[fc.FeatureColumn]:
        """Every column of the spec and the columns nested in them, children first."""
        return fc.walk(self.wide_columns + self.deep_columns)

    @property
    def input_keys(self) -> list[str]:
        """The raw features the spec reads (label and weight excluded)."""
        keys = [k for c in self.wide_columns + self.deep_columns for k in fc.input_keys(c)]
        return list(dict.fromkeys(keys))

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "state_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("this FeatureSpec is not fitted yet; call fit(train_data) first")

    def num_buckets(self, column: fc.CategoricalColumn) -> int:
        """How many ids a categorical column produces (known after fit for learned vocabularies)."""
        if isinstance(column, fc.VocabularyListColumn):
            return len(column.vocabulary_list) + column.num_oov_buckets
        if isinstance(column, fc.VocabularyFromDataColumn):
            self._require_fitted()
            return len(self.state_[_state_key(column)]["vocabulary"]) + column.num_oov_buckets
        if isinstance(column, (fc.HashBucketColumn, fc.CrossedColumn)):
            return column.hash_bucket_size
        if isinstance(column, fc.IdentityColumn):
            return column.num_buckets
        if isinstance(column, fc.BucketizedColumn):
            return (len(column.boundaries) + 1) * column.source_column.dimension
        if isinstance(column, fc.WeightedCategoricalColumn):
            return self.num_buckets(column.categorical_column)
        raise TypeError(f"{column!r} is not categorical")

    def wide_sizes(self) -> list[int]:
        """Ids per wide column (a numeric column takes one id per value)."""
        return [
            c.dimension if isinstance(c, fc.NumericColumn) else self.num_buckets(c)
            for c in self.wide_columns
        ]

    @property
    def wide_dim_(self) -> int:
        """Total size of the wide id space (padding id 0 excluded)."""
        return sum(self.wide_sizes())

    @property
    def embedding_shapes_(self) -> list[dict[str, Any]]:
        """Per embedding column: rows (padding excluded), dimension, initializer, max_norm."""
        return [
            {
                "name": c.name,
                "num_embeddings": self.num_buckets(c.categorical_column),
                "dimension": c.dimension,
                "initializer": c.initializer,
                "max_norm": c.max_norm,
            }
            for c in self.deep_columns
            if isinstance(c, fc.EmbeddingColumn)
        ]

    @property
    def dense_dim_(self) -> int:
        """Width of the deep part's dense input (its numeric columns)."""
        return sum(c.dimension for c in self.deep_columns if isinstance(c, fc.NumericColumn))

    @property
    def indicator_dim_(self) -> int:
        """Size of the id space of the deep part's indicator columns (their one-hot width)."""
        return sum(
            self.num_buckets(c.categorical_column)
            for c in self.deep_columns
            if isinstance(c, fc.IndicatorColumn)
        )

    @property
    def n_outputs_(self) -> int:
        if self.label is not None and self.label.head == "multiclass":
            return len(self.classes_)
        return 1

    @property
    def classes_(self) -> tuple[str, ...] | None:
        if self.label is None:
            return None
        if self.label.head == "multiclass" and self.label.classes is None:
            self._require_fitted()
            return tuple(self.state_["label"]["classes"])
        return self.label.classes

    # ----------------------------------------------------------------- fit

    def fit(self, data: Any) -> FeatureSpec:
        """Learn vocabularies, normaliser statistics and label classes from training data."""
        table = as_table(data)
        self._check_keys(table, need_label=self.label is not None)
        state: dict[str, Any] = {}
        for column in self.columns:
            if isinstance(column, fc.VocabularyFromDataColumn):
                state[_state_key(column)] = {"vocabulary": _learn_vocabulary(table, column)}
            elif isinstance(column, fc.NumericColumn) and column.is_fitted_from_data:
                values = _numeric(table, column, for_fit=True)
                state[_state_key(column)] = _fit_normalizer(values, column)
        if (
            self.label is not None
            and self.label.head == "multiclass"
            and self.label.classes is None
        ):
            values = _strings(_column(table, self.label.key)).drop_null()
            state["label"] = {"classes": sorted(pc.unique(values).to_pylist())}
        self.state_ = state
        return self

    def fit_transform(self, data: Any) -> Batch:
        return self.fit(data).transform(data)

    # ----------------------------------------------------------------- transform

    def transform(self, data: Any, *, label: bool | None = None) -> Batch:
        """Encode rows; the label is read when present (``label=True`` requires it).

        A row dict or a short list of them (serving) takes a plain-Python path
        that gives exactly the Batch the columnar path gives.
        """
        self._require_fitted()
        if label is not True:
            rows = _small_rows(data)
            if rows is not None:
                encoder = self._row_encoder()
                try:
                    if len(rows) == 1 and encoder.one is not None:
                        try:
                            return encoder.one(rows[0], label)
                        except _Fallback:
                            pass
                    return encoder.encode(rows, label)
                except _Fallback:
                    pass
        table = as_table(data)
        has_label = self.label is not None and self.label.key in table.column_names
        if label is None:
            label = has_label
        self._check_keys(table, need_label=label)
        n = table.num_rows
        enc = _Encoder(self, table)

        wide_parts = []
        base = 1  # id 0 pads
        for column, size in zip(self.wide_columns, self.wide_sizes()):
            if isinstance(column, fc.NumericColumn):  # one id per value, weighted by the value
                k = column.dimension
                ids = Ids(
                    np.tile(np.arange(k), n),
                    np.arange(0, n * k + 1, k),
                    enc.numeric(column).reshape(-1).astype(np.float32),
                )
            else:
                ids = enc.ids(column)
            wide_parts.append((ids, base))
            base += size
        wide_ids, wide_weights = assemble(wide_parts, n)

        # indicator columns are one-hot in meaning; they travel as ids, and the model's
        # first layer gathers the weight rows that a one-hot product would select
        embed_ids, embed_weights, indicator_parts = [], [], []
        dense = np.empty((n, self.dense_dim_), dtype=np.float32)
        at, base = 0, 1
        for column in self.deep_columns:
            if isinstance(column, fc.EmbeddingColumn):
                ids, weights = combine(enc.ids(column.categorical_column), column.combiner, n)
                embed_ids.append(torch.from_numpy(ids))
                embed_weights.append(None if weights is None else torch.from_numpy(weights))
            elif isinstance(column, fc.IndicatorColumn):
                indicator_parts.append((enc.ids(column.categorical_column), base))
                base += self.num_buckets(column.categorical_column)
            else:
                dense[:, at : at + column.dimension] = enc.numeric(column)
                at += column.dimension
        indicator_ids, indicator_weights = assemble(indicator_parts, n)

        return Batch(
            wide_ids=torch.from_numpy(wide_ids),
            wide_weights=_tensor(wide_weights),
            embed_ids=embed_ids,
            embed_weights=embed_weights,
            indicator_ids=torch.from_numpy(indicator_ids),
            indicator_weights=_tensor(indicator_weights),
            dense=torch.from_numpy(dense),
            label=torch.from_numpy(self._labels(table)) if label else None,
            weight=torch.from_numpy(self._weights(table)) if self.weight_column and label else None,
        )

    def _row_encoder(self) -> _RowEncoder:
        encoder = self.__dict__.get("_rows")
        if encoder is None or encoder.state is not self.state_:  # refitted or reloaded
            encoder = self._rows = _RowEncoder(self)
        return encoder

    def _check_keys(self, table: pa.Table, need_label: bool) -> None:
        present = set(table.column_names)
        needed = self.input_keys
        if need_label:
            needed = needed + [self.label.key]
            if self.weight_column:
                needed.append(self.weight_column)
        missing = [k for k in needed if k not in present]
        if missing:
            readers = {
                k: [c.name for c in self.wide_columns + self.deep_columns if k in fc.input_keys(c)]
                for k in missing
            }
            detail = "; ".join(
                f"{k!r} (read by feature column(s) {readers[k]})" if readers[k] else repr(k)
                for k in missing
            )
            raise DataError(
                f"column(s) missing from the data: {detail}; the data has {sorted(present)}. "
                "Add them to the data or remove the feature columns that read them"
            )

    def _labels(self, table: pa.Table) -> np.ndarray:
        label = self.label
        arr = _column(table, label.key)
        if label.head == "regression":
            return _to_float(arr, label.key, allow_null=False).astype(np.float32)
        classes = self.classes_
        if classes is None:  # binary 0/1
            values = _to_float(arr, label.key, allow_null=False)
            bad = ~np.isin(values, (0.0, 1.0))
            if bad.any():
                raise DataError(
                    f"label column {label.key!r}: value {values[bad][0]!r} at row "
                    f"{int(np.argmax(bad))} is not 0 or 1; declare the two classes, e.g. "
                    "Label(key, classes=['no', 'yes'])"
                )
            return values.astype(np.float32)
        try:
            text = _strings(arr)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(
                f"label column {label.key!r}: values are not class names ({e})"
            ) from None
        ids = pc.index_in(text, value_set=pa.array(list(classes))).to_numpy(zero_copy_only=False)
        bad = np.isnan(ids) if ids.dtype.kind == "f" else np.zeros(len(ids), bool)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"label column {label.key!r}: value {arr[row].as_py()!r} at row {row} is not one "
                f"of the declared classes {list(classes)}; fix the data or the label's classes"
            )
        ids = ids.astype(np.int64)
        return ids.astype(np.float32) if label.head == "binary" else ids

    def _weights(self, table: pa.Table) -> np.ndarray:
        return _to_float(_column(table, self.weight_column), self.weight_column, False).astype(
            np.float32
        )

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """The declaration and (when fitted) the fitted state as plain JSON data."""
        out: dict[str, Any] = {
            "format_version": SPEC_FORMAT_VERSION,
            "wide_columns": [fc.to_dict(c) for c in self.wide_columns],
            "deep_columns": [fc.to_dict(c) for c in self.deep_columns],
            "label": None
            if self.label is None
            else {
                "key": self.label.key,
                "head": self.label.head,
                "classes": None if self.label.classes is None else list(self.label.classes),
            },
            "weight_column": self.weight_column,
        }
        if self.is_fitted:
            out["state"] = self.state_
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Rebuild a (fitted) spec from :meth:`to_dict` output or a spec file's contents."""
        if not isinstance(data, dict):
            raise FeatureColumnError(f"a feature spec must be a mapping, got {type(data).__name__}")
        version = data.get("format_version", SPEC_FORMAT_VERSION)
        if not isinstance(version, int) or version > SPEC_FORMAT_VERSION:
            raise FeatureColumnError(
                f"feature spec format_version {version!r} is newer than this widedeep understands "
                f"({SPEC_FORMAT_VERSION}); upgrade widedeep"
            )
        label = data.get("label")
        if isinstance(label, dict):
            label = Label(**label)
        spec = cls(
            [fc.from_dict(c) for c in data.get("wide_columns", [])],
            [fc.from_dict(c) for c in data.get("deep_columns", [])],
            label=label,
            weight_column=data.get("weight_column"),
        )
        if "state" in data:
            spec.state_ = data["state"]
        return spec

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        return cls.from_json(Path(path).read_text())

    def __repr__(self) -> str:
        wide = ", ".join(c.name for c in self.wide_columns)
        deep = ", ".join(c.name for c in self.deep_columns)
        return f"FeatureSpec(wide=[{wide}], deep=[{deep}], fitted={self.is_fitted})"


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


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
        ids = ints.astype(np.int64)
        out_of_range = present & ((ids < 0) | (ids >= column.num_buckets))
        ids[out_of_range] = -1 if column.default_value is None else column.default_value
        return Ids(ids, offsets)

    def _weighted(self, column: fc.WeightedCategoricalColumn) -> Ids:
        inner = self.ids(column.categorical_column)
        arr = _column(self.table, column.weight_feature_key)
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            arr = arr.flatten()
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


def _to_float(arr: pa.Array, key: str, allow_null: bool) -> np.ndarray:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), None, arr)
    if not (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_boolean(arr.type)
        or pa.types.is_null(arr.type)
    ):
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


# --------------------------------------------------------------------------- small inputs

FAST_PATH_MAX_ROWS = 64  # row dicts up to this many are encoded in plain Python
_CACHE_LIMIT = 100_000  # per-column lookup caches are cleared past this many values
_INT64 = 1 << 63


class _Fallback(Exception):
    """The row encoder met something only the Arrow path handles or reports."""


def _small_rows(data: Any) -> list | None:
    """The rows of one row dict or a short list of row dicts, else None."""
    if isinstance(data, Mapping):
        return None if _is_columns(data) else [data]
    if type(data) is list and 0 < len(data) <= FAST_PATH_MAX_ROWS:
        if all(isinstance(row, Mapping) for row in data):
            return data
    return None


class _RowEncoder:
    """Encodes a few row dicts (serving) in plain Python, to exactly the Arrow path's Batch.

    Arrow's per-call fixed cost (building a table, dictionary-encoding every
    column) dominates for a handful of rows, so here every value is looked up
    in per-column dicts built lazily from the fitted state (value -> id,
    combination -> cross id).  Whatever is unusual (a float or bool category,
    a missing numeric without default, mixed types, a label) raises
    ``_Fallback`` and the caller uses the Arrow path, which encodes it or
    raises its error: both paths give one answer.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.state = spec.state_
        self.caches: dict[int, dict] = {}
        self.vocabularies: dict[int, dict[str, int]] = {}
        base, self.wide = 1, []
        for column, size in zip(spec.wide_columns, spec.wide_sizes()):
            self.wide.append((column, base))
            base += size
        base, self.indicators = 1, []
        for column in spec.deep_columns:
            if isinstance(column, fc.IndicatorColumn):
                self.indicators.append((column.categorical_column, base))
                base += spec.num_buckets(column.categorical_column)
        self.embeddings = [c for c in spec.deep_columns if isinstance(c, fc.EmbeddingColumn)]
        self.numerics = [c for c in spec.deep_columns if isinstance(c, fc.NumericColumn)]
        self.plain_dense = all(c.normalizer is None for c in self.numerics)
        self.dense_dim = spec.dense_dim_
        self.lookups: dict[int, Any] = {}
        self.one = self._compile_one()

    # ------------------------------------------------------------- one row of scalars

    def _compile_one(self) -> Any:
        """A function encoding one row of scalar values, or None if the spec needs more.

        Each column becomes a closure row -> id (-1 = none); a list value or
        anything unusual raises ``_Fallback`` to the general row path.
        """
        try:
            wide = [(self._scalar_fn(c), base) for c, base in self.wide]
            indicators = [(self._scalar_fn(c), base) for c, base in self.indicators]
            embeddings = [self._scalar_fn(c.categorical_column) for c in self.embeddings]
            dense = [self._number_fn(c) for c in self.numerics]
        except _Fallback:
            return None
        label_key = None if self.spec.label is None else self.spec.label.key
        n_wide, n_indicators = len(wide), len(indicators)

        def encode_one(row: Mapping, label: bool | None) -> Batch:
            if label is None and label_key is not None and label_key in row:
                raise _Fallback
            try:
                w = [b + i if (i := f(row)) >= 0 else 0 for f, b in wide]
                d = [i + 1 if (i := f(row)) >= 0 else 0 for f in embeddings]
                x = [f(row) for f in dense]
                ind = [b + i if (i := f(row)) >= 0 else 0 for f, b in indicators]
            except KeyError:
                raise _Fallback from None  # a missing column: the Arrow path reports it
            return Batch(
                wide_ids=torch.from_numpy(np.array([w] if n_wide else [[0]], dtype=np.int32)),
                wide_weights=None,
                embed_ids=[torch.from_numpy(np.array([[i]], dtype=np.int32)) for i in d],
                embed_weights=[None] * len(d),
                indicator_ids=torch.from_numpy(
                    np.array([ind] if n_indicators else [[0]], dtype=np.int32)
                ),
                indicator_weights=None,
                dense=torch.from_numpy(np.array([x], dtype=np.float32).reshape(1, len(x))),
            )

        return encode_one

    def _number_fn(self, column: fc.NumericColumn) -> Any:
        """row -> float for a one-value numeric column (normalised as the Arrow path does)."""
        if column.dimension != 1 or column.normalizer == "log":  # log1p: NumPy's, not libm's
            raise _Fallback
        key, default = column.key, column.default_value
        if column.normalizer is None:
            return lambda row: _number(row[key], default)
        state = self.state[_state_key(column)]
        if column.normalizer == "standard":
            mean, std = state["mean"][0], state["std"][0]
            return lambda row: (_number(row[key], default) - mean) / std
        boundaries, steps = state["boundaries"][0], column.num_quantiles - 1
        return lambda row: bisect_right(boundaries, _number(row[key], default)) / steps

    def _scalar_fn(self, column: fc.CategoricalColumn) -> Any:
        """row -> id (-1 = none) for one scalar value per feature."""
        if not isinstance(column, fc.CATEGORICAL_TYPES):
            raise _Fallback  # a wide numeric column: an id weighted by its value
        if isinstance(column, fc.BucketizedColumn):
            if column.source_column.dimension != 1:
                raise _Fallback
            key, default = column.source_column.key, column.source_column.default_value
            boundaries = column.boundaries
            return lambda row: bisect_right(boundaries, _number(row[key], default))
        if isinstance(column, fc.CrossedColumn):
            parts = []
            for k in column.keys:
                if isinstance(k, str):
                    parts.append(_scalar_hash_fn(k, self.spec._hash_cache))
                else:
                    parts.append(self._scalar_fn(k))
            cache = self.cache(column)
            size, hash_key = column.hash_bucket_size, column.hash_key

            def cross(row: Mapping) -> int:
                combination = tuple([f(row) for f in parts])
                i = cache.get(combination)
                if i is None:
                    if -1 in combination:
                        return -1
                    if len(cache) > _CACHE_LIMIT:
                        cache.clear()
                    i = cache[combination] = cross_hash_one(combination, hash_key) % size
                return i

            return cross
        if isinstance(column, fc.IdentityColumn):
            key, size = column.key, column.num_buckets
            default = -1 if column.default_value is None else column.default_value

            def identity(row: Mapping) -> int:
                v = row[key]
                if v is None:
                    return -1
                if type(v) is not int or not -_INT64 <= v < _INT64:
                    raise _Fallback
                return v if 0 <= v < size else default

            return identity
        if isinstance(column, fc.WeightedCategoricalColumn):
            raise _Fallback
        key, lookup = column.key, self.lookup(column)
        no_kinds: set = set()

        def categorical(row: Mapping) -> int:
            return lookup(_text(row[key], no_kinds))

        return categorical

    def encode(self, rows: list, label: bool | None) -> Batch:
        spec = self.spec
        if label is None and spec.label is not None:
            key = spec.label.key
            if any(key in row for row in rows):
                raise _Fallback  # labelled rows: training data, the Arrow path reads labels
        call = _RowCall(self, rows)
        n = len(rows)

        parts = []
        for column, base in self.wide:
            if isinstance(column, fc.NumericColumn):
                k = column.dimension
                weights = call.normalized(column)
                parts.append(([list(range(k))] * n, True, weights, base))
            else:
                parts.append((*call.ids(column), base))
        wide_ids, wide_weights = _assemble_rows(parts, n)

        parts = [(*call.ids(column), base) for column, base in self.indicators]
        indicator_ids, indicator_weights = _assemble_rows(parts, n)

        embed_ids, embed_weights = [], []
        for column in self.embeddings:
            values, multi, weights = call.ids(column.categorical_column)
            if not multi and weights is None:
                ids = np.array([[v + 1 if v >= 0 else 0] for v in values], dtype=np.int32)
                embed_ids.append(torch.from_numpy(ids))
                embed_weights.append(None)
            else:
                ids, weights = combine(_as_ids(values, multi, weights), column.combiner, n)
                embed_ids.append(torch.from_numpy(ids))
                embed_weights.append(None if weights is None else torch.from_numpy(weights))

        if self.plain_dense:
            dense_rows = [[] for _ in range(n)]
            for column in self.numerics:
                values = call.numeric(column)
                if column.dimension == 1:
                    for row, v in zip(dense_rows, values):
                        row.append(v)
                else:
                    for row, v in zip(dense_rows, values):
                        row.extend(v)
            dense = np.array(dense_rows, dtype=np.float32).reshape(n, self.dense_dim)
        else:
            dense = np.empty((n, self.dense_dim), dtype=np.float32)
            at = 0
            for column in self.numerics:
                dense[:, at : at + column.dimension] = call.normalized(column)
                at += column.dimension

        return Batch(
            wide_ids=torch.from_numpy(wide_ids),
            wide_weights=_tensor(wide_weights),
            embed_ids=embed_ids,
            embed_weights=embed_weights,
            indicator_ids=torch.from_numpy(indicator_ids),
            indicator_weights=_tensor(indicator_weights),
            dense=torch.from_numpy(dense),
        )

    def cache(self, column: Any) -> dict:
        cache = self.caches.get(id(column))
        if cache is None:
            cache = self.caches[id(column)] = {}
        return cache

    def lookup(self, column: fc.CategoricalColumn):
        """value (text or None) -> id (-1 = none) for a vocabulary or hash column, cached."""
        fn = self.lookups.get(id(column))
        if fn is None:
            fn = self.lookups[id(column)] = self._lookup_fn(column)
        return fn

    def _lookup_fn(self, column: fc.CategoricalColumn):
        cache = self.cache(column)
        if isinstance(column, fc.HashBucketColumn):
            size = column.hash_bucket_size

            def compute(v: str) -> int:
                return hash_string(v) % size
        else:
            index = self.vocabulary(column)
            n_vocabulary, n_oov = len(index), column.num_oov_buckets
            default = getattr(column, "default_value", -1)

            def compute(v: str) -> int:
                i = index.get(v)
                if i is not None:
                    return i
                if n_oov > 0:
                    return n_vocabulary + hash_string(v) % n_oov
                return default if default >= 0 else -1

        def lookup(v: str | None) -> int:
            if v is None:
                return -1
            i = cache.get(v)
            if i is None:
                if len(cache) > _CACHE_LIMIT:  # unseen values must not grow memory forever
                    cache.clear()
                i = cache[v] = compute(v)
            return i

        return lookup

    def vocabulary(self, column: fc.CategoricalColumn) -> dict[str, int]:
        index = self.vocabularies.get(id(column))
        if index is None:
            if isinstance(column, fc.VocabularyListColumn):
                vocabulary = column.vocabulary_list
            else:
                vocabulary = self.state[_state_key(column)]["vocabulary"]
            index = self.vocabularies[id(column)] = {v: i for i, v in enumerate(vocabulary)}
        return index


class _RowCall:
    """One call's rows and its memo (a column read by several parts is encoded once)."""

    def __init__(self, encoder: _RowEncoder, rows: list) -> None:
        self.encoder = encoder
        self.rows = rows
        self.memo: dict[Any, Any] = {}

    def raw(self, key: str) -> list:
        if len(self.rows) == 1:
            row = self.rows[0]
            if key not in row:
                raise _Fallback  # a missing column: the Arrow path reports it
            return [row[key]]
        values = [row.get(key, _Fallback) for row in self.rows]
        if all(v is _Fallback for v in values):
            raise _Fallback  # a missing column: the Arrow path reports it
        return [None if v is _Fallback else v for v in values]

    def source(self, key: str) -> tuple[list, bool]:
        """Categorical values as text (None = missing) per row, and whether rows hold lists."""
        memo_key = ("source", key)
        if memo_key in self.memo:
            return self.memo[memo_key]
        kinds: set[type] = set()
        multi = None
        out: list = []
        for v in self.raw(key):
            if v is None:
                out.append(None)
            elif type(v) is list:
                if multi is False:
                    raise _Fallback
                multi = True
                out.append([_text(x, kinds) for x in v])
            else:
                if multi:
                    raise _Fallback
                multi = False
                out.append(_text(v, kinds))
        if len(kinds) > 1:
            raise _Fallback  # mixed numbers and strings: Arrow's error
        if multi:
            out = [[] if v is None else v for v in out]
        result = self.memo[memo_key] = (out, bool(multi))
        return result

    def numeric(self, column: fc.NumericColumn) -> list:
        """Raw float values per row (a list of ``dimension`` floats when it is > 1)."""
        memo_key = ("numeric", id(column))
        if memo_key in self.memo:
            return self.memo[memo_key]
        k, default = column.dimension, column.default_value
        out: list = []
        for v in self.raw(column.key):
            if k == 1:
                out.append(_number(v, default))
            elif type(v) is list and len(v) == k:
                out.append([_number(x, default) for x in v])
            else:
                raise _Fallback
        self.memo[memo_key] = out
        return out

    def normalized(self, column: fc.NumericColumn) -> np.ndarray:
        x = np.array(self.numeric(column), dtype=np.float64).reshape(-1, column.dimension)
        return _normalize(x, column, self.encoder.state.get(_state_key(column)))

    def ids(self, column: fc.CategoricalColumn) -> tuple[list, bool, list | None]:
        """(ids per row, -1 = none, or id lists when ``multi``; weights alike or None)."""
        memo_key = id(column)
        if memo_key not in self.memo:
            self.memo[memo_key] = self._ids(column)
        return self.memo[memo_key]

    def _ids(self, column: fc.CategoricalColumn) -> tuple[list, bool, list | None]:
        if isinstance(column, fc.BucketizedColumn):
            boundaries = column.boundaries
            values = self.numeric(column.source_column)
            if column.source_column.dimension == 1:
                return [bisect_right(boundaries, x) for x in values], False, None
            width = len(boundaries) + 1
            rows = [
                [bisect_right(boundaries, x) + j * width for j, x in enumerate(v)] for v in values
            ]
            return rows, True, None
        if isinstance(column, fc.CrossedColumn):
            return self._cross(column)
        if isinstance(column, fc.WeightedCategoricalColumn):
            return self._weighted(column)
        if isinstance(column, fc.IdentityColumn):
            return self._identity(column)
        values, multi = self.source(column.key)
        lookup = self.encoder.lookup(column)
        if multi:
            return [[lookup(v) for v in row] for row in values], True, None
        return [lookup(v) for v in values], False, None

    def _identity(self, column: fc.IdentityColumn) -> tuple[list, bool, None]:
        size = column.num_buckets
        default = -1 if column.default_value is None else column.default_value

        def lookup(v: Any) -> int:
            if v is None:
                return -1
            if type(v) is not int or not -_INT64 <= v < _INT64:
                raise _Fallback
            return v if 0 <= v < size else default

        values = self.raw(column.key)
        if any(type(v) is list for v in values):
            if not all(v is None or type(v) is list for v in values):
                raise _Fallback
            return [[lookup(x) for x in v] if v else [] for v in values], True, None
        return [lookup(v) for v in values], False, None

    def _weighted(self, column: fc.WeightedCategoricalColumn) -> tuple[list, bool, list]:
        values, multi, _ = self.ids(column.categorical_column)
        raw = self.raw(column.weight_feature_key)
        if multi:
            weights = []
            for ids, w in zip(values, raw):
                if w is None and not ids:  # a missing list and its missing weights
                    w = []
                if type(w) is not list or len(w) != len(ids):
                    raise _Fallback
                weights.append([_weight(x) for x in w])
        else:
            weights = [_weight(w) for w in raw]
        return values, multi, weights

    def _cross(self, column: fc.CrossedColumn) -> tuple[list, bool, None]:
        comps, multi = [], False
        for key in column.keys:
            if isinstance(key, str):
                values, is_multi = self.source(key)
                hashes = self.encoder.spec._hash_cache
                to_hash = _hash_fn(hashes)
                if is_multi:
                    values = [[to_hash(v) for v in row if v is not None] for row in values]
                else:
                    values = [None if v is None else to_hash(v) for v in values]
            else:
                values, is_multi, _ = self.ids(key)
                if is_multi:
                    values = [[v for v in row if v >= 0] for row in values]
                else:
                    values = [None if v < 0 else v for v in values]
            comps.append((values, is_multi))
            multi = multi or is_multi
        cache = self.encoder.cache(column)
        size, hash_key = column.hash_bucket_size, column.hash_key

        def cross(combination: tuple) -> int:
            i = cache.get(combination)
            if i is None:
                if len(cache) > _CACHE_LIMIT:
                    cache.clear()
                i = cache[combination] = cross_hash_one(combination, hash_key) % size
            return i

        n = len(self.rows)
        if not multi:
            out = []
            for r in range(n):
                combination = tuple(values[r] for values, _ in comps)
                out.append(-1 if None in combination else cross(combination))
            return out, False, None
        rows = []
        for r in range(n):
            lists = [
                values[r] if is_multi else ([] if values[r] is None else [values[r]])
                for values, is_multi in comps
            ]
            rows.append([cross(c) for c in product(*lists)])
        return rows, True, None


def _scalar_hash_fn(key: str, cache: dict[str, int]) -> Any:
    """row -> the string hash of ``row[key]`` (-1 = missing), for a cross component."""
    no_kinds: set = set()

    def component(row: Mapping) -> int:
        v = row[key]
        if type(v) is str and v:
            h = cache.get(v)
            if h is not None:
                return h
        v = _text(v, no_kinds)
        if v is None:
            return -1
        h = cache.get(v)
        if h is None:
            if len(cache) > 1_000_000:
                cache.clear()
            h = cache[v] = hash_string(v)
        return h

    return component


def _hash_fn(cache: dict[str, int]):
    def to_hash(v: str) -> int:
        h = cache.get(v)
        if h is None:
            if len(cache) > 1_000_000:
                cache.clear()
            h = cache[v] = hash_string(v)
        return h

    return to_hash


def _text(v: Any, kinds: set) -> str | None:
    """A categorical value as Arrow's string cast writes it; anything unusual falls back."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        kinds.add(str)
        return v if v != "" else None
    if t is int and -_INT64 <= v < _INT64:
        kinds.add(int)
        return str(v)
    raise _Fallback  # floats, bools, nested lists...: the Arrow path's formatting rules


def _number(v: Any, default: float | None) -> float:
    t = type(v)
    if t is float:
        if math.isfinite(v):
            return v
    elif t is int:
        if -_INT64 <= v < _INT64:
            return float(v)
        raise _Fallback
    elif v is not None:
        raise _Fallback  # strings, bools, lists: the Arrow path parses or reports them
    if default is None:
        raise _Fallback  # a missing value without default: the Arrow path's error
    return default


def _weight(v: Any) -> float:
    t = type(v)
    if t is float and not math.isnan(v):
        return v
    if t is int and -_INT64 <= v < _INT64:
        return float(v)
    raise _Fallback


def _as_ids(values: list, multi: bool, weights: list | None) -> Ids:
    """Per-row Python ids (and weights) as the Arrow path's :class:`Ids`."""
    if not multi:
        w = None if weights is None else np.array(weights, dtype=np.float32)
        return Ids(np.array(values, dtype=np.int64), None, w)
    flat = [v for row in values for v in row]
    offsets = offsets_of(np.array([len(row) for row in values], dtype=np.int64))
    w = None
    if weights is not None:
        w = np.array([x for row in weights for x in row], dtype=np.float32)
    return Ids(np.array(flat, dtype=np.int64), offsets, w)


def _assemble_rows(parts: list, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`assemble` for per-row Python ids; the common case stays in Python."""
    if not parts:
        return np.zeros((n, 1), dtype=np.int32), None
    if not any(multi or weights is not None for _, multi, weights, _ in parts):
        bases = [base for *_, base in parts]
        columns = [values for values, *_ in parts]
        matrix = [[v + b if v >= 0 else 0 for v, b in zip(row, bases)] for row in zip(*columns)]
        return np.array(matrix, dtype=np.int32).reshape(n, len(parts)), None
    return assemble(
        [(_as_ids(values, multi, weights), base) for values, multi, weights, base in parts], n
    )


__all__ = ["FeatureSpec", "Label", "DataError", "as_table", "Ids"]
