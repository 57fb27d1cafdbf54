"""Damaged model directories: a clear refusal naming the file, never a library's raw exception."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import widedeep.predict
from widedeep import artifact
from widedeep.artifact import ModelFileError
from widedeep.cli import export
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    spec = census_spec().fit(load_census()[1].slice(0, 100))
    model = WideDeep(ModelConfig.from_spec(spec, hidden_units=[4]))
    root = tmp_path_factory.mktemp("models")
    artifact.write_checkpoint(root / "run", "ckpt-0000000007", spec=spec, model=model)
    return root / "run" / "ckpt-0000000007"


@pytest.fixture
def copy(good, tmp_path) -> Path:
    import shutil

    target = tmp_path / "model"
    shutil.copytree(good, target)
    return target


def rehash(path: Path) -> None:
    """Update the manifest as a careless tool would, so that the damage gets past the checksums."""
    manifest = json.loads((path / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def refuses(path: Path, *needles: str) -> str:
    with pytest.raises(ModelFileError) as info:
        widedeep.predict.load(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_good_directory_loads(good):
    assert widedeep.predict.load(good).predict_proba(load_census()[1].slice(0, 3)).shape == (3,)


def test_truncated_weights(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refuses(copy, "model.safetensors", "checksum mismatch")
    rehash(copy)
    refuses(copy, "model.safetensors", "not a valid safetensors file")


def test_flipped_bytes_in_weights(copy):
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    refuses(copy, "model.safetensors", "checksum mismatch")


def test_weights_of_another_shape(copy):
    other = WideDeep(ModelConfig.from_spec(census_spec().fit(load_census()[1].slice(0, 100))))
    from safetensors.torch import save_file

    save_file(dict(other.state_dict()), str(copy / "model.safetensors"))
    rehash(copy)
    refuses(copy, "model.safetensors does not match config.json")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '"a string"',
        '{"wide_columns": [{"type": "no_such_column"}]}',
        '{"wide_columns": 7}',
        '{"wide_columns": [], "deep_columns": []}',
        '{"format_version": 99, "wide_columns": []}',
        '{"wide_columns": [{"type": "numeric_column", "key": 5, "shape": "x"}]}',
    ],
)
def test_spec_edited_into_nonsense(copy, text):
    (copy / "spec.json").write_text(text)
    refuses(copy, "spec.json", "checksum mismatch")
    rehash(copy)
    refuses(copy, "spec.json")


@pytest.mark.parametrize(
    "model", ['{"model_type": "huge"}', '{"hidden_units": "abc"}', "[1, 2]", '{"wide_dim": -5}']
)
def test_config_edited_into_nonsense(copy, model):
    config = json.loads((copy / "config.json").read_text())
    config["model"] = (
        {**config["model"], **json.loads(model)} if "{" in model else json.loads(model)
    )
    (copy / "config.json").write_text(json.dumps(config))
    rehash(copy)
    refuses(copy, "config.json")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_other_format_version(copy, version):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest))
    message = refuses(copy, "format version")
    assert ("upgrade widedeep" in message) == (version == 2)


@pytest.mark.parametrize(
    "manifest", ["", "[]", '{"format_version": 1}', '{"format_version": 1, "files": {"../x": "0"}}']
)
def test_damaged_manifest(copy, manifest):
    (copy / "manifest.json").write_text(manifest)
    refuses(copy, "manifest.json")


def test_missing_file_and_pickle(copy):
    (copy / "config.json").unlink()
    refuses(copy, "config.json is missing")
    (copy / "weights.pkl").write_bytes(b"\x80\x04")
    refuses(copy, "never loads pickle")


@pytest.mark.parametrize("pointer", ["{", '{"latest": 3}', '{"latest": "../../etc"}', "[]"])
def test_damaged_checkpoint_pointer(good, pointer, tmp_path):
    import shutil

    shutil.copytree(good.parent, tmp_path / "run")
    (tmp_path / "run" / artifact.POINTER).write_text(pointer)
    refuses(tmp_path / "run", "checkpoint.json is damaged")


def test_cli_refuses_in_one_line(copy, tmp_path, capsys):
    from widedeep.cli import main

    (copy / "model.safetensors").write_bytes(b"")
    # resuming training from a damaged checkpoint stops before touching it
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt-0000000001").symlink_to(copy, target_is_directory=True)
    (run / artifact.POINTER).write_text('{"latest": "ckpt-0000000001"}')
    code = main(["train", "--model_dir", str(run), "--train_epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "model.safetensors" in err
    with pytest.raises(ModelFileError, match="model.safetensors"):
        export(copy, tmp_path / "export")
