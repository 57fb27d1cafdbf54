"""The command line end to end on a small census sample, and its refusals."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from widedeep.cli import main


@pytest.fixture(scope="module")
def census_sample(tmp_path_factory) -> Path:
    """The first rows of the bundled UCI files, in the original format (quirks included)."""
    out = tmp_path_factory.mktemp("adult")
    data = resources.files("widedeep.datasets") / "data"
    for name, rows in (("adult.data", 1500), ("adult.test", 600)):
        with gzip.open(data / f"{name}.gz", "rt") as f:
            lines = [next(f) for _ in range(rows)]
        (out / name).write_text("".join(lines))
    return out


def test_train_end_to_end(census_sample, tmp_path):
    model_dir = tmp_path / "model"
    cmd = [
        sys.executable,
        "-m",
        "widedeep",
        "train",
        "--data_dir",
        str(census_sample),
        "--train_epochs",
        "2",
        "--epochs-between-evals",
        "1",
        "--batch_size",
        "100",
        "--model_dir",
        str(model_dir),
        "--threads",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "final evaluation" in out.stdout and "auc" in out.stdout
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads(lines[-1])["global_step"] == 2 * 15
    # the same command again resumes a finished run: nothing more to train, same metrics
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resuming" in again.stdout
    assert len((model_dir / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model_type", "foo"], "invalid choice"),
        (["train", "--train_epochs", "-3"], "positive integer"),
        (["train", "--batch_size", "0"], "positive integer"),
        (["train", "--hidden_units", "10,x"], "layer widths"),
    ],
)
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_dir_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "--data_dir", str(tmp_path / "nowhere"), "--model_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "adult.data" in err and "Traceback" not in err


def test_spec_without_train_file(tmp_path, capsys):
    code = main(["train", "--spec", "x.yaml", "--model_dir", str(tmp_path / "m")])
    assert code == 2
    assert "--train" in capsys.readouterr().err


def test_clean_refuses_a_foreign_directory(tmp_path, census_sample, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    code = main(
        ["train", "--data_dir", str(census_sample), "--model_dir", str(tmp_path), "--clean"]
    )
    assert code == 2
    assert (tmp_path / "precious.txt").exists()
    assert "refusing" in capsys.readouterr().err
