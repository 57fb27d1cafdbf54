"""Feature columns: declarations, their errors, and each column type's encoding by hand."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from widedeep import feature_column as fc
from widedeep.feature_column import FeatureColumnError
from widedeep.transform import DataError, FeatureSpec

MASK = (1 << 64) - 1


def blake(value: str) -> int:
    """The documented string hash, computed independently of widedeep.hashing."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def cross(components: list[int], size: int, hash_key: int | None = None) -> int:
    """The documented cross combine: h = mix(h * golden ^ c), seeded."""
    h = 0x5EEDC0DE0FC0551 if hash_key is None else hash_key
    for c in components:
        h = mix(((h * 0x9E3779B97F4A7C15) & MASK) ^ c)
    return h % size


def wide(columns, data, fit=None):
    spec = FeatureSpec(columns).fit(data if fit is None else fit)
    return spec.transform(data)


def rows_of(ids: torch.Tensor) -> list[list[int]]:
    """Non-padding ids of each row, sorted (order inside a row carries no meaning)."""
    return [sorted(int(i) for i in row if i != 0) for row in ids]


# --------------------------------------------------------------------------- declarations


def test_tf_argument_names_port_unchanged():
    age = fc.numeric_column("age")
    buckets = fc.bucketized_column(source_column=age, boundaries=[18, 25])
    edu = fc.categorical_column_with_vocabulary_list(
        key="education", vocabulary_list=["a", "b"], default_value=-1, num_oov_buckets=0
    )
    occ = fc.categorical_column_with_hash_bucket(key="occupation", hash_bucket_size=10)
    x = fc.crossed_column(keys=[buckets, "education", "occupation"], hash_bucket_size=10)
    emb = fc.embedding_column(categorical_column=occ, dimension=8, combiner="sqrtn")
    ind = fc.indicator_column(categorical_column=edu)
    ident = fc.categorical_column_with_identity(key="id", num_buckets=4, default_value=0)
    weighted = fc.weighted_categorical_column(categorical_column=edu, weight_feature_key="w")
    assert buckets.name == "age_bucketized"
    assert x.name == "age_bucketized_X_education_X_occupation"
    assert emb.name == "occupation_embedding" and ind.name == "education_indicator"
    assert ident.num_buckets == 4 and weighted.weight_feature_key == "w"


@pytest.mark.parametrize(
    "make, names",
    [
        (lambda: fc.bucketized_column(fc.numeric_column("age"), [30, 18]), ["age", "30", "18"]),
        (lambda: fc.bucketized_column(fc.numeric_column("age"), [1, 1]), ["age", "[1.0, 1.0]"]),
        (lambda: fc.categorical_column_with_hash_bucket("occ", 0), ["occ", "0"]),
        (lambda: fc.categorical_column_with_hash_bucket("occ", -3), ["occ", "-3"]),
        (lambda: fc.crossed_column(["a", "b"], 0), ["hash_bucket_size", "0"]),
        (lambda: fc.categorical_column_with_vocabulary_list("edu", []), ["edu", "empty"]),
        (lambda: fc.numeric_column("x", normalizer="minmax"), ["x", "minmax"]),
        (lambda: fc.embedding_column(fc.numeric_column("x"), 3), ["embedding_column", "x"]),
        (
            lambda: fc.crossed_column([fc.categorical_column_with_hash_bucket("o", 5), "b"], 9),
            ["o", "hashed"],
        ),
    ],
)
def test_bad_declarations_raise_one_clear_value_error(make, names):
    with pytest.raises(FeatureColumnError) as e:
        make()
    assert isinstance(e.value, ValueError)
    for name in names:
        assert name in str(e.value)


def test_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\nc\n")
    col = fc.categorical_column_with_vocabulary_file("k", str(path), vocabulary_size=2)
    assert col.vocabulary_list == ("a", "b")
    with pytest.raises(FeatureColumnError, match="missing.txt"):
        fc.categorical_column_with_vocabulary_file("k", str(tmp_path / "missing.txt"))


def test_to_dict_from_dict_round_trip():
    age = fc.numeric_column("age", default_value=0, normalizer="quantile", num_quantiles=4)
    cols = [
        fc.bucketized_column(age, [1, 2]),
        fc.crossed_column([fc.bucketized_column(age, [1, 2]), "b"], 7, hash_key=3),
        fc.embedding_column(fc.categorical_column_with_vocabulary_from_data("v", 2), 4, "sum"),
        fc.weighted_categorical_column(fc.categorical_column_with_identity("i", 5), "w"),
    ]
    for c in cols:
        assert fc.from_dict(fc.to_dict(c)) == c
    with pytest.raises(FeatureColumnError, match="bogus"):
        fc.from_dict({**fc.to_dict(age), "bogus": 1})


