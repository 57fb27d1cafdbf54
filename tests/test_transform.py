"""FeatureSpec: fit/transform, every input type, JSON round trip, census, the serving path."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widedeep import feature_column as fc
from widedeep.batch import Batch
from widedeep.datasets.census import build_model_columns, census_spec, load_census
from widedeep.hashing import cross_hash, cross_hash_one
from widedeep.model import ModelConfig, WideDeep
from widedeep.transform import DataError, FeatureSpec, Label, as_table, broadcast


def assert_same(a: Batch, b: Batch) -> None:
    """Byte-identical batches: same fields present, dtypes, shapes and values."""
    for f in fields(Batch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, list):
            assert len(x) == len(y), f.name
            pairs = list(zip(x, y))
        else:
            pairs = [(x, y)]
        for u, v in pairs:
            assert (u is None) == (v is None), f.name
            if u is not None:
                assert u.dtype == v.dtype and u.shape == v.shape, (f.name, u, v)
                assert u.numpy().tobytes() == v.numpy().tobytes(), (f.name, u, v)


def columnar(spec: FeatureSpec, rows: list[dict], **kw) -> Batch:
    """The Arrow path, whatever the size: a Table never takes the row path."""
    return spec.transform(as_table(rows), **kw)


@pytest.fixture(scope="module")
def census():
    train, test = load_census()
    return census_spec().fit(train), train, test


# --------------------------------------------------------------------------- census


def test_census_columns_build_and_encode(census):
    spec, train, test = census
    wide, deep = build_model_columns()
    assert len(wide) == 8 and len(deep) == 10
    batch = spec.transform(test.slice(0, 100))
    assert batch.wide_ids.shape == (100, 8) and batch.wide_ids.dtype == torch.int32
    assert batch.wide_weights is None and batch.indicator_weights is None
    assert batch.indicator_ids.shape == (100, 4)
    assert len(batch.embed_ids) == 1 and batch.embed_ids[0].shape == (100, 1)
    assert batch.dense.shape == (100, 5) and batch.dense.dtype == torch.float32
    assert spec.wide_dim_ == 16 + 7 + 6 + 9 + 1000 + 11 + 1000 + 1000
    assert spec.indicator_dim_ == 9 + 16 + 7 + 6 and spec.dense_dim_ == 5
    assert batch.label.tolist() == [
        float(v == ">50K") for v in test["income_bracket"][:100].to_pylist()
    ]
    assert int(batch.wide_ids.max()) <= spec.wide_dim_
    # the first test row by hand: education 11th (index 2), age 25 -> bucket 2
    row = test.slice(0, 1).to_pylist()[0]
    assert row["education"] == "11th" and row["age"] == 25
    occ = int.from_bytes(
        hashlib.blake2b(row["occupation"].encode(), digest_size=8).digest(), "little"
    )
    assert batch.wide_ids[0, 0] == 1 + 2
    assert batch.wide_ids[0, 4] == 1 + 16 + 7 + 6 + 9 + occ % 1000
    assert batch.wide_ids[0, 5] == 1 + 16 + 7 + 6 + 9 + 1000 + 2
    assert batch.embed_ids[0][0, 0] == 1 + occ % 1000


def test_census_missing_values_encode(census):
    spec, _, test = census
    row = test.slice(0, 1).to_pylist()[0]
    for key in ("occupation", "education", "workclass"):
        for missing in (None, ""):
            one = spec.transform({**row, key: missing}, label=False)
            assert_same(one, columnar(spec, [{**row, key: missing}], label=False))


# --------------------------------------------------------------------------- inputs


def small_spec() -> FeatureSpec:
    v = fc.categorical_column_with_vocabulary_list("k", ["a", "b"], num_oov_buckets=1)
    age = fc.numeric_column("age")
    return FeatureSpec(
        [v, fc.bucketized_column(age, [30]), fc.crossed_column(["k", "c"], 50)],
        [
            age,
            fc.indicator_column(v),
            fc.embedding_column(fc.categorical_column_with_hash_bucket("c", 20), 3),
        ],
        label=Label("y", "binary", ("no", "yes")),
    )


def test_every_input_type_encodes_identically():
    rows = [
        {"k": "a", "c": "x", "age": 20, "y": "no"},
        {"k": "z", "c": "y", "age": 40, "y": "yes"},
        {"k": None, "c": "x", "age": 31, "y": "no"},
    ]
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    spec = small_spec().fit(rows)
    reference = spec.transform(pa.Table.from_pylist(rows))
    inputs = [
        pa.Table.from_pylist(rows),
        pa.RecordBatch.from_pylist(rows),
        pd.DataFrame(rows),
        cols,
        {k: np.array(v, dtype=object if k != "age" else np.int64) for k, v in cols.items()},
        rows,
    ]
    for data in inputs:
        assert_same(spec.transform(data), reference)
    for i, row in enumerate(rows):
        assert_same(spec.transform(row), reference.index(slice(i, i + 1)))


def test_rows_missing_a_key_read_it_as_missing():
    spec = small_spec().fit([{"k": "a", "c": "x", "age": 1, "y": "no"}])
    rows = [{"c": "x", "age": 20}, {"k": "b", "c": "y", "age": 40}]
    batch = spec.transform(rows)
    assert batch.wide_ids[0, 0] == 0 and batch.wide_ids[1, 0] == 2
    with pytest.raises(DataError, match="'k'"):
        spec.transform([{"c": "x", "age": 20}])


def test_unreadable_input_and_mixed_types():
    spec = small_spec().fit([{"k": "a", "c": "x", "age": 1, "y": "no"}])
    with pytest.raises(DataError, match="pyarrow Table"):
        spec.transform(42)
    with pytest.raises(DataError, match="'k'"):
        spec.transform([{"k": "a", "c": "x", "age": 1}, {"k": 3, "c": "x", "age": 1}])


def test_transform_before_fit_says_to_fit():
    with pytest.raises(RuntimeError, match="fit"):
        small_spec().transform({"k": "a"})


def test_label_classes_and_bad_label():
    spec = small_spec().fit([{"k": "a", "c": "x", "age": 1, "y": "no"}])
    batch = spec.transform([{"k": "a", "c": "x", "age": 1, "y": "yes"}])
    assert batch.label.tolist() == [1.0]
    with pytest.raises(DataError, match=r"'y'.*'maybe'"):
        spec.transform([{"k": "a", "c": "x", "age": 1, "y": "maybe"}])
    with pytest.raises(DataError, match="'y'"):
        spec.transform([{"k": "a", "c": "x", "age": 1}], label=True)
    assert spec.transform({"k": "a", "c": "x", "age": 1, "y": "no"}, label=False).label is None


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_identity(tmp_path):
    age = fc.numeric_column("age", normalizer="quantile", num_quantiles=5)
    learned = fc.categorical_column_with_vocabulary_from_data("k", min_count=1)
    spec = FeatureSpec(
        [learned, fc.crossed_column([fc.bucketized_column(age, [30]), "k"], 100)],
        [
            age,
            fc.numeric_column("g", normalizer="standard"),
            fc.embedding_column(learned, 3, "sqrtn"),
        ],
        label=Label("y", "multiclass"),
    )
    data = {
        "age": [20.0, 35.5, 51.0, 18.0, 77.0],
        "g": [0.1, 0.2, 0.3, 0.4, 0.55],
        "k": ["a", "b", "a", "c", "a"],
        "y": ["p", "q", "r", "p", "q"],
    }
    spec.fit(data)
    text = spec.to_json()
    loaded = FeatureSpec.from_json(text)
    assert loaded.to_dict() == spec.to_dict() == json.loads(text)
    assert loaded.to_json() == text
    assert_same(loaded.transform(data), spec.transform(data))
    spec.save(tmp_path / "spec.json")
    assert_same(FeatureSpec.load(tmp_path / "spec.json").transform(data), spec.transform(data))


def test_census_json_round_trip(census):
    spec, _, test = census
    loaded = FeatureSpec.from_json(spec.to_json())
    assert loaded.to_dict() == spec.to_dict()
    assert_same(loaded.transform(test.slice(0, 300)), spec.transform(test.slice(0, 300)))


# --------------------------------------------------------------------------- serving path


def test_python_cross_hash_equals_vectorised():
    rng = np.random.default_rng(0)
    comps = [
        rng.integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2) + np.uint64(1) for _ in range(3)
    ]
    vec = cross_hash(comps, 12345)
    for i in range(50):
        assert cross_hash_one([int(c[i]) for c in comps], 12345) == int(vec[i])


_EDU = ["Bachelors", "HS-grad", "11th", "Masters", "Doctorate"]
_OCC = ["Adm-clerical", "Sales", "Tech-support", "Craft-repair"]
_text = st.text(alphabet="abcXYZ-é? ", max_size=6)


def _census_row():
    return st.fixed_dictionaries(
        {
            "age": st.integers(0, 100),
            "workclass": st.one_of(
                st.sampled_from(["Private", "?", "State-gov"]), _text, st.none()
            ),
            "education": st.one_of(st.sampled_from(_EDU), _text, st.none()),
            "education_num": st.integers(1, 16),
            "marital_status": st.one_of(st.sampled_from(["Divorced", "Widowed"]), _text, st.none()),
            "occupation": st.one_of(st.sampled_from(_OCC), _text, st.none()),
            "relationship": st.one_of(st.sampled_from(["Husband", "Wife"]), _text, st.none()),
            "capital_gain": st.one_of(st.integers(0, 99999), st.floats(0, 1e5)),
            "capital_loss": st.integers(0, 4000),
            "hours_per_week": st.one_of(st.integers(1, 99), st.floats(0.5, 99.5)),
        }
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_census_row(), min_size=1, max_size=6))
def test_row_path_equals_arrow_path_on_census_rows(census, rows):
    spec = census[0]
    # hypothesis may give one row a float and another an int: the Arrow path widens to
    # float64, which the row path reproduces
    assert_same(spec.transform(rows), columnar(spec, rows))
    assert_same(spec.transform(rows[0]), columnar(spec, rows[:1]))


def _multi_spec() -> FeatureSpec:
    vocab = fc.categorical_column_with_vocabulary_list("apps", ["a", "b", "c"], num_oov_buckets=2)
    learned = fc.categorical_column_with_vocabulary_from_data("country", num_oov_buckets=0)
    age = fc.numeric_column("age", default_value=33.0)
    buckets = fc.bucketized_column(age, [18, 30, 50])
    ident = fc.categorical_column_with_identity("slot", 4, default_value=0)
    weighted = fc.weighted_categorical_column(vocab, "apps_w")
    return FeatureSpec(
        [
            vocab,
            learned,
            buckets,
            ident,
            fc.crossed_column(["apps", "country", buckets], 997),
            fc.crossed_column([learned, "city"], 991, hash_key=5),
            fc.numeric_column("score", normalizer="log"),
            weighted,
        ],
        [
            age,
            fc.numeric_column("score", normalizer="log"),
            fc.numeric_column("q", normalizer="quantile", num_quantiles=4, default_value=0.0),
            fc.numeric_column("s", normalizer="standard", shape=2),
            fc.indicator_column(vocab),
            fc.indicator_column(ident),
            fc.embedding_column(weighted, 4, "sqrtn"),
            fc.embedding_column(fc.categorical_column_with_hash_bucket("city", 50), 4, "mean"),
            fc.embedding_column(vocab, 4, "sum"),
        ],
    )


_apps = st.lists(st.one_of(st.sampled_from(["a", "b", "c", "zz", "yy", ""]), st.none()), max_size=4)


@st.composite
def _multi_rows(draw):
    n = draw(st.integers(1, 5))
    rows = []
    for _ in range(n):
        apps = draw(st.one_of(_apps, st.none()))
        rows.append(
            {
                "apps": apps,
                "apps_w": None if apps is None else [draw(st.floats(0.1, 5.0)) for _ in apps],
                "country": draw(
                    st.one_of(st.sampled_from(["us", "fr", "de", "xx", ""]), st.none())
                ),
                "city": draw(st.one_of(st.sampled_from(["p", "q", "r"]), st.none())),
                "age": draw(st.one_of(st.floats(0, 90), st.none())),
                "slot": draw(st.one_of(st.integers(-2, 6), st.none())),
                "score": draw(st.floats(-100, 100)),
                "q": draw(st.one_of(st.floats(-1, 11), st.none())),
                "s": [draw(st.floats(-5, 5)), draw(st.floats(-5, 5))],
            }
        )
    if all(r["apps"] is None for r in rows):  # an all-null column has no list type in Arrow
        rows[0]["apps"], rows[0]["apps_w"] = ["a"], [1.0]
    return rows


@pytest.fixture(scope="module")
def multi_spec():
    train = {
        "apps": [["a"], ["b", "c"], []],
        "apps_w": [[1.0], [2.0, 3.0], []],
        "country": ["us", "fr", "us"],
        "city": ["p", "q", "r"],
        "age": [20.0, 40.0, 60.0],
        "slot": [1, 2, 3],
        "score": [1.0, 10.0, 100.0],
        "q": [0.0, 2.5, 5.0],
        "s": [[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]],
    }
    return _multi_spec().fit(train)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_multi_rows())
def test_row_path_equals_arrow_path_on_multi_valued_rows(multi_spec, rows):
    assert_same(multi_spec.transform(rows), columnar(multi_spec, rows))


def _split(draw, rows: list[dict]) -> tuple[dict, list[dict]]:
    """A ranking request made of ``rows``: the keys drawn as context take the first row's
    values, the others stay on each candidate, and a few candidates override a context key."""
    keys = list(rows[0])
    shared = draw(st.sets(st.sampled_from(keys)))
    context = {k: rows[0][k] for k in shared}
    candidates = []
    for row in rows:
        own = {k: v for k, v in row.items() if k not in shared}
        if shared and draw(st.booleans()):
            k = draw(st.sampled_from(sorted(shared)))
            own[k] = row[k]
        candidates.append(own)
    return context, candidates


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_candidates_with_a_context_encode_as_the_merged_rows(census, multi_spec, data):
    for fitted, rows in (
        (census[0], data.draw(st.lists(_census_row(), min_size=1, max_size=6))),
        (multi_spec, data.draw(_multi_rows())),
    ):
        # read back from JSON: equal columns become separate objects, still encoded once
        for spec in (fitted, FeatureSpec.from_json(fitted.to_json())):
            context, candidates = _split(data.draw, rows)
            try:
                expected = columnar(spec, [{**context, **c} for c in candidates])
            except DataError as e:  # rows the Arrow path refuses: the same error here
                with pytest.raises(DataError) as error:
                    spec.transform_candidates(context, candidates)
                assert str(error.value) == str(e)
                continue
            assert_same(spec.transform_candidates(context, candidates), expected)
            assert_same(spec.transform(broadcast(context, candidates)), expected)


def test_no_candidates_encode_and_score_as_zero_rows(census, multi_spec):
    """A request with an empty candidate list is zero rows: the model scores none."""
    census_spec, _, test = census
    person = {k: test.column(k)[0].as_py() for k in ["age", "education", "occupation"]}
    empty = census_spec.transform(test.slice(0, 0), label=False)
    assert_same(census_spec.transform_candidates(person, []), empty)
    for spec, context in (
        (census_spec, person),
        (multi_spec, {"apps": ["a", "b"], "apps_w": [1.0, 2.0], "country": "us"}),
    ):
        batch = spec.transform_candidates(context, [])
        for f in fields(Batch):
            x = getattr(batch, f.name)
            for tensor in x if isinstance(x, list) else [x]:
                assert tensor is None or tensor.shape[0] == 0, f.name
        assert WideDeep(ModelConfig.from_spec(spec, hidden_units=[4]))(batch).shape[0] == 0


def test_row_path_errors_match_arrow_path(census):
    spec = census[0]
    row = {k: v for k, v in census[2].slice(0, 1).to_pylist()[0].items() if k != "income_bracket"}
    for bad in (
        {**row, "age": None},
        {**row, "age": "old"},
        {k: v for k, v in row.items() if k != "age"},
    ):
        with pytest.raises(DataError) as fast:
            spec.transform(bad)
        with pytest.raises(DataError) as slow:
            columnar(spec, [bad])
        assert str(fast.value) == str(slow.value)
        assert "'age'" in str(fast.value)


def test_row_path_follows_refit(census):
    spec = small_spec()
    row = {"k": "b", "c": "x", "age": 1}
    first = spec.fit([{**row, "y": "no"}]).transform(row)
    learned = FeatureSpec([fc.categorical_column_with_vocabulary_from_data("k", num_oov_buckets=0)])
    assert learned.fit({"k": ["a", "b", "b"]}).transform({"k": "a"}).wide_ids.tolist() == [[2]]
    assert learned.fit({"k": ["a", "a", "b"]}).transform({"k": "a"}).wide_ids.tolist() == [[1]]
    assert_same(first, columnar(spec, [row]))
