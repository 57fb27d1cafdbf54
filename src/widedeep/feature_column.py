"""Declarative feature columns with the names and arguments of ``tf.feature_column``.

A column says *what* a feature is; it holds no data-dependent state and knows
nothing of torch.  Fitted state (learned vocabularies, normaliser statistics)
lives in :class:`widedeep.transform.FeatureSpec`, keyed by column name, so a
declaration is the same object before and after ``fit`` and serialises to the
plain dict a spec file holds.

Porting TensorFlow code is a change of import::

    from widedeep import feature_column as fc
    age = fc.numeric_column("age")
    age_buckets = fc.bucketized_column(age, boundaries=[18, 25, 30])
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

NORMALIZERS = (None, "standard", "quantile", "log")
COMBINERS = ("sum", "mean", "sqrtn")
INITIALIZERS = (None, "truncated_normal", "normal", "uniform", "zeros")


class FeatureColumnError(ValueError):
    """A feature column was declared or used wrongly; the message says how to fix it."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FeatureColumnError(message)


# --------------------------------------------------------------------------- dense


@dataclass(frozen=True)
class NumericColumn:
    """A real-valued feature of ``shape`` values per row, optionally normalised.

    ``normalizer`` is data, not a function, so that it can be saved:
    ``"standard"`` subtracts the training mean and divides by the standard
    deviation, ``"quantile"`` maps a value in the i-th of ``num_quantiles``
    training quantiles to (i-1)/(num_quantiles-1) (paper section 4.1), and
    ``"log"`` applies sign(x)*log1p(|x|).
    """

    key: str
    shape: tuple[int, ...] = (1,)
    default_value: float | None = None
    dtype: str = "float32"
    normalizer: str | None = None
    num_quantiles: int | None = None

    @property
    def name(self) -> str:
        return self.key

    @property
    def dimension(self) -> int:
        return math.prod(self.shape)

    @property
    def is_fitted_from_data(self) -> bool:
        return self.normalizer in ("standard", "quantile")


@dataclass(frozen=True)
class IndicatorColumn:
    """Multi-hot (counts summed) representation of a categorical column, for the deep part."""

    categorical_column: CategoricalColumn

    @property
    def name(self) -> str:
        return f"{self.categorical_column.name}_indicator"


@dataclass(frozen=True)
class EmbeddingColumn:
    """A dense, trained embedding of a categorical column; lists are combined by ``combiner``."""

    categorical_column: CategoricalColumn
    dimension: int
    combiner: str = "mean"
    initializer: str | None = None
    max_norm: float | None = None

    @property
    def name(self) -> str:
        return f"{self.categorical_column.name}_embedding"


# --------------------------------------------------------------------------- categorical


@dataclass(frozen=True)
class VocabularyListColumn:
    """Values looked up in a fixed vocabulary; see ``categorical_column_with_vocabulary_list``."""

    key: str
    vocabulary_list: tuple[str, ...]
    dtype: str | None = None
    default_value: int = -1
    num_oov_buckets: int = 0

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True)
class VocabularyFromDataColumn:
    """A vocabulary learned by ``fit``: values seen >= ``min_count`` times, most frequent first."""

    key: str
    min_count: int = 1
    max_size: int | None = None
    num_oov_buckets: int = 1

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True)
class HashBucketColumn:
    """Values hashed (stable 64-bit BLAKE2b of the UTF-8 text) into ``hash_bucket_size`` ids."""

    key: str
    hash_bucket_size: int
    dtype: str = "string"

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True)
class IdentityColumn:
    """Integer values used as ids directly; out of range goes to ``default_value`` or no id."""

    key: str
    num_buckets: int
    default_value: int | None = None

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True)
class BucketizedColumn:
    """Numbers cut at ``boundaries``: bucket i holds boundaries[i-1] <= x < boundaries[i]."""

    source_column: NumericColumn
    boundaries: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"{self.source_column.name}_bucketized"