# --------------------------------------------------------------------------- numeric


def test_numeric_raw_standard_log_and_quantile_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    cols = [
        fc.numeric_column("a"),
        fc.numeric_column("b", normalizer="standard"),
        fc.numeric_column("c", normalizer="log"),
        fc.numeric_column("d", normalizer="quantile", num_quantiles=4),
    ]
    data = {"a": x, "b": x, "c": [-3.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0], "d": x}
    spec = FeatureSpec((), cols).fit(data)
    # quantiles of 1..8 at 1/4, 2/4, 3/4 (linear interpolation): 2.75, 4.5, 6.25
    assert spec.state_["numeric:d:quantile4"]["boundaries"] == [[2.75, 4.5, 6.25]]
    test = {"a": [1.0, 2.0], "b": [1.0, 4.5], "c": [-3.0, 9.0], "d": [2.0, 4.5]}
    dense = spec.transform(test).dense
    mean, std = 4.5, math.sqrt(sum((v - 4.5) ** 2 for v in x) / 8)
    expected = [
        [1.0, (1.0 - mean) / std, -math.log(4.0), 0.0],  # 2.0 is in the 1st quantile -> 0
        [2.0, 0.0, math.log(10.0), 2 / 3],  # 4.5 equals the 2nd boundary: 3rd quantile
    ]
    torch.testing.assert_close(dense, torch.tensor(expected, dtype=torch.float32))
    q = spec.transform({"a": [0.0] * 4, "b": [0.0] * 4, "c": [0.0] * 4, "d": [-5, 3, 7, 99]})
    assert q.dense[:, 3].tolist() == pytest.approx([0.0, 1 / 3, 1.0, 1.0])


def test_numeric_list_shape():
    spec = FeatureSpec((), [fc.numeric_column("v", shape=3), fc.numeric_column("s")])
    spec.fit({"v": [[1, 2, 3], [4, 5, 6]], "s": [7, 8]})
    batch = spec.transform([{"v": [1, 2, 3], "s": 7}, {"v": [4, 5, 6], "s": 8}])
    assert batch.dense.tolist() == [[1, 2, 3, 7], [4, 5, 6, 8]]
    with pytest.raises(DataError, match=r"'v'.*row 1 has 2 values"):
        spec.transform({"v": [[1, 2, 3], [4, 5]], "s": [1, 2]})


def test_missing_numeric_uses_default_or_names_column_and_row():
    spec = FeatureSpec((), [fc.numeric_column("age", default_value=-1)]).fit({"age": [1.0]})
    data = {"age": [3.0, None, float("nan")]}
    assert spec.transform(data).dense[:, 0].tolist() == [3.0, -1.0, -1.0]
    strict = FeatureSpec((), [fc.numeric_column("age")]).fit({"age": [1.0]})
    for bad in ({"age": [3.0, None]}, {"age": [3.0, float("nan")]}, [{"age": 3}, {"age": None}]):
        with pytest.raises(DataError) as e:
            strict.transform(bad)
        assert "'age'" in str(e.value) and "row 1" in str(e.value)


def test_string_in_numeric_column_names_column_value_and_row():
    spec = FeatureSpec((), [fc.numeric_column("age")]).fit({"age": [1.0]})
    with pytest.raises(DataError) as e:
        spec.transform({"age": ["3", "forty"]})
    assert "'age'" in str(e.value) and "'forty'" in str(e.value) and "row 1" in str(e.value)
    with pytest.raises(DataError, match="'age'"):
        spec.transform({"age": "forty"})  # one row dict, also through the serving path
    with pytest.raises(DataError, match="'age'"):
        spec.transform([{"age": 3}, {"age": "x"}])


# --------------------------------------------------------------------------- bucketized


def test_bucket_edges_go_to_the_upper_bucket():
    col = fc.bucketized_column(fc.numeric_column("x"), [0, 10, 20])
    x = [-1.0, 0.0, 5.0, 9.999, 10.0, 20.0, 1e9]
    ids = wide([col], {"x": x}).wide_ids[:, 0].tolist()
    assert ids == [1 + b for b in [0, 1, 1, 1, 2, 3, 3]]


