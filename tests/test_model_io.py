"""Saved models: predictions from raw rows in a fresh process, exports, the CLI, refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

import widedeep
from widedeep import feature_column as fc
from widedeep.artifact import ModelFileError
from widedeep.cli import main
from widedeep.datasets.census import LABEL_COLUMN, census_spec, load_census
from widedeep.io import read_table
from widedeep.model import ModelConfig, WideDeep
from widedeep.release import export
from widedeep.train import TrainConfig, train
from widedeep.transform import FeatureSpec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A census model trained for a few steps, its checkpoint and 300 raw held-out rows."""
    train_table, test_table = load_census()
    train_table, rows = train_table.slice(0, 1500), test_table.slice(0, 300)
    spec = census_spec().fit(train_table)
    model_dir = tmp_path_factory.mktemp("model")
    config = TrainConfig(train_epochs=1, epochs_between_evals=1, batch_size=100)
    result = train(
        spec,
        spec.transform(train_table),
        spec.transform(rows),
        ModelConfig.from_spec(spec),
        config,
        model_dir,
        quiet=True,
        log=lambda _: None,
    )
    # the in-memory model's probabilities, through the module itself (not the Predictor)
    with torch.no_grad():
        expected = torch.sigmoid(result.model(spec.transform(rows, label=False))[:, 0]).numpy()
    return result, rows, expected


