"""Spec files: YAML / JSON declarations load to the same FeatureSpec as the Python API."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import yaml

from widedeep import feature_column as fc
from widedeep.datasets.census import census_spec
from widedeep.feature_column import FeatureColumnError
from widedeep.spec_file import dump_spec_file, load_spec_file
from widedeep.transform import DataError, FeatureSpec, Label


def census_preset():
    return resources.files("widedeep").joinpath("presets/census_reference.yaml")


def test_census_reference_preset_equals_census_spec():
    with resources.as_file(census_preset()) as path:
        spec = load_spec_file(path)
    assert not spec.is_fitted
    assert spec.to_dict() == census_spec().to_dict()


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_dump_then_load_is_identity(tmp_path, suffix):
    spec = census_spec()
    path = tmp_path / f"census{suffix}"
    dump_spec_file(spec, path)
    if suffix == ".json":
        json.loads(path.read_text())  # really JSON
    assert load_spec_file(path).to_dict() == spec.to_dict()


def test_dump_load_every_column_type(tmp_path):
    vocab = fc.categorical_column_with_vocabulary_list("edu", ["a", "b"], num_oov_buckets=2)
    learned = fc.categorical_column_with_vocabulary_from_data("apps", min_count=3, max_size=9)
    age = fc.numeric_column("age", default_value=30, normalizer="quantile", num_quantiles=4)
    buckets = fc.bucketized_column(age, [18, 40])
    ident = fc.categorical_column_with_identity("slot", 7, default_value=0)
    weighted = fc.weighted_categorical_column(learned, "apps_w")
    spec = FeatureSpec(
        [
            vocab,
            buckets,
            ident,
            weighted,
            fc.crossed_column([vocab, "edu", buckets, "occ"], 100, hash_key=4),
            fc.numeric_column("score", shape=2),
        ],
        [
            age,
            fc.numeric_column("score", shape=2, normalizer="standard"),
            fc.indicator_column(ident),
            fc.embedding_column(weighted, 5, "sqrtn", "zeros", max_norm=2.0),
        ],
        label=Label("y", "multiclass"),
        weight_column="w",
    )
    for name in ("spec.yaml", "spec.json"):
        dump_spec_file(spec, tmp_path / name)
        assert load_spec_file(tmp_path / name).to_dict() == spec.to_dict()
    text = (tmp_path / "spec.yaml").read_text()
    assert "{column: edu}" in text  # the vocabulary column, not the raw feature 'edu'


def test_output_range_round_trips_and_stays_out_when_unset(tmp_path):
    data = _with(label={"key": "y", "head": "regression", "output_range": [1, 5]})
    spec = load_spec_file(write(tmp_path, data))
    assert spec.label.output_range == (1.0, 5.0)
    dump_spec_file(spec, tmp_path / "again.yaml")
    assert load_spec_file(tmp_path / "again.yaml").label == spec.label
    assert FeatureSpec.from_json(spec.to_json()).label == spec.label
    assert "output_range" not in census_spec().to_json()  # specs without one are unchanged
    rows = {"age": [1.0, 2.0], "occ": ["x", "y"], "edu": ["a", "b"], "y": [1.0, 5.0]}
    assert spec.fit(rows).transform(rows).label.tolist() == [1.0, 5.0]  # the bounds are in
    rows["y"] = [1.0, 7.5]
    with pytest.raises(DataError, match=r"7.5 at row 1 is outside .*output_range \[1.0, 5.0\]"):
        spec.transform(rows)


def write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


BASE = {
    "label": "y",
    "columns": {
        "age": {"type": "numeric"},
        "occ": {"type": "hash_bucket", "hash_bucket_size": 10},
        "edu": {"type": "vocabulary_list", "vocabulary_list": ["a", "b"]},
    },
    "wide": ["occ", "edu"],
    "deep": ["age", {"embedding": "occ", "dimension": 4}],
}


def test_a_minimal_file_loads_and_trains(tmp_path):
    spec = load_spec_file(write(tmp_path, BASE))
    data = {"age": [1.0, 2.0], "occ": ["x", "y"], "edu": ["a", "q"], "y": [0, 1]}
    batch = spec.fit(data).transform(data)
    assert batch.wide_ids.shape == (2, 2) and batch.label.tolist() == [0.0, 1.0]


def test_vocabulary_file_is_relative_to_the_spec_file(tmp_path):
    (tmp_path / "edu.txt").write_text("a\nb\nc\n")
    data = {
        **BASE,
        "columns": {
            **BASE["columns"],
            "edu": {"type": "vocabulary_file", "vocabulary_file": "edu.txt"},
        },
    }
    spec = load_spec_file(write(tmp_path, data))
    assert spec.wide_columns[1].vocabulary_list == ("a", "b", "c")


def _with(**changes):
    data = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for p in parents:
            target = target[p]
        target[last] = value
    return data


@pytest.mark.parametrize(
    "data, words",
    [
        (_with(colums={}), ["top level", "colums"]),
        (_with(columns__age={"type": "numerik"}), ["columns.age", "numerik", "numeric"]),
        (_with(columns__age={"type": "numeric", "shap": 2}), ["columns.age", "shap", "shape"]),
        (
            _with(columns__occ={"type": "hash_bucket", "hash_bucket_size": "ten"}),
            ["columns.occ", "ten", "integer"],
        ),
        (_with(columns__occ={"type": "hash_bucket", "hash_bucket_size": 0}), ["columns.occ", "0"]),
        (_with(columns__occ={"type": "hash_bucket"}), ["columns.occ", "hash_bucket_size"]),
        (
            _with(columns__edu={"type": "vocabulary_list", "vocabulary_list": []}),
            ["columns.edu", "empty"],
        ),
        (
            _with(columns__edu={"type": "vocabulary_list", "vocabulary_list": [True, "b"]}),
            ["columns.edu", "True", "quote"],
        ),
        (
            _with(columns__b={"type": "bucketized", "source": "agee", "boundaries": [1]}),
            ["columns.b", "agee", "age"],
        ),
        (
            _with(columns__b={"type": "bucketized", "source": "age", "boundaries": [3, 1]}),
            ["columns.b", "sorted"],
        ),
        (
            _with(columns__b={"type": "bucketized", "source": "occ", "boundaries": [1]}),
            ["columns.b", "occ", "numeric"],
        ),
        (_with(wide=["occ", "nope"]), ["wide[1]", "nope"]),
        (_with(deep=["age", "occ"]), ["deep[1]", "occ", "indicator"]),
        (_with(deep=[{"embedding": "occ"}]), ["deep[0]", "dimension"]),
        (_with(deep=[{"embedding": "occ", "dimension": 4, "combiner": "max"}]), ["deep[0]", "max"]),
        (_with(deep=[{"indicator": "age"}]), ["deep[0]", "age", "numeric"]),
        (
            _with(
                columns__x={
                    "type": "crossed",
                    "keys": ["occ", {"column": "zz"}],
                    "hash_bucket_size": 9,
                }
            ),
            ["columns.x", "zz"],
        ),
        (
            _with(columns__x={"type": "crossed", "keys": ["a", 3], "hash_bucket_size": 9}),
            ["columns.x", "3"],
        ),
        (_with(label={"key": "y", "head": "ordinal"}), ["label", "ordinal"]),
        (_with(label={"key": "y", "output_range": [0, 1]}), ["label", "binary", "regression"]),
        (
            _with(label={"key": "y", "head": "regression", "output_range": [5, 1]}),
            ["label", "lo < hi", "[5, 1]"],
        ),
        (
            _with(label={"key": "y", "head": "regression", "output_range": [1, "5"]}),
            ["label", "finite numbers"],
        ),
        (
            _with(label={"key": "y", "head": "regression", "output_range": [1, 2, 3]}),
            ["label", "output_range: [lo, hi]"],
        ),
        (
            _with(
                columns__p={"type": "bucketized", "source": "q", "boundaries": [1]},
                columns__q={"type": "weighted", "categorical": "p", "weight_feature_key": "w"},
            ),
            ["cycle"],
        ),
    ],
)
def test_bad_files_name_the_file_entry_and_fix(tmp_path, data, words):
    path = write(tmp_path, data)
    with pytest.raises(FeatureColumnError) as e:
        load_spec_file(path)
    message = str(e.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_unreadable_or_malformed_file(tmp_path):
    with pytest.raises(FeatureColumnError, match="missing.yaml"):
        load_spec_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FeatureColumnError, match="bad.json.*JSON"):
        load_spec_file(bad)