def test_bucketized_list_numeric_gives_one_id_per_value():
    col = fc.bucketized_column(fc.numeric_column("x", shape=2), [0, 10])
    batch = wide([col], {"x": [[-1, 10], [5, 5]]})
    # value j's bucket b gets id j * 3 + b (then + 1 for padding)
    assert batch.wide_ids.tolist() == [[1, 6], [2, 5]]


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_list_oov_default_and_buckets():
    v = ["a", "b", "c"]
    data = {"k": ["b", "z", None, "", "a", "y"]}
    plain = wide([fc.categorical_column_with_vocabulary_list("k", v)], data)
    assert plain.wide_ids[:, 0].tolist() == [2, 0, 0, 0, 1, 0]
    default = wide([fc.categorical_column_with_vocabulary_list("k", v, default_value=2)], data)
    assert default.wide_ids[:, 0].tolist() == [2, 3, 0, 0, 1, 3]
    oov = FeatureSpec([fc.categorical_column_with_vocabulary_list("k", v, num_oov_buckets=2)])
    assert oov.wide_dim_ == 5
    ids = oov.fit(data).transform(data).wide_ids[:, 0].tolist()
    assert ids == [2, 1 + 3 + blake("z") % 2, 0, 0, 1, 1 + 3 + blake("y") % 2]


def test_integer_vocabulary_matches_integer_data():
    col = fc.categorical_column_with_vocabulary_list("k", [3, 7], dtype="int64")
    assert wide([col], {"k": [7, 3, 5]}).wide_ids[:, 0].tolist() == [2, 1, 0]


def test_vocabulary_from_data_min_count_order_and_max_size():
    data = {"k": ["b", "a", "b", "c", "a", "d", "c", "c", "", None]}
    col = fc.categorical_column_with_vocabulary_from_data("k", min_count=2, num_oov_buckets=0)
    spec = FeatureSpec([col]).fit(data)
    # counts c:3, a:2, b:2, d:1 -> most frequent first, ties by value; d is below min_count
    assert spec.state_["vocabulary_from_data:k"] == {"vocabulary": ["c", "a", "b"]}
    assert spec.transform({"k": ["c", "a", "b", "d"]}).wide_ids[:, 0].tolist() == [1, 2, 3, 0]
    capped = fc.categorical_column_with_vocabulary_from_data("k", min_count=1, max_size=2)
    spec = FeatureSpec([capped]).fit(data)
    assert spec.state_["vocabulary_from_data:k"]["vocabulary"] == ["c", "a"]
    assert spec.wide_dim_ == 3  # two values + one oov bucket
    assert spec.transform({"k": ["d"]}).wide_ids.tolist() == [[3]]
    with pytest.raises(DataError, match=r"'k'.*min_count=5"):
        FeatureSpec([fc.categorical_column_with_vocabulary_from_data("k", 5)]).fit(data)


# --------------------------------------------------------------------------- hash / identity


def test_hash_bucket_equals_independent_blake2b():
    values = ["Adm-clerical", "Exec-managerial", "ünïcödé", "42", ""]
    ids = wide([fc.categorical_column_with_hash_bucket("k", 1000)], {"k": values})
    assert ids.wide_ids[:, 0].tolist() == [1 + blake(v) % 1000 for v in values[:-1]] + [0]
    ints = wide([fc.categorical_column_with_hash_bucket("k", 97, dtype="int64")], {"k": [42, 7]})
    assert ints.wide_ids[:, 0].tolist() == [1 + blake("42") % 97, 1 + blake("7") % 97]


def test_hash_ids_do_not_depend_on_pythonhashseed():
    # the encoder's ids are the documented formula (computed here with hashlib) ...
    keys, others = ["a", "b", "ü"], ["x", "y", "z"]
    expected = [
        [1 + blake(k) % 1000, 1001 + cross([blake(k), blake(j)], 1000)]
        for k, j in zip(keys, others)
    ]
    here = [
        fc.categorical_column_with_hash_bucket("k", 1000),
        fc.crossed_column(["k", "j"], 1000),
    ]
    data = {"k": keys, "j": others}
    assert FeatureSpec(here).fit(data).transform(data).wide_ids.tolist() == expected
    # ... and the hashing module the encoder calls gives the same values in a process with
    # another PYTHONHASHSEED (this one's is random unless set); it does not import torch
    code = (
        "from widedeep.hashing import cross_hash, hash_strings;"
        f"k = hash_strings({keys!r}); j = hash_strings({others!r});"
        "print([[1 + int(a) % 1000, 1001 + int(c) % 1000]"
        " for a, c in zip(k, cross_hash([k, j]))])"
    )
    seed = "54321" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(expected)


def test_identity_in_range_out_of_range_and_default():
    data = {"i": [0, 3, 4, -1, None]}
    plain = wide([fc.categorical_column_with_identity("i", 4)], data)
    assert plain.wide_ids[:, 0].tolist() == [1, 4, 0, 0, 0]
    default = wide([fc.categorical_column_with_identity("i", 4, default_value=2)], data)
    assert default.wide_ids[:, 0].tolist() == [1, 4, 3, 3, 0]


