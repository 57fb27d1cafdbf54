"""The small-input encoder: a few row dicts (serving) in plain Python.

For one row the Arrow path's fixed costs dominate, so rows up to
``FAST_PATH_MAX_ROWS`` are encoded from per-column lookup caches instead, to
exactly the tensors the vectorised path (``columnar.py``) gives; anything
unusual raises ``_Fallback`` and the caller takes the vectorised path.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from itertools import product, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import feature_column as fc
from .batch import Batch
from .columnar import _normalize, _state_key
from .hashing import cross_hash_one, hash_string
from .ids import Ids, assemble, combine, offsets_of

if TYPE_CHECKING:
    from .transform import FeatureSpec


# row dicts up to this many are encoded in plain Python: the Arrow path's fixed cost is
# larger up to about 1,000 census rows (at 64 rows 0.27 vs 1.5 ms, at 512 1.3 vs 2.4 ms)
FAST_PATH_MAX_ROWS = 512
_CACHE_LIMIT = 100_000  # per-column lookup caches are cleared past this many values
_INT64 = 1 << 63
_TEXT_OR_NONE, _INT, _FLOAT = {str, type(None)}, {int}, {float}  # value types, for fast paths


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


class _Fallback(Exception):
    """The row encoder met something only the Arrow path handles or reports."""


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
        self.caches: dict[Any, Any] = {}  # per column: value -> id, and what is found once
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
        # what is found once per column (by id), for :meth:`_once`
        self.scalar_fns: dict[int, Any] = {}
        self.number_fns: dict[int, Any] = {}
        self.input_keys: dict[int, list[str]] = {}
        self.states: dict[int, Any] = {}
        self._scalar_fn_or_none = _or_none(self._scalar_fn)
        self._number_fn_or_none = _or_none(self._number_fn)
        # a spec read from JSON holds equal but separate objects where the declaration shared
        # one column (education in the wide part and in an indicator): encode it once a call
        self.same: dict[int, int] = {}
        first: dict[fc.FeatureColumn, fc.FeatureColumn] = {}
        todo = list(spec.wide_columns + spec.deep_columns)
        while todo:
            column = todo.pop()
            self.same[id(column)] = id(first.setdefault(column, column))
            todo += fc._children(column)
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

    def encode(self, rows: list, label: bool | None, context: Mapping | None = None) -> Batch:
        """Rows (each on top of ``context`` when given) to exactly the Arrow path's Batch."""
        spec = self.spec
        if label is None and spec.label is not None:
            key = spec.label.key
            if any(key in row for row in rows) or (context and key in context):
                raise _Fallback  # labelled rows: training data, the Arrow path reads labels
        call = _RowCall(self, rows, context)
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
                ids = np.array(values, dtype=np.int64).reshape(n, 1)
                ids = np.where(ids >= 0, ids + 1, 0).astype(np.int32)  # 0 pads
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
                dense[:, at : at + column.dimension] = call.normalized(column, repeat=False)
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

    def _once(self, found: dict, column: Any, make: Any) -> Any:
        """``make(column)``, computed on the column's first use and kept in ``found``."""
        value = found.get(id(column), found)
        if value is found:
            value = found[id(column)] = make(column)
        return value

    def scalar_fn(self, column: fc.CategoricalColumn) -> Any:
        """The one-row path's row -> id (-1 = none) for the column, or None."""
        return self._once(self.scalar_fns, column, self._scalar_fn_or_none)

    def number_fn(self, column: fc.NumericColumn) -> Any:
        """The one-row path's row -> normalised float for the column, or None."""
        return self._once(self.number_fns, column, self._number_fn_or_none)

    def keys_of(self, column: fc.FeatureColumn) -> list[str]:
        return self._once(self.input_keys, column, fc.input_keys)

    def state_of(self, column: fc.FeatureColumn) -> Any:
        """The column's fitted state (None when it has none)."""
        return self._once(self.states, column, lambda c: self.state.get(_state_key(c)))

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


def _or_none(make: Any) -> Any:
    """``make``, answering None where it raises ``_Fallback``."""

    def call(column: Any) -> Any:
        try:
            return make(column)
        except _Fallback:
            return None

    return call


class _Repeated(list):
    """Ids of a column read from the context alone: one value repeated for every row."""


