"""Fitting a FeatureSpec in one streaming pass with bounded memory.

``fit_stream(spec, tables)`` learns the same ``state_`` as ``FeatureSpec.fit``
(vocabularies with ``min_count``, quantile boundaries, mean / std, label
classes) from an iterator of Arrow tables or record batches, so the data never
has to be in memory at once.

It is exact while the data fit: value counts are kept per distinct value and
numeric values are kept until ``exact_limit`` of them (per column); then a
column switches to an Apache DataSketches sketch (the optional ``scale``
extra, ``pip install 'widedeep[scale]'``): a *frequent items* sketch for the
vocabulary (the values whose estimated count reaches ``min_count``, most
frequent first) and a *KLL* sketch for the quantile boundaries (rank error
about 0.3 % with the default ``k``).  Mean and standard deviation are merged
exactly (Chan et al.) whatever the size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import feature_column as fc
from .columnar import (
    DataError,
    _column,
    _dictionary,
    _missing_mask,
    _numeric,
    _state_key,
    _strings,
)
from .transform import FeatureSpec, as_table

DEFAULT_EXACT_LIMIT = 1_000_000
KLL_K = 1000
FREQUENT_ITEMS_LG_MAX_K = 21  # a map of up to 2^21 counters: ~1.5 M candidate values


def _sketches():
    try:
        import datasketches
    except ImportError:
        raise DataError(
            "the data are too large to count exactly within exact_limit; install the sketch "
            "library (pip install 'widedeep[scale]') or raise exact_limit"
        ) from None
    return datasketches


class VocabularyCounter:
    """Counts of each distinct value; a frequent-items sketch beyond ``exact_limit`` values."""

    def __init__(self, column: fc.VocabularyFromDataColumn, exact_limit: int) -> None:
        self.column = column
        self.exact_limit = exact_limit
        self.counts: dict[str, int] | None = {}
        self.sketch = None

    def update(self, table: pa.Table) -> None:
        dictionary, codes, _ = _dictionary(_column(table, self.column.key), self.column.key, 0)
        counts = np.bincount(codes[codes >= 0], minlength=len(dictionary))
        keep = (counts > 0) & ~_missing_mask(dictionary)
        values = np.asarray(dictionary.to_pylist(), dtype=object)[keep]
        counts = counts[keep]
        if self.counts is not None:
            for v, c in zip(values.tolist(), counts.tolist()):
                self.counts[v] = self.counts.get(v, 0) + c
            if len(self.counts) > self.exact_limit:
                self._to_sketch()
        else:
            for v, c in zip(values.tolist(), counts.tolist()):
                self.sketch.update(v, c)

    def _to_sketch(self) -> None:
        ds = _sketches()
        self.sketch = ds.frequent_strings_sketch(FREQUENT_ITEMS_LG_MAX_K)
        for v, c in self.counts.items():
            self.sketch.update(v, c)
        self.counts = None

    def vocabulary(self) -> list[str]:
        if self.counts is not None:
            items = list(self.counts.items())
        else:
            ds = _sketches()
            rows = self.sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_POSITIVES)
            items = [(v, est) for v, est, _, _ in rows]
        items = [(v, c) for v, c in items if c >= self.column.min_count]
        items.sort(key=lambda vc: (-vc[1], vc[0]))
        if self.column.max_size is not None:
            items = items[: self.column.max_size]
        if not items:
            raise DataError(
                f"vocabulary column {self.column.key!r}: no value occurs at least min_count="
                f"{self.column.min_count} times in the training data; lower min_count"
            )
        return [v for v, _ in items]


class QuantileCollector:
    """All values (exact) until ``exact_limit``; then one KLL sketch per dimension."""

    def __init__(self, column: fc.NumericColumn, exact_limit: int) -> None:
        self.column = column
        self.exact_limit = exact_limit
        self.parts: list[np.ndarray] | None = []
        self.held = 0
        self.sketches: list[Any] | None = None

    def update(self, values: np.ndarray) -> None:  # [rows, dimension], finite
        if self.parts is not None:
            self.parts.append(values)
            self.held += len(values)
            if self.held > self.exact_limit:
                ds = _sketches()
                self.sketches = [ds.kll_doubles_sketch(KLL_K) for _ in range(values.shape[1])]
                for part in self.parts:
                    self._sketch(part)
                self.parts = None
        else:
            self._sketch(values)

    def _sketch(self, values: np.ndarray) -> None:
        for j, sketch in enumerate(self.sketches):
            sketch.update(np.ascontiguousarray(values[:, j], dtype=np.float64))

    def state(self) -> dict[str, Any]:
        q = np.arange(1, self.column.num_quantiles) / self.column.num_quantiles
        if self.parts is not None:
            if not self.held:
                raise DataError(
                    f"numeric column {self.column.key!r}: no finite values to fit the normalizer on"
                )
            values = np.concatenate(self.parts)
            return {"boundaries": np.quantile(values, q, axis=0).T.tolist()}
        return {"boundaries": [list(map(float, s.get_quantiles(q))) for s in self.sketches]}


class MomentCollector:
    """Count, mean and sum of squared deviations, merged batch by batch (exact, stable)."""

    def __init__(self, column: fc.NumericColumn) -> None:
        self.column = column
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray) -> None:
        n_b = len(values)
        if not n_b:
            return
        mean_b = values.mean(axis=0)
        m2_b = ((values - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    def state(self) -> dict[str, Any]:
        if not self.n:
            raise DataError(
                f"numeric column {self.column.key!r}: no finite values to fit the normalizer on"
            )
        std = np.sqrt(np.asarray(self.m2) / self.n)
        return {"mean": np.asarray(self.mean).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def fit_stream(
    spec: FeatureSpec,
    tables: Iterable[Any],
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
) -> FeatureSpec:
    """Fit ``spec`` on a stream of tables in one pass; the same ``state_`` as ``spec.fit``."""
    counters: dict[str, Any] = {}
    for column in spec.columns:
        if isinstance(column, fc.VocabularyFromDataColumn):
            counters[_state_key(column)] = VocabularyCounter(column, exact_limit)
        elif isinstance(column, fc.NumericColumn) and column.normalizer == "quantile":
            counters[_state_key(column)] = QuantileCollector(column, exact_limit)
        elif isinstance(column, fc.NumericColumn) and column.normalizer == "standard":
            counters[_state_key(column)] = MomentCollector(column)
    learn_classes = (
        spec.label is not None and spec.label.head == "multiclass" and spec.label.classes is None
    )
    classes: set[str] = set()
    seen = 0
    for data in tables:
        table = as_table(data)
        if not seen:
            spec._check_keys(table, need_label=learn_classes)
        seen += table.num_rows
        for counter in counters.values():
            if isinstance(counter, VocabularyCounter):
                counter.update(table)
            else:
                counter.update(_numeric(table, counter.column, for_fit=True))
        if learn_classes:
            values = _strings(_column(table, spec.label.key)).drop_null()
            classes.update(pc.unique(values).to_pylist())
    if not seen and (counters or learn_classes):
        raise DataError("no training rows to fit the feature spec on")
    state: dict[str, Any] = {}
    for key, counter in counters.items():
        if isinstance(counter, VocabularyCounter):
            state[key] = {"vocabulary": counter.vocabulary()}
        else:
            state[key] = counter.state()
    if learn_classes:
        state["label"] = {"classes": sorted(classes)}
    spec.state_ = state
    return spec


def needs_fit(spec: FeatureSpec) -> bool:
    """Whether ``fit`` learns anything from data (vocabularies, normalisers, classes)."""
    learned = any(
        isinstance(c, fc.VocabularyFromDataColumn)
        or (isinstance(c, fc.NumericColumn) and c.is_fitted_from_data)
        for c in spec.columns
    )
    return learned or (
        spec.label is not None and spec.label.head == "multiclass" and spec.label.classes is None
    )