# --------------------------------------------------------------------------- crosses


def test_cross_of_two_and_three_columns_matches_documented_hash():
    age = fc.numeric_column("age")
    buckets = fc.bucketized_column(age, [18, 30])
    two = fc.crossed_column(["edu", "occ"], 100)
    three = fc.crossed_column([buckets, "edu", "occ"], 50, hash_key=7)
    data = {"age": [17.0, 30.0, 40.0], "edu": ["BS", "MS", None], "occ": ["x", "y", "x"]}
    batch = wide([two, three], data)
    got = batch.wide_ids.tolist()
    for row, (a, e, o) in enumerate(zip([0, 2, 2], data["edu"], data["occ"])):
        if e is None:  # a missing component: the cross has no id
            assert got[row] == [0, 0]
            continue
        assert got[row] == [
            1 + cross([blake(e), blake(o)], 100),
            101 + cross([a, blake(e), blake(o)], 50, hash_key=7),
        ]


def test_cross_key_order_matters_and_hash_key_changes_ids():
    data = {"a": ["p", "q"], "b": ["r", "s"]}
    ab = wide([fc.crossed_column(["a", "b"], 10**6)], data).wide_ids
    ba = wide([fc.crossed_column(["b", "a"], 10**6)], data).wide_ids
    keyed = wide([fc.crossed_column(["a", "b"], 10**6, hash_key=1)], data).wide_ids
    assert not torch.equal(ab, ba) and not torch.equal(ab, keyed)


def test_cross_with_multi_valued_column_is_the_cartesian_product():
    age = fc.bucketized_column(fc.numeric_column("age"), [30])
    col = fc.crossed_column(["apps", "country", age], 10**9)
    data = {
        "apps": [["a", "b", "c"], ["a"], [], None, ["b", "", "b"]],
        "country": ["us", "fr", "us", "de", None],
        "age": [20.0, 40.0, 20.0, 20.0, 50.0],
    }
    batch = wide([col], data)
    expected = []
    for apps, country, age_v in zip(data["apps"], data["country"], data["age"]):
        bucket = int(age_v >= 30)
        apps = [a for a in apps or [] if a]
        expected.append(
            sorted(1 + cross([blake(a), blake(country), bucket], 10**9) for a in apps)
            if country
            else []
        )
    assert rows_of(batch.wide_ids) == expected
    assert [len(r) for r in expected] == [3, 1, 0, 0, 0]


def test_cross_of_lists_equals_union_of_single_valued_crosses():
    col = fc.crossed_column(["x", "y", "z"], 9973)
    multi = {"x": [["a", "b"], ["c"]], "y": [["d", "e", "f"], ["g", "h"]], "z": ["i", "j"]}
    got = rows_of(wide([col], multi).wide_ids)
    for row in range(2):
        singles = [
            {"x": [x], "y": [y], "z": [multi["z"][row]]}
            for x in multi["x"][row]
            for y in multi["y"][row]
        ]
        union = sorted(wide([col], s).wide_ids[0, 0].item() for s in singles)
        assert got[row] == union
        assert len(got[row]) == len(multi["x"][row]) * len(multi["y"][row])


def test_cross_key_missing_from_data_names_key_and_column():
    spec = FeatureSpec([fc.crossed_column(["edu", "nope"], 10)]).fit({"edu": ["a"], "nope": ["b"]})
    with pytest.raises(DataError) as e:
        spec.transform({"edu": ["a"]})
    assert "'nope'" in str(e.value) and "edu_X_nope" in str(e.value)


def test_cross_component_missing_in_every_row():
    spec = FeatureSpec([fc.crossed_column(["a", "b"], 10)]).fit({"a": ["x"], "b": ["y"]})
    assert spec.transform({"a": ["x", "z"], "b": [None, None]}).wide_ids.tolist() == [[0], [0]]
    assert spec.transform({"a": "x", "b": None}).wide_ids.tolist() == [[0]]


# --------------------------------------------------------------------------- dense wrappers