@dataclass(frozen=True)
class CrossedColumn:
    """The hashed combination of several categorical features (cartesian product for lists)."""

    keys: tuple[str | CategoricalColumn, ...]
    hash_bucket_size: int
    hash_key: int | None = None

    @property
    def name(self) -> str:
        return "_X_".join(sorted(k if isinstance(k, str) else k.name for k in self.keys))


@dataclass(frozen=True)
class WeightedCategoricalColumn:
    """A categorical column whose ids carry the weights found in ``weight_feature_key``."""

    categorical_column: CategoricalColumn
    weight_feature_key: str
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.categorical_column.name}_weighted_by_{self.weight_feature_key}"


CategoricalColumn = (
    VocabularyListColumn
    | VocabularyFromDataColumn
    | HashBucketColumn
    | IdentityColumn
    | BucketizedColumn
    | CrossedColumn
    | WeightedCategoricalColumn
)
DenseColumn = NumericColumn | IndicatorColumn | EmbeddingColumn
FeatureColumn = CategoricalColumn | DenseColumn
CATEGORICAL_TYPES = (
    VocabularyListColumn,
    VocabularyFromDataColumn,
    HashBucketColumn,
    IdentityColumn,
    BucketizedColumn,
    CrossedColumn,
    WeightedCategoricalColumn,
)
DENSE_TYPES = (NumericColumn, IndicatorColumn, EmbeddingColumn)


# --------------------------------------------------------------------------- constructors


def numeric_column(
    key: str,
    shape: int | Sequence[int] = (1,),
    default_value: float | None = None,
    dtype: str = "float32",
    normalizer: str | None = None,
    num_quantiles: int | None = None,
    normalizer_fn: Any = None,
) -> NumericColumn:
    """Declare a real-valued column (``tf.feature_column.numeric_column``)."""
    _check(
        normalizer_fn is None,
        f"numeric_column {key!r}: normalizer_fn (a Python function) cannot be saved with the "
        "model; use normalizer='standard' | 'quantile' | 'log' instead",
    )
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    _check(
        len(shape) > 0 and all(s >= 1 for s in shape),
        f"numeric_column {key!r}: shape must be positive, got {shape}",
    )
    _check(
        normalizer in NORMALIZERS,
        f"numeric_column {key!r}: normalizer must be one of {NORMALIZERS}, got {normalizer!r}",
    )
    if normalizer == "quantile":
        num_quantiles = 10 if num_quantiles is None else int(num_quantiles)
        _check(
            num_quantiles >= 2,
            f"numeric_column {key!r}: num_quantiles must be >= 2, got {num_quantiles}",
        )
    else:
        _check(
            num_quantiles is None,
            f"numeric_column {key!r}: num_quantiles needs normalizer='quantile'",
        )
    if default_value is not None:
        default_value = float(default_value)
    return NumericColumn(key, shape, default_value, dtype, normalizer, num_quantiles)


def bucketized_column(
    source_column: NumericColumn, boundaries: Sequence[float]
) -> BucketizedColumn:
    """Cut a numeric column at sorted ``boundaries`` into len(boundaries)+1 buckets."""
    _check(
        isinstance(source_column, NumericColumn),
        f"bucketized_column: source_column must be a numeric_column, got {source_column!r}",
    )
    boundaries = tuple(float(b) for b in boundaries)
    _check(len(boundaries) > 0, f"bucketized_column {source_column.key!r}: boundaries is empty")
    _check(
        all(a < b for a, b in zip(boundaries, boundaries[1:])),
        f"bucketized_column {source_column.key!r}: boundaries must be sorted and distinct, "
        f"got {list(boundaries)}",
    )
    return BucketizedColumn(source_column, boundaries)


