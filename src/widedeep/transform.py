"""FeatureSpec: feature columns declared once, fitted to data, saved with the model.

``fit`` learns the data-dependent state (vocabularies, normaliser statistics)
into ``state_``; ``transform`` encodes raw rows into a :class:`Batch`.  The
spec round-trips through JSON, so the model directory carries it and training
and serving cannot drift apart.

Encoding runs in ``columnar.py`` (Arrow + NumPy, vectorised) or, for a few
row dicts, in ``rows.py`` (plain Python, the same tensors); this module holds
the spec itself and turns whatever the user passes into an Arrow table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import feature_column as fc
from .batch import Batch
from .columnar import (
    DataError,
    _column,
    _Encoder,
    _fit_normalizer,
    _learn_vocabulary,
    _numeric,
    _state_key,
    _strings,
    _to_float,
)
from .feature_column import FeatureColumnError
from .ids import Ids, assemble, combine
from .rows import FAST_PATH_MAX_ROWS, _Fallback, _RowEncoder, _tensor

SPEC_FORMAT_VERSION = 1
HEADS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Label:
    """The target: a binary class (``classes`` = (negative, positive)), classes, or a number.

    A binary label without ``classes`` must hold 0/1 (or true/false) values.  A regression
    may declare an ``output_range`` (lo, hi): its predictions are then squashed into it
    (:func:`widedeep.heads.regression_value`), e.g. (0.75, 5.25) for ratings 1-5.
    """

    key: str
    head: str = "binary"
    classes: tuple[str, ...] | None = None
    output_range: tuple[float, float] | None = None

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
        if self.output_range is not None:
            bounds = self.output_range
            ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2
            ok = ok and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                for b in bounds
            )
            if self.head != "regression" or not ok or not bounds[0] < bounds[1]:
                raise FeatureColumnError(
                    f"label {self.key!r}: output_range must be two finite numbers lo < hi on "
                    f"a regression label, got {bounds!r} on a {self.head} label; "
                    "write output_range: [lo, hi] with head: regression, or leave it out"
                )
            object.__setattr__(self, "output_range", (float(bounds[0]), float(bounds[1])))


def label_fields(label: Label) -> dict[str, Any]:
    """A label's declaration as JSON data (``output_range`` only when set, so that specs
    without one read and write as before)."""
    out: dict[str, Any] = {
        "key": label.key,
        "head": label.head,
        "classes": None if label.classes is None else list(label.classes),
    }
    if label.output_range is not None:
        out["output_range"] = list(label.output_range)
    return out


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

    def transform_candidates(self, context: Mapping, candidates: list[Mapping]) -> Batch:
        """Encode ranking candidates that share one context (a user, a query): each row is
        the context's features with the candidate's own on top.  What reads only context
        features is encoded once for all candidates, the rest per candidate."""
        self._require_fitted()
        if len(candidates) <= FAST_PATH_MAX_ROWS:
            try:
                return self._row_encoder().encode(candidates, False, context)
            except _Fallback:
                pass
        return self.transform(broadcast(context, candidates), label=False)

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
            values = _to_float(arr, label.key, allow_null=False)
            if label.output_range is not None:  # a label the squash can never reach
                lo, hi = label.output_range
                bad = (values < lo) | (values > hi)
                if bad.any():
                    raise DataError(
                        f"label column {label.key!r}: value {float(values[bad][0])!r} at row "
                        f"{int(np.argmax(bad))} is outside the label's output_range [{lo}, "
                        f"{hi}]; widen the range or fix the data"
                    )
            return values.astype(np.float32)
        classes = self.classes_
        if classes is None:  # binary 0/1
            values = _to_float(arr, label.key, allow_null=False)
            bad = ~np.isin(values, (0.0, 1.0))
            if bad.any():
                raise DataError(
                    f"label column {label.key!r}: value {float(values[bad][0])!r} at row "
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
            "label": None if self.label is None else label_fields(self.label),
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


def broadcast(context: Mapping, candidates: list[Mapping]) -> dict[str, list]:
    """Columns for the candidates with every context feature repeated; a candidate's own
    value of a feature wins over the context's."""
    n = len(candidates)
    keys = dict.fromkeys(k for c in candidates for k in c)
    columns = {k: [v] * n for k, v in context.items() if k not in keys}
    for k in keys:
        columns[k] = [c.get(k, context.get(k)) for c in candidates]
    return columns


def _small_rows(data: Any) -> list | None:
    """The rows of one row dict or a short list of row dicts, else None."""
    if isinstance(data, Mapping):
        return None if _is_columns(data) else [data]
    if type(data) is list and 0 < len(data) <= FAST_PATH_MAX_ROWS:
        if all(isinstance(row, Mapping) for row in data):
            return data
    return None


__all__ = ["FeatureSpec", "Label", "DataError", "as_table", "Ids"]