def test_indicator_with_multi_valued_counts():
    v = fc.categorical_column_with_vocabulary_list("k", ["a", "b", "c"])
    spec = FeatureSpec((), [fc.indicator_column(v)])
    data = {"k": [["a", "a", "c"], [], ["b", "zz"]]}
    batch = spec.fit(data).transform(data)
    assert spec.indicator_dim_ == 3
    assert rows_of(batch.indicator_ids) == [[1, 1, 3], [], [2]]
    one_hot = torch.zeros(3, 4)  # what the model's gather sums: counts per id
    one_hot.scatter_add_(1, batch.indicator_ids.long(), torch.ones(batch.indicator_ids.shape))
    assert one_hot[:, 1:].tolist() == [[2, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize(
    "combiner, unweighted, weighted",
    [
        ("sum", [1, 1, 1], [1, 2, 2]),
        ("mean", [1 / 3] * 3, [1 / 5, 2 / 5, 2 / 5]),
        ("sqrtn", [1 / math.sqrt(3)] * 3, [1 / 3, 2 / 3, 2 / 3]),
    ],
)
def test_embedding_combiners_by_hand(combiner, unweighted, weighted):
    v = fc.categorical_column_with_vocabulary_list("k", ["a", "b", "c"])
    data = {"k": [["a", "b", "c"], ["b"], []], "w": [[1.0, 2.0, 2.0], [3.0], []]}
    plain = FeatureSpec((), [fc.embedding_column(v, 4, combiner)]).fit(data).transform(data)
    assert plain.embed_ids[0].tolist() == [[1, 2, 3], [2, 0, 0], [0, 0, 0]]
    one = {"sum": 1.0, "mean": 1.0, "sqrtn": 1.0}[combiner]
    expected = [unweighted, [one, 0, 0], [0, 0, 0]]
    torch.testing.assert_close(plain.embed_weights[0], torch.tensor(expected))
    wcol = fc.weighted_categorical_column(v, "w")
    spec = FeatureSpec((), [fc.embedding_column(wcol, 4, combiner)])
    batch = spec.fit(data).transform(data)
    w3 = {"sum": 3.0, "mean": 1.0, "sqrtn": 1.0}[combiner]
    torch.testing.assert_close(
        batch.embed_weights[0], torch.tensor([weighted, [w3, 0, 0], [0, 0, 0]])
    )


def test_single_valued_embedding_needs_no_weights():
    h = fc.categorical_column_with_hash_bucket("k", 10)
    batch = (
        FeatureSpec((), [fc.embedding_column(h, 2)]).fit({"k": ["a"]}).transform({"k": ["a", None]})
    )
    assert batch.embed_ids[0].tolist() == [[1 + blake("a") % 10], [0]]
    assert batch.embed_weights == [None]


def test_weighted_categorical_in_wide_part():
    v = fc.categorical_column_with_vocabulary_list("k", ["a", "b"])
    col = fc.weighted_categorical_column(v, "w")
    batch = wide([col], {"k": ["b", "a", "z"], "w": [0.5, 2.0, 9.0]})
    assert batch.wide_ids.tolist() == [[2], [1], [0]]
    assert batch.wide_weights.tolist() == [[0.5], [2.0], [0.0]]


def test_wide_numeric_column_is_an_id_weighted_by_its_value():
    batch = wide(
        [fc.categorical_column_with_vocabulary_list("k", ["a"]), fc.numeric_column("x")],
        {"k": ["a", "q"], "x": [2.5, -1.0]},
    )
    assert batch.wide_ids.tolist() == [[1, 2], [2, 0]]
    assert batch.wide_weights.tolist() == [[1.0, 2.5], [-1.0, 0.0]]


def test_missing_or_empty_categorical_gets_no_id_everywhere():
    v = fc.categorical_column_with_vocabulary_list("k", ["a"], num_oov_buckets=3)
    h = fc.categorical_column_with_hash_bucket("k", 5)
    spec = FeatureSpec([v, h], [fc.indicator_column(v), fc.embedding_column(h, 2)])
    data = {"k": ["", None, float("nan")]}
    batch = spec.fit({"k": ["a"]}).transform(data)
    assert batch.wide_ids.abs().sum() == 0 and batch.indicator_ids.abs().sum() == 0
    assert batch.embed_ids[0].abs().sum() == 0
    assert np.array_equal(spec.transform({"k": ""}).wide_ids.numpy(), [[0, 0]])


def test_one_feature_with_two_normalisers_keeps_both_states():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    standard = fc.numeric_column("x", normalizer="standard")
    quantile = fc.numeric_column("x", normalizer="quantile", num_quantiles=4)
    spec = FeatureSpec(deep_columns=[standard, quantile]).fit({"x": values})
    dense = spec.transform({"x": [4.5]}).dense.numpy()[0]
    mean, std = 4.5, float(np.std(values))
    # 4.5 equals the 2nd quantile boundary of 1..8 (2.75, 4.5, 6.25): the 3rd quantile -> 2/3
    np.testing.assert_allclose(dense, [(4.5 - mean) / std, 2 / 3], rtol=1e-6)