def categorical_column_with_vocabulary_list(
    key: str,
    vocabulary_list: Sequence[Any],
    dtype: str | None = None,
    default_value: int = -1,
    num_oov_buckets: int = 0,
) -> VocabularyListColumn:
    """Look values up in a vocabulary; unknown values get no id, default_value or an OOV bucket."""
    vocabulary = tuple(str(v) for v in vocabulary_list)
    _check(
        len(vocabulary) > 0,
        f"vocabulary column {key!r}: the vocabulary is empty; give at least one value",
    )
    duplicates = []
    if len(set(vocabulary)) != len(vocabulary):
        duplicates = sorted(v for v, n in Counter(vocabulary).items() if n > 1)
    _check(
        not duplicates,
        f"vocabulary column {key!r}: the vocabulary has duplicates {duplicates[:10]}; "
        "list each value once",
    )
    _check(
        num_oov_buckets >= 0,
        f"vocabulary column {key!r}: num_oov_buckets must be >= 0, got {num_oov_buckets}",
    )
    _check(
        default_value == -1 or num_oov_buckets == 0,
        f"vocabulary column {key!r}: give default_value or num_oov_buckets, not both",
    )
    _check(
        -1 <= default_value < len(vocabulary),
        f"vocabulary column {key!r}: default_value {default_value} is not an id of the vocabulary",
    )
    return VocabularyListColumn(key, vocabulary, dtype, int(default_value), int(num_oov_buckets))


