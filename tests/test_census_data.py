"""Census (UCI Adult) data set: bundled files, file quirks, errors, download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from widedeep.datasets import census
from widedeep.datasets.census import (
    CSV_COLUMNS,
    INT_COLUMNS,
    LABEL_COLUMN,
    census_labels,
    download_census,
    load_census,
    read_census,
)

ROW_A = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K"  # noqa: E501
ROW_B = (
    "50, ?, 83311, Bachelors, 13, Married-civ-spouse, ?, Husband, White, Male, 0, 0, 13, ?, >50K."  # noqa: E501
)


def _bundled_text(name: str) -> str:
    data = resources.files("widedeep.datasets").joinpath("data", f"{name}.gz").read_bytes()
    return gzip.decompress(data).decode("utf-8")


@pytest.fixture(scope="module")
def bundled() -> tuple[pa.Table, pa.Table]:
    return load_census()


def test_bundled_row_counts_and_labels(bundled):
    train, test = bundled
    assert train.num_rows == 32_561
    assert test.num_rows == 16_281
    assert train.column_names == CSV_COLUMNS
    for name, table in (("adult.data", train), ("adult.test", test)):
        # Count positives independently of the reader: raw text, line by line.
        lines = [ln for ln in _bundled_text(name).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("|")]
        assert len(lines) == table.num_rows
        positives = sum(">50K" in ln for ln in lines)
        labels = census_labels(table)
        assert labels.dtype == np.float32
        assert int(labels.sum()) == positives
        assert set(table.column(LABEL_COLUMN).unique().to_pylist()) == {"<=50K", ">50K"}
    assert int(census_labels(test).sum()) == 3846
    assert census_labels(test).mean() == pytest.approx(0.2362, abs=1e-4)


def test_bundled_types_and_values(bundled):
    train, _ = bundled
    for name in CSV_COLUMNS:
        expected = pa.int64() if name in INT_COLUMNS else pa.string()
        assert train.schema.field(name).type == expected
    first = train.slice(0, 1).to_pylist()[0]
    assert first["age"] == 39
    assert first["workclass"] == "State-gov"
    assert first["native_country"] == "United-States"
    assert first["income_bracket"] == "<=50K"
    # '?' in the UCI files becomes null; no value keeps surrounding blanks.
    assert train.column("workclass").null_count == 1836
    assert "?" not in train.column("workclass").unique().to_pylist()
    assert all(v == v.strip() for v in train.column("education").unique().to_pylist())


def test_bundled_files_match_official_checksums():
    for name, digest in census.SHA256.items():
        data = resources.files("widedeep.datasets").joinpath("data", f"{name}.gz").read_bytes()
        assert hashlib.sha256(gzip.decompress(data)).hexdigest() == digest


def test_quirks(tmp_path):
    text = f"|1x3 Cross validator\n{ROW_A}\n\n   \n{ROW_B}\r\n\n"
    path = tmp_path / "adult.test"
    path.write_text(text)
    table = read_census(path)
    assert table.num_rows == 2
    rows = table.to_pylist()
    assert rows[0]["workclass"] == "State-gov"
    assert rows[0]["capital_gain"] == 2174
    assert rows[0]["income_bracket"] == "<=50K"
    assert rows[1]["income_bracket"] == ">50K"
    assert rows[1]["workclass"] is None
    assert rows[1]["occupation"] is None
    assert rows[1]["native_country"] is None
    assert rows[1]["hours_per_week"] == 13

    gz = tmp_path / "adult.test.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert read_census(gz).equals(table)


def test_extra_whitespace_around_fields(tmp_path):
    path = tmp_path / "x.data"
    path.write_text("  " + ROW_A.replace(", ", " ,\t ") + "  \n")
    row = read_census(path).to_pylist()[0]
    assert row["age"] == 39
    assert row["workclass"] == "State-gov"
    assert row["income_bracket"] == "<=50K"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (ROW_A.rsplit(",", 1)[0], "expected 15 fields, got 14"),
        (ROW_A.replace("77516", "77x16"), "'fnlwgt' is not an integer"),
    ],
)
def test_malformed_row_reports_line(tmp_path, bad, why):
    path = tmp_path / "adult.data"
    path.write_text(f"|comment\n{ROW_A}\n\n{bad}\n{ROW_A}\n")
    with pytest.raises(ValueError) as info:
        read_census(path)
    msg = str(info.value)
    assert "adult.data" in msg
    assert "line 4" in msg
    assert why in msg
    assert bad[:50] in msg
    assert "download" in msg


def test_malformed_row_long_line_truncated(tmp_path):
    path = tmp_path / "adult.data"
    path.write_text(ROW_A + ", extra" * 100 + "\n")
    with pytest.raises(ValueError, match="line 1") as info:
        read_census(path)
    assert len(str(info.value)) < 600


def test_load_census_missing_file(tmp_path):
    (tmp_path / "adult.data").write_text(ROW_A + "\n")
    with pytest.raises(FileNotFoundError) as info:
        load_census(tmp_path)
    msg = str(info.value)
    assert "adult.test" in msg and "--download" in msg and "--data_dir" in msg


def test_load_census_from_dir_plain_and_gz(tmp_path):
    (tmp_path / "adult.data").write_text(ROW_A + "\n" + ROW_A + "\n")
    (tmp_path / "adult.test.gz").write_bytes(gzip.compress(f"|1x3\n{ROW_B}\n".encode()))
    train, test = load_census(tmp_path)
    assert train.num_rows == 2 and test.num_rows == 1
    assert test.column(LABEL_COLUMN).to_pylist() == [">50K"]


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        _QuietHandler.requests.append(self.path)
        super().do_GET()


def _serve_fakes(served: Path, monkeypatch) -> dict[str, bytes]:
    files = {"adult.data": (ROW_A + "\n").encode(), "adult.test": f"|x\n{ROW_B}\n".encode()}
    for name, data in files.items():
        (served / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(census, "SHA256", digests)
    return files


def test_download_census(http_dir, tmp_path, monkeypatch):
    served, url = http_dir
    files = _serve_fakes(served, monkeypatch)
    out = tmp_path / "out" / "nested"
    _QuietHandler.requests.clear()
    download_census(out, base_url=url, timeout=5)
    assert sorted(p.name for p in out.iterdir()) == ["adult.data", "adult.test"]
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert sorted(_QuietHandler.requests) == ["/adult.data", "/adult.test"]
    train, test = load_census(out)
    assert train.num_rows == 1 and test.num_rows == 1

    # Present with the right checksum: not fetched again.
    _QuietHandler.requests.clear()
    download_census(out, base_url=url.rstrip("/"), timeout=5)
    assert _QuietHandler.requests == []


def test_download_census_wrong_checksum(http_dir, tmp_path, monkeypatch):
    served, url = http_dir
    _serve_fakes(served, monkeypatch)
    bad = dict(census.SHA256, **{"adult.data": "0" * 64})
    monkeypatch.setattr(census, "SHA256", bad)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        download_census(out, base_url=url, timeout=5)
    msg = str(info.value)
    assert "adult.data" in msg and "0" * 64 in msg
    assert hashlib.sha256((served / "adult.data").read_bytes()).hexdigest() in msg
    assert list(out.iterdir()) == []
