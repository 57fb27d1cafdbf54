"""Dirty input: each kind of bad row stops with file:line and the fix, or is skipped and counted."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from widedeep import feature_column as fc
from widedeep.badrows import (
    BAD_LABEL,
    LABEL_OUT_OF_RANGE,
    NOT_A_NUMBER,
    NOT_FINITE,
    NOT_UTF8,
    WRONG_FIELDS,
    BadRows,
    drop_bad_rows,
)
from widedeep.cli import main
from widedeep.datasets.census import read_census
from widedeep.io import read_table
from widedeep.transform import DataError, FeatureSpec, Label

HEADER = b"age,city,y,note\n"
GOOD = [b"30,Paris,yes,a\n", b"41,Lyon,no,b\n", b"52,Oslo,no,c\n"]


def spec() -> FeatureSpec:
    return FeatureSpec(
        [fc.categorical_column_with_hash_bucket("city", 10)],
        [fc.numeric_column("age")],
        label=Label("y", classes=("no", "yes")),
    )


def write(tmp_path: Path, *lines: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(HEADER + b"".join(lines))
    return path


# (bad line, reason, what the error names); each bad line is line 3 of its file
CASES = [
    (b"31,Nice\n", WRONG_FIELDS, "expected 4, got 2"),
    (b"31,Nice,no,d,extra\n", WRONG_FIELDS, "expected 4, got 5"),
    (b"abc,Nice,no,d\n", NOT_A_NUMBER, "'abc'"),
    (b"nan,Nice,no,d\n", NOT_FINITE, "column 'age'"),
    (b"inf,Nice,no,d\n", NOT_FINITE, "column 'age'"),
    (b",Nice,no,d\n", NOT_FINITE, "column 'age'"),
    (b"31,Nice,maybe,d\n", BAD_LABEL, "'maybe'"),
    (b"31,Nice,,d\n", "missing label", "column 'y'"),
    (b"31,Caf\xe9,no,d\n", NOT_UTF8, "--encoding"),
]


@pytest.mark.parametrize("bad, reason, detail", CASES)
def test_bad_row_stops_with_file_line_text_and_fix(tmp_path, bad, reason, detail):
    path = write(tmp_path, GOOD[0], bad, GOOD[1])
    with pytest.raises(DataError) as info:
        read_table(path, spec=spec())
    message = str(info.value)
    assert f"{path}:3" in message and reason in message and detail in message
    assert "--skip_bad_rows" in message


@pytest.mark.parametrize("bad, reason, detail", CASES)
def test_bad_row_skipped_and_counted(tmp_path, bad, reason, detail):
    path = write(tmp_path, GOOD[0], bad, GOOD[1], GOOD[2])
    report = BadRows("skip")
    table = read_table(path, spec=spec(), bad_rows=report)
    assert table.column("city").to_pylist() == ["Paris", "Lyon", "Oslo"]
    assert report.counts == {reason: 1}
    assert report.examples[reason].startswith(f"{path}:3")
    assert report.ignored_columns == ["note"]  # read, not used, reported once
    batch = spec().fit(table).transform(table)  # what survives encodes
    assert batch.label.tolist() == [1.0, 0.0, 0.0]


def test_many_bad_rows_counted_per_reason_and_limit(tmp_path):
    lines = [GOOD[0], b"x,A,no,1\n", b"y,B,no,1\n", b"1,C\n", b"2,D,what,1\n", GOOD[1]]
    path = write(tmp_path, *lines)
    report = BadRows("skip")
    assert read_table(path, spec=spec(), bad_rows=report).num_rows == 2
    assert report.counts == {WRONG_FIELDS: 1, NOT_A_NUMBER: 2, BAD_LABEL: 1}
    assert report.to_dict()["skipped"] == 4
    assert read_table(path, spec=spec(), max_bad_rows=4).num_rows == 2
    with pytest.raises(DataError, match="more than --max_bad_rows 3"):
        read_table(path, spec=spec(), max_bad_rows=3)


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
    path = write(tmp_path, GOOD[0], b"\n", b'41,"New\nYork",no,b\n', b"oops,Rome,no,c\n")
    with pytest.raises(DataError, match=r"data\.csv:6: column 'age': not a number \('oops'\)"):
        read_table(path, spec=spec())


def test_short_row_that_is_not_utf8_either(tmp_path, capfd):
    path = write(tmp_path, GOOD[0], b"31,Caf\xe9\n", GOOD[1])
    where = f"{path}:3: {WRONG_FIELDS} \\(expected 4, got 2\\)"
    with pytest.raises(DataError, match=where):
        read_table(path, spec=spec())
    with pytest.raises(DataError, match=where + ".*not valid utf-8 text either.*--encoding"):
        read_table(path, spec=spec(), on_bad_rows="skip")  # Arrow cannot hand the row over
    assert capfd.readouterr().err == ""  # no noise from inside Arrow


def test_encoding_option_reads_latin1(tmp_path):
    path = write(tmp_path, GOOD[0], "31,Café,no,d\n".encode("latin-1"))
    table = read_table(path, spec=spec(), encoding="latin-1")
    assert table.column("city").to_pylist() == ["Paris", "Café"]
    with pytest.raises(DataError, match="unknown encoding"):
        read_table(path, encoding="no-such-codec")


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_table(empty)
    with pytest.raises(DataError, match="no data rows"):
        read_table(write(tmp_path, name="header.csv"))
    with pytest.raises(DataError, match="every row is bad"):
        read_table(
            write(tmp_path, b"x,A,no,1\n", name="all_bad.csv"), spec=spec(), on_bad_rows="skip"
        )


def test_in_memory_table_and_binary_label_without_classes():
    s = FeatureSpec([], [fc.numeric_column("x", default_value=0.0)], label="y")
    table = pa.table({"x": [1.0, None, float("inf")], "y": [1, 2, 0]})
    with pytest.raises(DataError, match="row 1: column 'y'"):
        drop_bad_rows(s, table)
    report = BadRows("skip")
    kept = drop_bad_rows(s, table, report)
    assert kept.column("y").to_pylist() == [1, 0]  # x missing/inf have a default: not bad
    assert report.counts == {BAD_LABEL: 1}


def test_a_label_outside_the_output_range_names_its_line(tmp_path):
    s = FeatureSpec([fc.categorical_column_with_hash_bucket("city", 10)], [],
                    label=Label("y", "regression", output_range=(1, 5)))  # fmt: skip
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"city,y\nParis,1\nLyon,6.5\nOslo,5\n")
    with pytest.raises(DataError) as info:
        read_table(path, spec=s)
    message = str(info.value)
    assert f"{path}:3" in message and LABEL_OUT_OF_RANGE in message and "widen" in message
    report = BadRows("skip")
    kept = read_table(path, spec=s, bad_rows=report)
    assert kept.column("y").to_pylist() == [1, 5] and report.counts == {LABEL_OUT_OF_RANGE: 1}


def test_list_valued_numbers_bad_when_any_value_is():
    s = FeatureSpec([], [fc.numeric_column("v", shape=2)])
    table = pa.table({"v": pa.array([[1.0, 2.0], [3.0, float("nan")], [5.0, 6.0]])})
    report = BadRows("skip")
    kept = drop_bad_rows(s, table, report, label=False)
    assert kept.column("v").to_pylist() == [[1.0, 2.0], [5.0, 6.0]]
    assert report.counts == {NOT_FINITE: 1}


def test_policy_arguments_checked():
    with pytest.raises(ValueError, match="on_bad_rows"):
        BadRows("ignore")
    with pytest.raises(ValueError, match="max_bad_rows"):
        BadRows("skip", -1)
    assert BadRows(max_bad_rows=0).skip  # a limit implies skipping up to it


# --------------------------------------------------------------------------- census


@pytest.fixture(scope="module")
def dirty_census(tmp_path_factory) -> Path:
    """Small census files with one bad line of each kind injected into adult.data."""
    out = tmp_path_factory.mktemp("adult_dirty")
    data = resources.files("widedeep.datasets") / "data"
    for name, rows in (("adult.data", 600), ("adult.test", 300)):
        with gzip.open(data / f"{name}.gz", "rb") as f:
            lines = [next(f) for _ in range(rows)]
        if name == "adult.data":
            good = lines[0].decode()  # 39, State-gov, 77516, ..., Adm-clerical, ..., <=50K
            lines[20:20] = [
                b"39, State-gov, 77516\n",  # line 21: too few fields
                good.replace("39,", "thirty-nine,", 1).encode(),  # line 22: not an integer
                good.replace("<=50K", "<=50K?").encode(),  # line 23: unknown label
                good.replace("Adm-clerical", "Adm-cl\xe9rical").encode("latin-1"),  # 24: bytes
            ]
        (out / name).write_bytes(b"".join(lines))
    return out


def test_census_reader_skips_and_counts(dirty_census):
    report = BadRows("skip")
    table = read_census(dirty_census / "adult.data", bad_rows=report)
    assert table.num_rows == 600
    assert report.counts == {WRONG_FIELDS: 1, NOT_UTF8: 1, NOT_A_NUMBER: 1, BAD_LABEL: 1}
    assert set(table.column("income_bracket").to_pylist()) == {"<=50K", ">50K"}


def test_census_reader_stops_at_first_bad_line(dirty_census):
    with pytest.raises(DataError, match=r"adult\.data, line 21: .*expected 15 fields, got 3"):
        read_census(dirty_census / "adult.data")


def test_cli_census_bad_rows(dirty_census, tmp_path, capsys):
    base = ["train", "--data_dir", str(dirty_census), "--train_epochs", "1", "--batch_size",
            "100", "--hidden_units", "8", "--threads", "1", "--quiet"]  # fmt: skip
    assert main(base + ["--model_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 21" in err and "--skip_bad_rows" in err

    assert main(base + ["--model_dir", str(tmp_path / "b"), "--max_bad_rows", "3"]) == 2
    assert "more than --max_bad_rows 3" in capsys.readouterr().err

    assert main(base + ["--model_dir", str(tmp_path / "c"), "--skip_bad_rows"]) == 0
    assert "skipped 4 bad row(s)" in capsys.readouterr().out
    logged = json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["bad_rows"]["skipped"] == 4
    assert logged["bad_rows"]["by_reason"] == {
        WRONG_FIELDS: 1, NOT_UTF8: 1, NOT_A_NUMBER: 1, BAD_LABEL: 1,
    }  # fmt: skip
    assert np.isfinite(logged["auc"])


def test_cli_user_csv_bad_rows(tmp_path, capsys):
    spec_path = tmp_path / "spec.json"  # the same spec as spec(), as a spec file
    spec_path.write_text(json.dumps({
        "label": {"key": "y", "head": "binary", "classes": ["no", "yes"]},
        "columns": {"city": {"type": "hash_bucket", "hash_bucket_size": 10},
                    "age": {"type": "numeric"}},
        "wide": ["city"], "deep": ["age"],
    }))  # fmt: skip
    train = write(tmp_path, GOOD[0], b"oops,Rome,no,c\n", GOOD[1], GOOD[2], name="train.csv")
    argv = ["train", "--spec", str(spec_path), "--train", str(train), "--eval", str(train),
            "--train_epochs", "1", "--threads", "1", "--quiet"]  # fmt: skip
    assert main(argv + ["--model_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert f"{train}:3: column 'age': not a number ('oops')" in err
    assert main(argv + ["--model_dir", str(tmp_path / "b"), "--skip_bad_rows"]) == 0
    logged = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["bad_rows"]["by_reason"] == {NOT_A_NUMBER: 2}  # train and eval file
    assert logged["bad_rows"]["ignored_columns"] == ["note"]
    # scoring a file names the bad line too (predict never skips: rows would misalign)
    assert main(["predict", "--model", str(tmp_path / "b"), "--input", str(train)]) == 2
    assert f"{train}:3: column 'age': not a number ('oops')" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "b"), "--data", str(train)]) == 2
    assert f"{train}:3: column 'age': not a number ('oops')" in capsys.readouterr().err


def test_error_names_the_first_bad_line_whatever_its_reason(tmp_path):
    # the label check comes after the number checks, but its line comes first
    path = write(tmp_path, GOOD[0], b"31,Nice,maybe,d\n", b"abc,Rome,no,c\n", b"32,Caf\xe9,no,d\n")
    with pytest.raises(DataError, match=f"{path}:3: column 'y'"):
        read_table(path, spec=spec())