def test_fresh_process_predicts_like_the_trained_model(trained, tmp_path):
    result, rows, expected = trained
    pq.write_table(rows.drop([LABEL_COLUMN]), tmp_path / "rows.parquet")
    script = textwrap.dedent(
        f"""
        import json, sys
        import pyarrow.parquet as pq
        import widedeep
        model = widedeep.load({str(result.checkpoint)!r})
        table = pq.read_table({str(tmp_path / "rows.parquet")!r})
        rows = table.to_pylist()
        out = {{
            "table": model.predict_proba(table).tolist(),
            "row_dicts": model.predict_proba(rows).tolist(),
            "one_row": [float(model.predict_proba(r)[0]) for r in rows[:5]],
        }}
        print(json.dumps(out))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout)
    np.testing.assert_allclose(got["table"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["row_dicts"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["one_row"], expected[:5], rtol=0, atol=1e-6)


def test_every_input_form_gives_the_same_scores(trained):
    result, rows, expected = trained
    model = widedeep.load(result.checkpoint)
    pandas = pytest.importorskip("pandas")
    inputs = {
        "arrow": rows,
        "pandas": rows.to_pandas(),
        "columns": {k: rows.column(k).to_pylist() for k in rows.column_names},
        "row dicts": rows.to_pylist(),
    }
    assert isinstance(inputs["pandas"], pandas.DataFrame)
    for name, data in inputs.items():
        np.testing.assert_allclose(model.predict_proba(data), expected, atol=1e-6, err_msg=name)
    assert list(model.predict(rows.slice(0, 20))) == [
        ">50K" if p > 0.5 else "<=50K" for p in expected[:20]
    ]


def test_export_is_self_contained_and_newest_wins(trained, tmp_path):
    result, rows, expected = trained
    first, gate = export(result.checkpoint, tmp_path / "exports")
    second, _ = export(result.checkpoint, tmp_path / "exports")
    assert gate is None
    assert first.parent == second.parent == tmp_path / "exports"
    assert int(second.name) > int(first.name)  # <timestamp> names, the newest sorts last
    names = {p.name for p in second.iterdir()}
    assert names == {
        "spec.json",
        "config.json",
        "model.safetensors",
        "metrics.json",
        "manifest.json",
    }
    manifest = json.loads((second / "manifest.json").read_text())
    digest = hashlib.sha256((second / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["files"]["model.safetensors"] == digest
    config = json.loads((second / "config.json").read_text())
    assert config["model"]["hidden_units"] == [100, 75, 50, 25]
    assert manifest["widedeep_version"] == widedeep.__version__
    model = widedeep.load(tmp_path / "exports")  # the export base: its newest export
    assert model.path == second
    np.testing.assert_allclose(model.predict_proba(rows), expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_cli_predict_matches_load(trained, tmp_path, suffix):
    result, rows, expected = trained
    with_id = rows.drop([LABEL_COLUMN]).append_column(
        "row_id", pa.array([f"r{i}" for i in range(rows.num_rows)])
    )
    pacsv.write_csv(with_id, tmp_path / "in.csv")
    out = tmp_path / f"out{suffix}"
    code = main(
        ["predict", "--model", str(result.checkpoint), "--input", str(tmp_path / "in.csv"),
         "--output", str(out), "--id_column", "row_id"]
    )  # fmt: skip
    assert code == 0
    table = read_table(out)
    assert table.column("row_id").to_pylist() == [f"r{i}" for i in range(rows.num_rows)]
    np.testing.assert_allclose(table.column("probability").to_numpy(), expected, atol=1e-6)
    want = widedeep.load(result.checkpoint).predict_proba(read_table(tmp_path / "in.csv"))
    np.testing.assert_allclose(table.column("probability").to_numpy(), want, atol=1e-6)
    assert table.column("class").to_pylist() == [">50K" if p > 0.5 else "<=50K" for p in want]


def test_cli_evaluate_prints_the_reference_metrics(trained, tmp_path, capsys):
    result, rows, _ = trained
    pq.write_table(rows, tmp_path / "eval.parquet")
    code = main(
        ["evaluate", "--model", str(result.checkpoint), "--data", str(tmp_path / "eval.parquet")]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == f"evaluation of {result.checkpoint}"
    printed = dict(line.split() for line in out[1:])
    # the checkpoint evaluated on these same rows at the end of training
    for key in ("accuracy", "auc", "average_loss", "label/mean"):
        assert float(printed[key]) == pytest.approx(result.metrics[key], abs=1e-4)


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(model_dir, target)
    return target


def _add_pickle(d: Path) -> None:
    torch.save({"w": torch.zeros(1)}, d / "extra.pt")


def _flip_a_byte(d: Path) -> None:
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))


def _remove_spec(d: Path) -> None:
    (d / "spec.json").unlink()


def _future_format(d: Path) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(manifest))


def _pickle_as_weights(d: Path) -> None:
    """A pickle under the weights' name, manifest updated to match: still never unpickled."""
    torch.save({"wide.weight": torch.zeros(3, 1)}, d / "model.safetensors")
    manifest = json.loads((d / "manifest.json").read_text())
    digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    manifest["files"]["model.safetensors"] = digest
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_add_pickle, "never loads pickle files"),
        (_flip_a_byte, "checksum mismatch"),
        (_remove_spec, "spec.json is missing"),
        (_future_format, "format version 99 is newer"),
        (_pickle_as_weights, "not a valid safetensors file"),
    ],
)
def test_damaged_models_are_refused(trained, tmp_path, capsys, damage, message):
    result, rows, _ = trained
    d = _copy(result.checkpoint, tmp_path)
    damage(d)
    with pytest.raises(ModelFileError, match=message):
        widedeep.load(d)
    pq.write_table(rows, tmp_path / "rows.parquet")
    code = main(["predict", "--model", str(d), "--input", str(tmp_path / "rows.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_model_path_is_one_line(tmp_path, capsys):
    code = main(["evaluate", "--model", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight random (padding rows stay zero) and batch-norm statistics non-trivial."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
            if name.endswith("weight") and isinstance(
                model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.EmbeddingBag
            ):
                p[0] = 0.0
        for name, b in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                b.copy_(torch.rand_like(b) + 0.5)
    return model.eval()


@pytest.mark.parametrize("model_type", ["wide", "deep", "wide_deep"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_small_batch_forward_equals_the_module(model_type, batch_norm):
    """The NumPy path used for a few rows computes the module's forward (float32 rounding)."""
    from widedeep.predict import SMALL_BATCH, Predictor, SmallBatchForward

    tags = fc.categorical_column_with_vocabulary_list("tags", ["a", "b", "c", "d"])
    spec = FeatureSpec(
        [tags, fc.categorical_column_with_hash_bucket("city", 50)],
        [
            fc.numeric_column("x"),
            fc.embedding_column(tags, dimension=3, combiner="mean"),
            fc.embedding_column(tags, dimension=2, combiner="sum"),  # several ids, no weights
            fc.indicator_column(fc.categorical_column_with_hash_bucket("city", 20)),
            fc.indicator_column(tags),
        ],
        label="y",
    )
    rng = np.random.default_rng(0)
    rows = [
        {
            "tags": list(rng.choice(["a", "b", "c", "d", "zz"], size=rng.integers(0, 4))),
            "city": str(rng.choice(["paris", "rome", "oslo"])),
            "x": float(rng.normal()),
            "y": int(rng.integers(0, 2)),
        }
        for _ in range(SMALL_BATCH)
    ]
    spec.fit(rows)
    config = ModelConfig.from_spec(
        spec, model_type=model_type, hidden_units=[8, 4], batch_norm=batch_norm
    )
    model = _randomised(WideDeep(config))
    small = SmallBatchForward.for_model(model)
    assert small is not None
    batch = spec.transform(rows, label=False)
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(small(batch), expected, rtol=1e-5, atol=1e-6)
    predictor = Predictor(spec, model)
    np.testing.assert_allclose(
        [predictor.predict_logits(r)[0, 0] for r in rows[:5]], expected[:5, 0], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "head, output_range",
    [("binary", None), ("multiclass", None), ("regression", None), ("regression", (0.75, 5.25))],
)
def test_numpy_outputs_equal_the_torch_ones(head, output_range):
    """The serving path's NumPy twin of ``heads.outputs``, extreme logits included."""
    from widedeep.heads import outputs, outputs_numpy

    rng = np.random.default_rng(0)
    width = 3 if head == "multiclass" else 1
    logits = np.concatenate(
        [rng.normal(0, 4, (50, width)), np.full((1, width), 100.0), np.full((1, width), -100.0)]
    ).astype(np.float32)
    logits[-1, 0] = -100.0 if head != "multiclass" else 50.0  # a skewed row for softmax
    expected = outputs(torch.from_numpy(logits), head, output_range)
    got = outputs_numpy(logits, head, output_range)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