def categorical_column_with_vocabulary_file(
    key: str,
    vocabulary_file: str,
    vocabulary_size: int | None = None,
    dtype: str | None = None,
    default_value: int = -1,
    num_oov_buckets: int = 0,
) -> VocabularyListColumn:
    """Read a vocabulary (one value a line) now, so the saved model does not depend on the file."""
    try:
        with open(vocabulary_file, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except OSError as e:
        raise FeatureColumnError(
            f"vocabulary column {key!r}: cannot read vocabulary_file {vocabulary_file!r}: {e}"
        ) from None
    lines = [line for line in lines if line != ""]
    if vocabulary_size is not None:
        _check(
            vocabulary_size <= len(lines),
            f"vocabulary column {key!r}: vocabulary_size {vocabulary_size} exceeds the "
            f"{len(lines)} lines of {vocabulary_file!r}",
        )
        lines = lines[:vocabulary_size]
    return categorical_column_with_vocabulary_list(
        key, lines, dtype, default_value, num_oov_buckets
    )


def categorical_column_with_vocabulary_from_data(
    key: str, min_count: int = 1, max_size: int | None = None, num_oov_buckets: int = 1
) -> VocabularyFromDataColumn:
    """A vocabulary learned from the training data by ``fit`` (paper section 4.1)."""
    _check(
        isinstance(min_count, int) and min_count >= 1,
        f"vocabulary column {key!r}: min_count must be an integer >= 1, got {min_count!r}",
    )
    _check(
        max_size is None or max_size >= 1,
        f"vocabulary column {key!r}: max_size must be >= 1, got {max_size}",
    )
    _check(
        num_oov_buckets >= 0,
        f"vocabulary column {key!r}: num_oov_buckets must be >= 0, got {num_oov_buckets}",
    )
    return VocabularyFromDataColumn(key, int(min_count), max_size, int(num_oov_buckets))


def categorical_column_with_hash_bucket(
    key: str, hash_bucket_size: int, dtype: str = "string"
) -> HashBucketColumn:
    """Hash values into ``hash_bucket_size`` buckets (integers are hashed as their text)."""
    _check(
        isinstance(hash_bucket_size, int) and hash_bucket_size >= 1,
        f"hash bucket column {key!r}: hash_bucket_size must be an integer >= 1, "
        f"got {hash_bucket_size!r}",
    )
    return HashBucketColumn(key, hash_bucket_size, dtype)


def categorical_column_with_identity(
    key: str, num_buckets: int, default_value: int | None = None
) -> IdentityColumn:
    """Integer ids in [0, num_buckets) used as they are."""
    _check(
        isinstance(num_buckets, int) and num_buckets >= 1,
        f"identity column {key!r}: num_buckets must be an integer >= 1, got {num_buckets!r}",
    )
    _check(
        default_value is None or 0 <= default_value < num_buckets,
        f"identity column {key!r}: default_value {default_value} is outside [0, {num_buckets})",
    )
    return IdentityColumn(key, int(num_buckets), default_value)


def crossed_column(
    keys: Sequence[str | CategoricalColumn], hash_bucket_size: int, hash_key: int | None = None
) -> CrossedColumn:
    """Cross features: a stable hash of each combination of values, modulo ``hash_bucket_size``."""
    keys = tuple(keys)
    _check(len(keys) >= 2, f"crossed_column: needs at least two keys, got {list(keys)}")
    for k in keys:
        _check(
            isinstance(k, str) or isinstance(k, CATEGORICAL_TYPES),
            f"crossed_column: key {k!r} must be a feature name or a categorical column",
        )
        if isinstance(k, HashBucketColumn):
            raise FeatureColumnError(
                f"crossed_column: key {k.name!r} is a hashed column; cross its raw feature "
                f"{k.key!r} instead (as tf.feature_column requires)"
            )
    _check(
        isinstance(hash_bucket_size, int) and hash_bucket_size >= 1,
        f"crossed_column: hash_bucket_size must be an integer >= 1, got {hash_bucket_size!r}",
    )
    return CrossedColumn(keys, hash_bucket_size, hash_key)


def indicator_column(categorical_column: CategoricalColumn) -> IndicatorColumn:
    """Represent a categorical column as multi-hot counts in the deep part's dense input."""
    _check(
        isinstance(categorical_column, CATEGORICAL_TYPES),
        f"indicator_column: needs a categorical column, got {categorical_column!r}",
    )
    return IndicatorColumn(categorical_column)


def embedding_column(
    categorical_column: CategoricalColumn,
    dimension: int,
    combiner: str = "mean",
    initializer: str | None = None,
    max_norm: float | None = None,
) -> EmbeddingColumn:
    """A trained ``dimension``-wide embedding; lists are combined by sum, mean or sqrtn."""
    _check(
        isinstance(categorical_column, CATEGORICAL_TYPES),
        f"embedding_column: needs a categorical column, got {categorical_column!r}",
    )
    _check(
        isinstance(dimension, int) and dimension >= 1,
        f"embedding_column {categorical_column.name!r}: dimension must be an integer >= 1, "
        f"got {dimension!r}",
    )
    _check(
        combiner in COMBINERS,
        f"embedding_column {categorical_column.name!r}: combiner must be one of {COMBINERS}, "
        f"got {combiner!r}",
    )
    _check(
        initializer in INITIALIZERS,
        f"embedding_column {categorical_column.name!r}: initializer must be one of "
        f"{INITIALIZERS} (a name, so that it can be saved), got {initializer!r}",
    )
    return EmbeddingColumn(categorical_column, int(dimension), combiner, initializer, max_norm)


def weighted_categorical_column(
    categorical_column: CategoricalColumn, weight_feature_key: str, dtype: str = "float32"
) -> WeightedCategoricalColumn:
    """Attach per-value weights (a parallel feature of the same shape) to a categorical column."""
    _check(
        isinstance(categorical_column, CATEGORICAL_TYPES),
        f"weighted_categorical_column: needs a categorical column, got {categorical_column!r}",
    )
    return WeightedCategoricalColumn(categorical_column, weight_feature_key, dtype)


# --------------------------------------------------------------------------- serialisation

_TYPES = {
    "numeric": NumericColumn,
    "bucketized": BucketizedColumn,
    "vocabulary_list": VocabularyListColumn,
    "vocabulary_from_data": VocabularyFromDataColumn,
    "hash_bucket": HashBucketColumn,
    "identity": IdentityColumn,
    "crossed": CrossedColumn,
    "indicator": IndicatorColumn,
    "embedding": EmbeddingColumn,
    "weighted": WeightedCategoricalColumn,
}
_TYPE_NAMES = {cls: name for name, cls in _TYPES.items()}


def to_dict(column: FeatureColumn) -> dict[str, Any]:
    """The column as plain JSON data; nested columns become nested dicts."""
    out: dict[str, Any] = {"type": _TYPE_NAMES[type(column)]}
    for f in fields(column):
        value = getattr(column, f.name)
        if isinstance(value, tuple) and f.name == "keys":
            value = [k if isinstance(k, str) else to_dict(k) for k in value]
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, CATEGORICAL_TYPES + DENSE_TYPES):
            value = to_dict(value)
        out[f.name] = value
    return out