class _RowCall:
    """One call's rows and its memo (a column read by several parts is encoded once).

    With a ``context`` (ranking: one request's features shared by every
    candidate row) each row is the context with the row's own values on top,
    and whatever reads only features no row gives is encoded once, from the
    context alone, and repeated.
    """

    def __init__(self, encoder: _RowEncoder, rows: list, context: Mapping | None = None) -> None:
        self.encoder = encoder
        self.rows = rows
        self.memo: dict[Any, Any] = {}
        self.context = context or {}
        self.shared: _RowCall | None = None
        if self.context:
            given = set().union(*rows)
            self.context_only = {k for k in self.context if k not in given}
            if self.context_only:
                self.shared = _RowCall(encoder, [self.context])

    def _from_context(self, keys: Any) -> bool:
        return self.shared is not None and self.context_only.issuperset(keys)

    def raw(self, key: str) -> list:
        if self._from_context((key,)):
            return [self.context[key]] * len(self.rows)
        if len(self.rows) == 1 and not self.context:
            row = self.rows[0]
            if key not in row:
                raise _Fallback  # a missing column: the Arrow path reports it
            return [row[key]]
        if key not in self.context:
            try:  # in every row, the common case: one C-level pass
                return list(map(itemgetter(key), self.rows))
            except KeyError:
                pass
        default = self.context.get(key)
        values = [row.get(key, default) for row in self.rows]  # absent: None
        if all(v is None for v in values) and not any(key in row for row in self.rows):
            if key not in self.context:
                raise _Fallback  # a missing column: the Arrow path reports it
        return values

    def source(self, key: str) -> tuple[list, bool]:
        """Categorical values as text (None = missing) per row, and whether rows hold lists."""
        memo_key = ("source", key)
        if memo_key in self.memo:
            return self.memo[memo_key]
        if self._from_context((key,)):
            values, multi = self.shared.source(key)
            result = self.memo[memo_key] = (values * len(self.rows), multi)
            return result
        raw = self.raw(key)
        if set(map(type, raw)) <= _TEXT_OR_NONE and "" not in raw:  # the common case
            result = self.memo[memo_key] = (raw, False)
            return result
        kinds: set[type] = set()
        try:  # one pass for the rest: strings (not noted in kinds), numbers or None
            out = [v if type(v) is str and v else _text(v, kinds) for v in raw]
            if not (kinds and any(type(v) is str for v in raw)):  # mixed: Arrow refuses
                result = self.memo[memo_key] = (out, False)
                return result
        except _Fallback:
            pass  # lists or something unusual: the general loop below
        kinds = set()
        multi = None
        out: list = []
        for v in raw:
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
        memo_key = ("numeric", self.encoder.same.get(id(column)))
        if memo_key in self.memo:
            return self.memo[memo_key]
        if self._from_context((column.key,)):
            out = self.memo[memo_key] = self.shared.numeric(column) * len(self.rows)
            return out
        k, default = column.dimension, column.default_value
        raw = self.raw(column.key)
        types = set(map(type, raw)) if k == 1 else None
        if types == _INT and -_INT64 <= min(raw) <= max(raw) < _INT64:  # the common cases
            out = self.memo[memo_key] = list(map(float, raw))
            return out
        if types == _FLOAT and all(map(math.isfinite, raw)):
            out = self.memo[memo_key] = raw
            return out
        out = []
        for v in raw:
            if k == 1:
                out.append(_number(v, default))
            elif type(v) is list and len(v) == k:
                out.append([_number(x, default) for x in v])
            else:
                raise _Fallback
        self.memo[memo_key] = out
        return out

    def normalized(self, column: fc.NumericColumn, repeat: bool = True) -> np.ndarray:
        """[rows, dimension] normalised values; with ``repeat`` False a context feature's
        come once (a scalar or [1, dimension]), for the caller to broadcast."""
        if self._from_context((column.key,)):
            one = None if repeat else self.encoder.number_fn(column)
            if one is not None:
                return one(self.context)  # a scalar, as the one-row path computes it
            x = self.shared.normalized(column)
            return np.repeat(x, len(self.rows), axis=0) if repeat else x
        x = np.array(self.numeric(column), dtype=np.float64).reshape(-1, column.dimension)
        return _normalize(x, column, self.encoder.state_of(column))

    def ids(self, column: fc.CategoricalColumn) -> tuple[list, bool, list | None]:
        """(ids per row, -1 = none, or id lists when ``multi``; weights alike or None)."""
        memo_key = self.encoder.same.get(id(column))
        if memo_key not in self.memo:
            if self._from_context(self.encoder.keys_of(column)):
                self.memo[memo_key] = self._context_ids(column)
            else:
                self.memo[memo_key] = self._ids(column)
        return self.memo[memo_key]

    def _context_ids(self, column: fc.CategoricalColumn) -> tuple[list, bool, list | None]:
        """Ids of a column that reads context features only: found once, repeated per row."""
        n = len(self.rows)
        if n == 0:  # no candidates: nothing to repeat
            return [], False, None
        one = self.encoder.scalar_fn(column)  # the one-row path's, where it has one
        if one is not None:
            try:
                return _Repeated([one(self.context)] * n), False, None
            except _Fallback:
                pass  # a list or something unusual: the general path below
        values, multi, weights = self.shared.ids(column)
        if not multi and weights is None:
            return _Repeated(values * n), False, None
        return values * n, multi, None if weights is None else weights * n

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
        cached = self.encoder.cache(column).get  # what lookup() would find, without the call
        ids = list(map(cached, values, repeat(-2)))
        if -2 in ids:
            ids = [lookup(v) if i == -2 else i for i, v in zip(ids, values)]
        return ids, False, None

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

    def _component(self, key: str | fc.CategoricalColumn) -> tuple[list, bool]:
        """A cross component per row: hashes of a raw feature's text or a column's ids
        (None, or left out of a list, where missing), and whether rows hold lists."""
        memo_key = ("component", key if isinstance(key, str) else self.encoder.same.get(id(key)))
        if memo_key in self.memo:
            return self.memo[memo_key]
        if isinstance(key, str) and self._from_context((key,)):
            values, is_multi = self.shared._component(key)
            values = values * len(self.rows)
        elif isinstance(key, str):
            values, is_multi = self.source(key)
            hashes = self.encoder.spec._hash_cache
            to_hash = _hash_fn(hashes)
            if is_multi:
                values = [[to_hash(v) for v in row if v is not None] for row in values]
            else:
                hashed = list(map(hashes.get, values))
                if None in hashed:  # a missing value, or one not hashed before
                    hashed = [h if h is not None or v is None else to_hash(v)
                              for h, v in zip(hashed, values)]  # fmt: skip
                values = hashed
        else:
            values, is_multi, _ = self.ids(key)
            if is_multi:
                values = [[v for v in row if v >= 0] for row in values]
            elif type(values) is _Repeated:  # read from the context alone
                values = [None if values[0] < 0 else values[0]] * len(values)
            else:
                values = [None if v < 0 else v for v in values]
        result = self.memo[memo_key] = (values, is_multi)
        return result

    def _cross(self, column: fc.CrossedColumn) -> tuple[list, bool, None]:
        comps = [self._component(key) for key in column.keys]
        multi = any(is_multi for _, is_multi in comps)
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
            combinations = list(zip(*[values for values, _ in comps]))
            ids = list(map(cache.get, combinations, repeat(-2)))  # the common case: seen before
            if -2 in ids:
                ids = [(-1 if None in c else cross(c)) if i == -2 else i
                       for i, c in zip(ids, combinations)]  # fmt: skip
            return ids, False, None
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
    to_hash = _hash_fn(cache)

    def component(row: Mapping) -> int:
        v = row[key]
        if type(v) is str and v:
            h = cache.get(v)
            if h is not None:
                return h
        v = _text(v, no_kinds)
        return -1 if v is None else to_hash(v)

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
        ids = np.empty((n, len(parts)), dtype=np.int32)
        for j, (values, *_) in enumerate(parts):
            ids[:, j] = values[0] if type(values) is _Repeated else values
        missing = ids < 0
        ids += np.array([base for *_, base in parts], dtype=np.int32)
        ids[missing] = 0
        return ids, None
    return assemble(
        [(_as_ids(values, multi, weights), base) for values, multi, weights, base in parts], n
    )
