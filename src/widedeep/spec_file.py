"""Spec files: a FeatureSpec declared in YAML or JSON, so a user trains without Python.

The format (YAML shown; JSON holds the same structure)::

    label: {key: income_bracket, head: binary, classes: ["<=50K", ">50K"]}
    weight_column: null            # optional: a column of example weights
    columns:                       # name -> declaration; `key` defaults to the name
      age: {type: numeric}
      age_buckets: {type: bucketized, source: age, boundaries: [18, 25, 30]}
      education: {type: vocabulary_list, vocabulary_list: [Bachelors, HS-grad]}
      occupation: {type: hash_bucket, hash_bucket_size: 1000}
      education_x_occupation:
        {type: crossed, keys: [education, occupation], hash_bucket_size: 1000}
    wide: [education, occupation, age_buckets, education_x_occupation]
    deep: [age, {indicator: education}, {embedding: occupation, dimension: 8}]

Column types and their fields (the ``tf.feature_column`` argument names):

- ``numeric``: key, shape, default_value, dtype, normalizer, num_quantiles
- ``bucketized``: source (a declared numeric column), boundaries
- ``vocabulary_list``: key, vocabulary_list, dtype, default_value, num_oov_buckets
- ``vocabulary_file``: key, vocabulary_file (relative to the spec file), vocabulary_size,
  dtype, default_value, num_oov_buckets
- ``vocabulary_from_data``: key, min_count, max_size, num_oov_buckets
- ``hash_bucket``: key, hash_bucket_size, dtype
- ``identity``: key, num_buckets, default_value
- ``crossed``: keys, hash_bucket_size, hash_key
- ``weighted``: categorical (a declared categorical column), weight_feature_key, dtype

The label is ``{key, head: binary|multiclass|regression, classes, output_range}``;
``output_range: [lo, hi]`` (regression only) squashes the predictions into (lo, hi).

A ``crossed`` key is, as in ``tf.feature_column.crossed_column``, a raw feature
(its values are hashed) or a column (its ids are crossed).  A plain name means
the declared column when that column is derived (bucketized, weighted, or a
categorical column whose key differs from its name) and the raw feature
otherwise, so ``keys: [age_buckets, education, occupation]`` reads as the
TensorFlow census example does.  ``{feature: name}`` or ``{column: name}``
says which explicitly.

Errors (unknown fields, unknown names, wrong types) raise one
:class:`FeatureColumnError` naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from . import feature_column as fc
from .feature_column import FeatureColumnError
from .transform import FeatureSpec, Label, label_fields

_OPT = type(None)
_NUM = (int, float)
# type -> field -> accepted Python types (None accepted where listed)
_FIELDS: dict[str, dict[str, tuple]] = {
    "numeric": {
        "key": (str,),
        "shape": (int, list),
        "default_value": (*_NUM, _OPT),
        "dtype": (str,),
        "normalizer": (str, _OPT),
        "num_quantiles": (int, _OPT),
    },
    "bucketized": {"source": (str,), "boundaries": (list,)},
    "vocabulary_list": {
        "key": (str,),
        "vocabulary_list": (list,),
        "dtype": (str, _OPT),
        "default_value": (int,),
        "num_oov_buckets": (int,),
    },
    "vocabulary_file": {
        "key": (str,),
        "vocabulary_file": (str,),
        "vocabulary_size": (int, _OPT),
        "dtype": (str, _OPT),
        "default_value": (int,),
        "num_oov_buckets": (int,),
    },
    "vocabulary_from_data": {
        "key": (str,),
        "min_count": (int,),
        "max_size": (int, _OPT),
        "num_oov_buckets": (int,),
    },
    "hash_bucket": {"key": (str,), "hash_bucket_size": (int,), "dtype": (str,)},
    "identity": {"key": (str,), "num_buckets": (int,), "default_value": (int, _OPT)},
    "crossed": {"keys": (list,), "hash_bucket_size": (int,), "hash_key": (int, _OPT)},
    "weighted": {"categorical": (str,), "weight_feature_key": (str,), "dtype": (str,)},
}
_REQUIRED = {
    "bucketized": ("source", "boundaries"),
    "vocabulary_list": ("vocabulary_list",),
    "vocabulary_file": ("vocabulary_file",),
    "hash_bucket": ("hash_bucket_size",),
    "identity": ("num_buckets",),
    "crossed": ("keys", "hash_bucket_size"),
    "weighted": ("categorical", "weight_feature_key"),
}
_EMBEDDING_FIELDS = {
    "embedding": (str,),
    "dimension": (int,),
    "combiner": (str,),
    "initializer": (str, _OPT),
    "max_norm": (*_NUM, _OPT),
}
_ITEMS = (  # list fields: accepted item types
    ("vocabulary_list", (str, int), "strings or integers"),
    ("boundaries", (int, float), "numbers"),
    ("shape", (int,), "integers"),
)
_TOP = ("label", "weight_column", "columns", "wide", "deep")
_DERIVED = (fc.BucketizedColumn, fc.WeightedCategoricalColumn, fc.CrossedColumn)


def _type_ok(value: Any, types: tuple) -> bool:
    if isinstance(value, bool):  # YAML true/false is no number
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, tuple(t for t in types if t is not _OPT)) or (
        value is None and _OPT in types
    )


def _type_names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", _OPT: "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


class _Loader:
    def __init__(self, path: Path, data: Any) -> None:
        self.path = path
        self.data = data
        self.columns: dict[str, fc.FeatureColumn] = {}
        self.resolving: list[str] = []

    def fail(self, entry: str, problem: str, fix: str) -> FeatureColumnError:
        return FeatureColumnError(f"{self.path}: {entry}: {problem}; {fix}")

    def load(self) -> FeatureSpec:
        data = self.data
        if not isinstance(data, dict):
            raise self.fail(
                "top level", f"expected a mapping, got {type(data).__name__}", "see spec_file docs"
            )
        unknown = [k for k in data if k not in _TOP]
        if unknown:
            raise self.fail("top level", f"unknown field(s) {unknown}", f"use only {list(_TOP)}")
        declared = data.get("columns")
        if not isinstance(declared, dict) or not declared:
            raise self.fail(
                "columns",
                "missing or not a mapping",
                "declare `columns:` as a mapping of name -> {type: ..., ...}",
            )
        for name in declared:
            if not isinstance(name, str):
                raise self.fail("columns", f"name {name!r} is not a string", "quote it")
        for name in declared:
            self.column(name)
        wide = [self.wide_entry(i, e) for i, e in enumerate(self.list_of("wide"))]
        deep = [self.deep_entry(i, e) for i, e in enumerate(self.list_of("deep"))]
        label = self.label(data.get("label"))
        weight = data.get("weight_column")
        if weight is not None and not isinstance(weight, str):
            raise self.fail("weight_column", f"{weight!r} is not a string", "name a data column")
        try:
            return FeatureSpec(wide, deep, label=label, weight_column=weight)
        except FeatureColumnError as e:
            raise self.fail("wide/deep", str(e), "fix the lists `wide:` and `deep:`") from None

    def list_of(self, field: str) -> list:
        value = self.data.get(field, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list, got {value!r}", f"write `{field}: [...]`")
        return value

    def label(self, value: Any) -> Label | None:
        if value is None or isinstance(value, str):
            return None if value is None else Label(value)
        if not isinstance(value, dict):
            raise self.fail("label", f"{value!r} is not a mapping", "write {key: ..., head: ...}")
        unknown = [k for k in value if k not in ("key", "head", "classes", "output_range")]
        if unknown or not isinstance(value.get("key"), str):
            raise self.fail(
                "label",
                f"unknown field(s) {unknown}" if unknown else "`key` (a string) is required",
                "write {key: <column>, head: binary|multiclass|regression, classes: [...]} "
                "(a regression may add output_range: [lo, hi])",
            )
        classes = value.get("classes")
        if classes is not None and not isinstance(classes, list):
            raise self.fail("label", f"classes {classes!r} is not a list", "write classes: [a, b]")
        try:
            return Label(
                value["key"], value.get("head", "binary"), classes, value.get("output_range")
            )
        except FeatureColumnError as e:
            raise self.fail("label", str(e), "fix the label") from None

    # ----------------------------------------------------------------- columns

    def reference(self, entry: str, name: Any, what: str) -> fc.FeatureColumn:
        if not isinstance(name, str) or name not in self.data["columns"]:
            known = sorted(self.data["columns"])
            raise self.fail(
                entry,
                f"{what} {name!r} is not a declared column",
                f"declare it or use one of {known}",
            )
        return self.column(name)

    def column(self, name: str) -> fc.FeatureColumn:
        if name in self.columns:
            return self.columns[name]
        entry = f"columns.{name}"
        if name in self.resolving:
            cycle = " -> ".join(self.resolving[self.resolving.index(name) :] + [name])
            raise self.fail(
                entry, f"the columns refer to each other in a cycle ({cycle})", "break it"
            )
        self.resolving.append(name)
        try:
            column = self.build(entry, name, self.data["columns"][name])
        finally:
            self.resolving.pop()
        self.columns[name] = column
        return column

    def build(self, entry: str, name: str, decl: Any) -> fc.FeatureColumn:
        if not isinstance(decl, dict):
            raise self.fail(entry, f"expected a mapping, got {decl!r}", "write {type: ..., ...}")
        kind = decl.get("type")
        if kind not in _FIELDS:
            raise self.fail(
                entry, f"unknown or missing type {kind!r}", f"use one of {sorted(_FIELDS)}"
            )
        allowed = _FIELDS[kind]
        args = {k: v for k, v in decl.items() if k != "type"}
        unknown = [k for k in args if k not in allowed]
        if unknown:
            raise self.fail(
                entry, f"unknown field(s) {unknown} for type {kind!r}", f"use {sorted(allowed)}"
            )
        missing = [k for k in _REQUIRED.get(kind, ()) if k not in args]
        if missing:
            raise self.fail(entry, f"missing field(s) {missing}", f"add them to the {kind} column")
        for field, value in args.items():
            if not _type_ok(value, allowed[field]):
                raise self.fail(
                    entry,
                    f"field {field!r} is {value!r}",
                    f"give {_type_names(allowed[field])}",
                )
        for field, item_types, what in _ITEMS:
            for item in args.get(field) or ():
                if isinstance(item, bool) or not isinstance(item, item_types):
                    raise self.fail(
                        entry,
                        f"{field} holds {item!r} ({type(item).__name__})",
                        f"give {what} (quote values such as 'yes', 'no', 'on', '1.0')",
                    )
        if "key" in allowed:
            args.setdefault("key", name)
        try:
            return self.construct(entry, kind, args)
        except FeatureColumnError as e:
            raise self.fail(entry, str(e), "fix the declaration") from None

    def construct(self, entry: str, kind: str, args: dict[str, Any]) -> fc.FeatureColumn:
        if kind == "numeric":
            return fc.numeric_column(**args)
        if kind == "bucketized":
            source = self.reference(entry, args["source"], "source")
            if not isinstance(source, fc.NumericColumn):
                raise self.fail(
                    entry, f"source {args['source']!r} is not numeric", "name a numeric column"
                )
            return fc.bucketized_column(source, args["boundaries"])
        if kind == "vocabulary_list":
            return fc.categorical_column_with_vocabulary_list(**args)
        if kind == "vocabulary_file":
            file = Path(args.pop("vocabulary_file"))
            if not file.is_absolute():
                file = self.path.parent / file
            return fc.categorical_column_with_vocabulary_file(vocabulary_file=str(file), **args)
        if kind == "vocabulary_from_data":
            return fc.categorical_column_with_vocabulary_from_data(**args)
        if kind == "hash_bucket":
            return fc.categorical_column_with_hash_bucket(**args)
        if kind == "identity":
            return fc.categorical_column_with_identity(**args)
        if kind == "weighted":
            inner = self.categorical(entry, args.pop("categorical"), "categorical")
            return fc.weighted_categorical_column(inner, **args)
        keys = [self.cross_key(entry, k) for k in args.pop("keys")]
        return fc.crossed_column(keys, **args)

    def categorical(self, entry: str, name: Any, what: str) -> fc.CategoricalColumn:
        column = self.reference(entry, name, what)
        if not isinstance(column, fc.CATEGORICAL_TYPES):
            raise self.fail(
                entry,
                f"{what} {name!r} is a numeric column",
                "name a categorical or bucketized column",
            )
        return column

    def cross_key(self, entry: str, key: Any) -> str | fc.CategoricalColumn:
        if isinstance(key, dict) and len(key) == 1 and "feature" in key:
            if not isinstance(key["feature"], str):
                raise self.fail(
                    entry, f"key {key!r}: feature is not a string", "name a data column"
                )
            return key["feature"]
        if isinstance(key, dict) and len(key) == 1 and "column" in key:
            return self.categorical(entry, key["column"], "cross key")
        if not isinstance(key, str):
            raise self.fail(
                entry,
                f"cross key {key!r} is not a name",
                "give a feature or column name, {feature: name} or {column: name}",
            )
        if key in self.data["columns"]:
            column = self.column(key)
            if isinstance(column, _DERIVED) or getattr(column, "key", key) != key:
                return self.categorical(entry, key, "cross key")
        return key

    # ----------------------------------------------------------------- wide / deep

    def wide_entry(self, i: int, entry: Any) -> fc.FeatureColumn:
        return self.reference(f"wide[{i}]", entry, "wide entry")

    def deep_entry(self, i: int, entry: Any) -> fc.FeatureColumn:
        where = f"deep[{i}]"
        if isinstance(entry, str):
            column = self.reference(where, entry, "deep entry")
            if not isinstance(column, fc.NumericColumn):
                raise self.fail(
                    where,
                    f"{entry!r} is categorical",
                    f"write {{indicator: {entry}}} or {{embedding: {entry}, dimension: 8}}",
                )
            return column
        if isinstance(entry, dict) and set(entry) == {"indicator"}:
            return fc.indicator_column(self.categorical(where, entry["indicator"], "indicator"))
        if isinstance(entry, dict) and "embedding" in entry:
            unknown = [k for k in entry if k not in _EMBEDDING_FIELDS]
            if unknown:
                raise self.fail(
                    where, f"unknown field(s) {unknown}", f"use {sorted(_EMBEDDING_FIELDS)}"
                )
            if "dimension" not in entry:
                raise self.fail(where, "embedding needs `dimension`", "add dimension: 8 (say)")
            for field, value in entry.items():
                if not _type_ok(value, _EMBEDDING_FIELDS[field]):
                    raise self.fail(
                        where,
                        f"field {field!r} is {value!r}",
                        f"give {_type_names(_EMBEDDING_FIELDS[field])}",
                    )
            args = {k: v for k, v in entry.items() if k != "embedding"}
            inner = self.categorical(where, entry["embedding"], "embedding")
            try:
                return fc.embedding_column(inner, **args)
            except FeatureColumnError as e:
                raise self.fail(where, str(e), "fix the embedding") from None
        raise self.fail(
            where,
            f"cannot read {entry!r}",
            "give a numeric column name, {indicator: name} or {embedding: name, dimension: n}",
        )


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FeatureColumnError(f"{path}: cannot read the spec file ({e})") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise FeatureColumnError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({e}); "
            "fix the syntax"
        ) from None


def load_spec_file(path: str | Path) -> FeatureSpec:
    """An unfitted :class:`FeatureSpec` from a YAML (``.yaml``/``.yml``) or JSON spec file."""
    path = Path(path)
    return _Loader(path, _read(path)).load()


# --------------------------------------------------------------------------- dump


def spec_file_dict(spec: FeatureSpec) -> dict[str, Any]:
    """The declaration of ``spec`` in the spec-file format (fitted state left out)."""
    names: dict[fc.FeatureColumn, str] = {}
    used: set[str] = set()
    for column in fc.walk(
        [
            c.categorical_column if isinstance(c, fc.DENSE_TYPES[1:]) else c
            for c in spec.deep_columns
        ]
        + list(spec.wide_columns)
    ):
        if column in names:
            continue
        name, i = column.name, 2
        while name in used:
            name, i = f"{column.name}_{i}", i + 1
        names[column] = name
        used.add(name)

    def derived(column: fc.FeatureColumn) -> bool:
        return isinstance(column, _DERIVED) or getattr(column, "key", None) != names[column]

    derived_names = {name for column, name in names.items() if derived(column)}

    def declare(column: fc.FeatureColumn) -> dict[str, Any]:
        d = _without_defaults(column, names[column])
        if isinstance(column, fc.BucketizedColumn):
            return {
                "type": "bucketized",
                "source": names[column.source_column],
                "boundaries": d["boundaries"],
            }
        if isinstance(column, fc.WeightedCategoricalColumn):
            return {
                "type": "weighted",
                "categorical": names[column.categorical_column],
                "weight_feature_key": column.weight_feature_key,
                "dtype": column.dtype,
            }
        if isinstance(column, fc.CrossedColumn):
            keys = []
            for k in column.keys:
                if isinstance(k, str):
                    keys.append({"feature": k} if k in derived_names else k)
                else:
                    keys.append(names[k] if derived(k) else {"column": names[k]})
            d["keys"] = keys
        return d

    def deep(column: fc.FeatureColumn) -> Any:
        if isinstance(column, fc.IndicatorColumn):
            return {"indicator": names[column.categorical_column]}
        if isinstance(column, fc.EmbeddingColumn):
            d = _without_defaults(column, "")
            d.pop("type")
            d.pop("categorical_column")
            return {"embedding": names[column.categorical_column], **d}
        return names[column]

    label = spec.label
    return {
        "label": None if label is None else label_fields(label),
        "weight_column": spec.weight_column,
        "columns": {name: declare(column) for column, name in names.items()},
        "wide": [names[c] for c in spec.wide_columns],
        "deep": [deep(c) for c in spec.deep_columns],
    }


def _without_defaults(column: fc.FeatureColumn, name: str) -> dict[str, Any]:
    """:func:`fc.to_dict` without the fields left at their defaults (and ``key`` == name)."""
    d = fc.to_dict(column)
    for f in fields(column):
        default = f.default
        if default is MISSING:
            continue
        value = d.get(f.name)
        if value == default or (isinstance(default, tuple) and value == list(default)):
            d.pop(f.name)
    if d.get("key") == name:
        d.pop("key")
    return d


def dump_spec_file(spec: FeatureSpec, path: str | Path) -> None:
    """Write the declaration of ``spec`` as YAML (``.yaml``/``.yml``) or JSON (other suffixes)."""
    path = Path(path)
    data = spec_file_dict(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)
        path.write_text(text, encoding="utf-8")
    else:
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


__all__ = ["load_spec_file", "dump_spec_file", "spec_file_dict"]