_CONSTRUCTORS = {
    "numeric": numeric_column,
    "bucketized": bucketized_column,
    "vocabulary_list": categorical_column_with_vocabulary_list,
    "vocabulary_from_data": categorical_column_with_vocabulary_from_data,
    "hash_bucket": categorical_column_with_hash_bucket,
    "identity": categorical_column_with_identity,
    "crossed": crossed_column,
    "indicator": indicator_column,
    "embedding": embedding_column,
    "weighted": weighted_categorical_column,
}
_NESTED = ("source_column", "categorical_column")


def from_dict(data: dict[str, Any]) -> FeatureColumn:
    """Rebuild a column from :func:`to_dict` output, validating it like the constructors do."""
    _check(isinstance(data, dict), f"a feature column must be a mapping, got {data!r}")
    kind = data.get("type")
    _check(
        kind in _CONSTRUCTORS,
        f"unknown feature column type {kind!r}; expected one of {sorted(_CONSTRUCTORS)}",
    )
    kwargs = {k: v for k, v in data.items() if k != "type"}
    for name in _NESTED:
        if name in kwargs:
            kwargs[name] = from_dict(kwargs[name])
    if "keys" in kwargs:
        kwargs["keys"] = [k if isinstance(k, str) else from_dict(k) for k in kwargs["keys"]]
    allowed = {f.name for f in fields(_TYPES[kind])}
    unknown = sorted(set(kwargs) - allowed)
    _check(
        not unknown,
        f"feature column {kind!r}: unknown field(s) {unknown}; allowed {sorted(allowed)}",
    )
    try:
        return _CONSTRUCTORS[kind](**kwargs)
    except TypeError as e:
        raise FeatureColumnError(f"feature column {kind!r}: {e}") from None


# --------------------------------------------------------------------------- graph helpers


def input_keys(column: FeatureColumn) -> list[str]:
    """The raw input features a column reads, in order, without duplicates."""
    if isinstance(column, (NumericColumn, VocabularyListColumn, VocabularyFromDataColumn)):
        keys = [column.key]
    elif isinstance(column, (HashBucketColumn, IdentityColumn)):
        keys = [column.key]
    elif isinstance(column, BucketizedColumn):
        keys = input_keys(column.source_column)
    elif isinstance(column, CrossedColumn):
        keys = [
            k for key in column.keys for k in ([key] if isinstance(key, str) else input_keys(key))
        ]
    elif isinstance(column, WeightedCategoricalColumn):
        keys = input_keys(column.categorical_column) + [column.weight_feature_key]
    else:
        keys = input_keys(column.categorical_column)
    return list(dict.fromkeys(keys))


def walk(columns: Iterable[FeatureColumn]) -> list[FeatureColumn]:
    """Every column and the columns nested in it, each once, children first."""
    seen: dict[FeatureColumn, None] = {}

    def visit(c: FeatureColumn) -> None:
        for child in _children(c):
            visit(child)
        seen.setdefault(c, None)

    for c in columns:
        visit(c)
    return list(seen)


def _children(c: FeatureColumn) -> list[FeatureColumn]:
    if isinstance(c, BucketizedColumn):
        return [c.source_column]
    if isinstance(c, CrossedColumn):
        return [k for k in c.keys if not isinstance(k, str)]
    if isinstance(c, (IndicatorColumn, EmbeddingColumn, WeightedCategoricalColumn)):
        return [c.categorical_column]
    return []


__all__ = [
    "numeric_column",
    "bucketized_column",
    "categorical_column_with_vocabulary_list",
    "categorical_column_with_vocabulary_file",
    "categorical_column_with_vocabulary_from_data",
    "categorical_column_with_hash_bucket",
    "categorical_column_with_identity",
    "crossed_column",
    "indicator_column",
    "embedding_column",
    "weighted_categorical_column",
    "FeatureColumnError",
    "to_dict",
    "from_dict",
]
