"""Property-based tests: the CSV reader and the encoder never fail with anything but their
documented errors (DataError, FeatureColumnError: both ValueError), and valid rows always
encode to ids inside their column's range."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widedeep import feature_column as fc
from widedeep.badrows import BadRows, drop_bad_rows
from widedeep.feature_column import FeatureColumnError
from widedeep.io import read_table
from widedeep.transform import DataError, FeatureSpec, Label

DOCUMENTED = (DataError, FeatureColumnError)
F32_MAX = float(np.finfo(np.float32).max)
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def make_spec() -> FeatureSpec:
    city = fc.categorical_column_with_hash_bucket("city", 50)
    color = fc.categorical_column_with_vocabulary_list("color", ["red", "green"], num_oov_buckets=2)
    learned = fc.categorical_column_with_vocabulary_from_data("tag", min_count=1)
    age = fc.numeric_column("age", default_value=0.0)
    height = fc.numeric_column("height")
    slot = fc.categorical_column_with_identity("slot", 5, default_value=0)
    spec = FeatureSpec(
        wide_columns=[
            city,
            color,
            slot,
            fc.bucketized_column(age, [10, 20, 40]),
            fc.crossed_column(["city", "color"], 30),
        ],
        deep_columns=[
            height,
            fc.indicator_column(color),
            fc.embedding_column(city, 3),
            fc.embedding_column(learned, 2),
        ],
        label=Label("y", classes=("no", "yes")),
    )
    fit_rows = {
        "city": ["a", "b"], "color": ["red", "blue"], "tag": ["x", "y"], "age": [1.0, 50.0],
        "height": [1.5, 1.8], "slot": [1, 2], "y": ["no", "yes"],
    }  # fmt: skip
    return spec.fit(fit_rows)


SPEC = make_spec()

long_text = st.builds(  # very long values, cheap to generate
    lambda piece, n: piece * n, st.sampled_from(["x", "é☃", "\x00", ',"\n']), st.integers(1, 3000)
)
text = st.text(max_size=30) | long_text
number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70)
anything = st.none() | text | number | st.booleans() | st.lists(text, max_size=4)


def check_ranges(spec: FeatureSpec, batch) -> None:
    assert ((batch.wide_ids >= 0) & (batch.wide_ids <= spec.wide_dim_)).all()
    assert ((batch.indicator_ids >= 0) & (batch.indicator_ids <= spec.indicator_dim_)).all()
    for ids, shape in zip(batch.embed_ids, spec.embedding_shapes_):
        assert ((ids >= 0) & (ids <= shape["num_embeddings"])).all()
    assert np.isfinite(batch.dense.numpy()).all()


@FUZZ
@given(st.lists(st.fixed_dictionaries({k: anything for k in SPEC.input_keys + ["y"]}), max_size=8))
def test_encoder_raises_only_documented_errors(rows):
    try:
        batch = SPEC.transform(rows)
    except DOCUMENTED:
        return
    check_ranges(SPEC, batch)


valid_row = st.fixed_dictionaries(
    {
        "city": text,
        "color": text,
        "tag": text,
        "age": st.floats(-1e6, 1e6) | st.none(),  # missing age has a default
        "height": st.floats(-1e6, 1e6),
        "slot": st.integers(-10, 10) | st.none(),  # out of range: the default id
        "y": st.sampled_from(["no", "yes"]),
    }
)


@FUZZ
@given(st.lists(valid_row, min_size=1, max_size=8))
def test_valid_rows_encode_inside_their_ranges(rows):
    batch = SPEC.transform(rows)
    assert len(batch) == len(rows)
    check_ranges(SPEC, batch)
    assert batch.label.tolist() == [float(r["y"] == "yes") for r in rows]
    assert batch.dense[:, 0].tolist() == [np.float32(r["height"]) for r in rows]


@FUZZ
@given(st.lists(anything, min_size=1, max_size=6))
def test_one_column_of_anything(values):
    # a column whose rows mix types must be refused as a whole, with the documented error
    try:
        batch = SPEC.transform(
            {**{k: [1.0] * len(values) for k in SPEC.input_keys}, "city": values}
        )
    except DOCUMENTED:
        return
    check_ranges(SPEC, batch)


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "nan", "inf", "-inf", "1e400", "3.5", "-0", "NA", '"', '""', "a,b", "\n", "\r"]
)


@FUZZ
@given(
    header=st.lists(st.sampled_from(SPEC.input_keys + ["y", "extra"]), min_size=1, max_size=9),
    rows=st.lists(st.lists(cell, max_size=10), max_size=6),
    junk=st.binary(max_size=40),
    skip=st.booleans(),
)
def test_csv_reader_raises_only_documented_errors(tmp_path_factory, header, rows, junk, skip):
    path = tmp_path_factory.mktemp("fuzz") / "data.csv"
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_bytes("\n".join(lines).encode() + junk)
    report = BadRows("skip" if skip else "error")
    try:
        table = read_table(path, spec=SPEC, bad_rows=report)
        batch = SPEC.transform(table)
    except DOCUMENTED:
        return
    check_ranges(SPEC, batch)
    assert table.num_rows + report.total >= 1


@FUZZ
@given(st.lists(st.tuples(st.floats(allow_nan=True), text), min_size=1, max_size=10))
def test_skipped_rows_are_exactly_the_bad_ones(pairs):
    # height has no default: a row is bad iff its height is not finite (as a float32)
    table = pa.table({k: [1.0] * len(pairs) for k in SPEC.input_keys})
    table = table.set_column(table.column_names.index("height"), "height", [[h for h, _ in pairs]])
    table = table.append_column("y", [["yes"] * len(pairs)])
    report = BadRows("skip")
    kept = drop_bad_rows(SPEC, table, report)
    finite = [h for h, _ in pairs if math.isfinite(h) and abs(h) <= F32_MAX]
    assert kept.column("height").to_pylist() == finite
    assert report.total == len(pairs) - len(finite)
    if finite:
        check_ranges(SPEC, SPEC.transform(kept))
