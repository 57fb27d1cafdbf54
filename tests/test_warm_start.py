"""Warm start copies weights by meaning; the release gate compares a new model with the old."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import widedeep
from widedeep import artifact
from widedeep import feature_column as fc
from widedeep.cli import main
from widedeep.datasets.census import LABEL_COLUMN, POSITIVE_LABEL, build_model_columns, load_census
from widedeep.model import ModelConfig, WideDeep
from widedeep.release import ReleaseRefused, check_release
from widedeep.train import TrainConfig, evaluate, train
from widedeep.transform import FeatureSpec, Label
from widedeep.warm_start import warm_start, warm_start_from

EDUCATION = ["Bachelors", "HS-grad", "11th", "Masters", "9th", "Some-college", "Assoc-acdm"]
EDUCATION += ["Assoc-voc", "7th-8th", "Doctorate", "Prof-school", "5th-6th", "10th", "1st-4th"]
EDUCATION += ["Preschool", "12th"]


def make_spec(education: list[str], occupation_buckets: int = 1000, reorder: bool = False):
    """The census columns with ``education``'s vocabulary (and occupation's size) replaced."""
    wide, deep = build_model_columns()
    education_column = fc.categorical_column_with_vocabulary_list("education", education)
    occupation = fc.categorical_column_with_hash_bucket("occupation", occupation_buckets)

    def swap(c):
        if isinstance(c, fc.VocabularyListColumn) and c.key == "education":
            return education_column
        if isinstance(c, fc.HashBucketColumn):
            return occupation
        if isinstance(c, fc.IndicatorColumn):
            return fc.indicator_column(swap(c.categorical_column))
        if isinstance(c, fc.EmbeddingColumn):
            return fc.embedding_column(swap(c.categorical_column), c.dimension)
        return c

    wide, deep = [swap(c) for c in wide], [swap(c) for c in deep]
    deep.append(fc.embedding_column(education_column, dimension=4))
    if reorder:  # every id range moves
        wide, deep = wide[::-1], deep[:5] + deep[5:][::-1]
    label = Label(LABEL_COLUMN, "binary", ("<=50K", POSITIVE_LABEL))
    return FeatureSpec(wide, deep, label=label)


@pytest.fixture(scope="module")
def data():
    train_table, test_table = load_census()
    return train_table.slice(0, 1500), test_table.slice(0, 500)


@pytest.fixture(scope="module")
def previous(data, tmp_path_factory):
    """A model trained a few steps on the reference columns, saved."""
    train_table, test_table = data
    spec = make_spec(EDUCATION).fit(train_table)
    model_dir = tmp_path_factory.mktemp("previous")
    config = TrainConfig(train_epochs=1, batch_size=50)
    result = train(
        spec, spec.transform(train_table), None, ModelConfig.from_spec(spec), config, model_dir,
        quiet=True, log=lambda _: None,
    )  # fmt: skip
    return spec, result.model, result.checkpoint


def _wide_row(spec: FeatureSpec, model: WideDeep, column: str, index: int) -> torch.Tensor:
    names = [c.name for c in spec.wide_columns]
    base = 1 + sum(spec.wide_sizes()[: names.index(column)])
    return model.wide.weight[base + index]


def _embedding_row(spec: FeatureSpec, model: WideDeep, column: str, index: int) -> torch.Tensor:
    names = [c.name for c in spec.deep_columns if isinstance(c, fc.EmbeddingColumn)]
    return model.embeddings[names.index(column)].weight[1 + index]


def test_shared_values_keep_their_weights_wherever_their_id_moved(previous, data):
    old_spec, old_model, _ = previous
    # reversed order (every id moves), "Preschool" dropped, a value never seen before added
    new_vocabulary = ["Unknown-degree"] + [v for v in EDUCATION[::-1] if v != "Preschool"]
    spec = make_spec(new_vocabulary, occupation_buckets=500).fit(data[0])
    torch.manual_seed(1)
    model = WideDeep(ModelConfig.from_spec(spec))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = warm_start(model, spec, old_model, old_spec)

    for new_id, value in enumerate(new_vocabulary):
        if value in EDUCATION:
            old_id = EDUCATION.index(value)
            for row in (_wide_row, _embedding_row):
                column = "education" if row is _wide_row else "education_embedding"
                torch.testing.assert_close(
                    row(spec, model, column, new_id), row(old_spec, old_model, column, old_id)
                )
    # the new value starts fresh: zero in the wide part, its own initial draw in the deep part
    assert _wide_row(spec, model, "education", 0).item() == 0.0
    e = [c.name for c in spec.deep_columns if isinstance(c, fc.EmbeddingColumn)]
    k = e.index("education_embedding")
    torch.testing.assert_close(model.embeddings[k].weight[1], fresh[f"embeddings.{k}.weight"][1])
    # the trained weights were not zero, so equality above is not trivially true
    assert _wide_row(old_spec, old_model, "education", EDUCATION.index("HS-grad")).abs() > 0
    assert report.copied["wide education"] == (15, 16)
    assert report.copied["deep education_embedding"] == (15, 16)
    # occupation changed size: its buckets mean other values now, so nothing is copied
    assert "wide occupation" in report.fresh and "deep occupation_embedding" in report.fresh
    assert report.copied["wide education_X_occupation"] == (1000, 1000)


def test_first_evaluation_equals_the_previous_model(previous, data):
    old_spec, old_model, _ = previous
    _, test_table = data
    # same values in another order, plus one absent from the data; columns in another order
    spec = make_spec(EDUCATION[::-1] + ["Unknown-degree"], reorder=True).fit(data[0])
    model = WideDeep(ModelConfig.from_spec(spec))
    before = evaluate(old_model, old_spec.transform(test_table), "binary", 50)
    cold = evaluate(model, spec.transform(test_table), "binary", 50)
    warm_start(model, spec, old_model, old_spec)
    after = evaluate(model, spec.transform(test_table), "binary", 50)
    assert abs(cold["average_loss"] - before["average_loss"]) > 1e-3  # not equal by chance
    for key in ("auc", "accuracy", "average_loss", "prediction/mean"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key


def test_train_hook_and_cli_flag_log_what_was_copied(previous, data, tmp_path, capsys):
    old_spec, _, checkpoint = previous
    spec = make_spec(EDUCATION).fit(data[0])
    lines: list[str] = []
    hook = warm_start_from(checkpoint, spec, log=lines.append)
    config = TrainConfig(train_epochs=1, batch_size=50)
    result = train(
        spec, spec.transform(data[0]), spec.transform(data[1]), ModelConfig.from_spec(spec),
        config, quiet=True, init_model=hook, log=lines.append,
    )  # fmt: skip
    assert lines[0] == f"warm start from {checkpoint}:"
    assert "  wide education: copied 16 of 16" in lines
    assert result.metrics["auc"] > 0.5

    argv = ["train", "--train_epochs", "1", "--batch_size", "2000", "--threads", "1",
            "--model_dir", str(tmp_path / "m"), "--warm_start_from", str(checkpoint)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"warm start from {checkpoint}:" in out and "wide education: copied 16 of 16" in out
    argv[-1] = str(tmp_path / "nowhere")
    assert main(argv + ["--clean"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_warm_start_refuses_another_label(previous, data):
    old_spec, old_model, _ = previous
    wide, deep = build_model_columns()
    spec = FeatureSpec(wide, deep, label=Label(LABEL_COLUMN, "binary", (">50K", "<=50K")))
    spec.fit(data[0])
    with pytest.raises(ValueError, match="same label head and classes"):
        warm_start(WideDeep(ModelConfig.from_spec(spec)), spec, old_model, old_spec)


# --------------------------------------------------------------------------- release gate


def _degraded(spec, model, path, scale=-1.0, nan=False):
    """The model with its output flipped (worse than chance) or a NaN weight, saved at ``path``."""
    bad = WideDeep(model.config)
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad.wide.weight.mul_(scale)
        bad.wide_bias.mul_(scale)
        last = [m for m in bad.rest if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        if nan:
            last.bias.fill_(float("nan"))
    artifact.write_model_dir(path, spec, bad, {"source": "test"})
    return path


def test_gate_passes_a_model_against_itself_and_refuses_a_worse_one(previous, data, tmp_path):
    spec, model, checkpoint = previous
    good = widedeep.load(checkpoint)
    result = check_release(good, data[1], good, max_drop=0.0)
    assert result.new == result.previous and result.metric == "auc"
    worse = widedeep.load(_degraded(spec, model, tmp_path / "worse"))
    with pytest.raises(ReleaseRefused) as e:
        check_release(worse, data[1], good, max_drop=0.005)
    auc_new = worse.evaluate(data[1])["auc"]
    auc_old = good.evaluate(data[1])["auc"]
    assert auc_new < auc_old - 0.005
    assert f"{auc_new:.4f}" in str(e.value) and f"{auc_old:.4f}" in str(e.value)
    nan = widedeep.load(_degraded(spec, model, tmp_path / "nan", nan=True))
    with pytest.raises(ReleaseRefused, match="non-finite"):
        check_release(nan, data[1], good)


def test_cli_export_gate(previous, data, tmp_path, capsys):
    spec, model, checkpoint = previous
    pq.write_table(data[1], tmp_path / "eval.parquet")
    exports = tmp_path / "exports"
    assert main(["export", "--model_dir", str(checkpoint), "--export_dir", str(exports)]) == 0
    first = widedeep.load(exports).path
    # against itself: passes, with both figures and a release.json in the export
    argv = ["export", "--model_dir", str(checkpoint), "--export_dir", str(exports),
            "--compare_to", str(exports), "--eval", str(tmp_path / "eval.parquet")]  # fmt: skip
    assert main(argv) == 0
    assert "release check passed: auc" in capsys.readouterr().out
    second = widedeep.load(exports).path
    release = json.loads((second / "release.json").read_text())
    assert release["new"] == release["previous"] and release["previous_path"] == str(first)
    # a degraded model: refused with exit 1, both AUCs named, nothing exported
    worse = _degraded(spec, model, tmp_path / "worse")
    argv[2] = str(worse)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "auc" in err and "previous model" in err
    assert sorted(p.name for p in exports.iterdir()) == sorted([first.name, second.name])
    # non-finite scores: refused even without a previous model to compare with
    argv[2] = str(_degraded(spec, model, tmp_path / "nan", nan=True))
    assert main(argv[:5] + argv[7:]) == 1
    assert "non-finite" in capsys.readouterr().err


def test_estimator_warm_start_from(data, tmp_path):
    """TensorFlow's ``warm_start_from`` argument: before any step, the new estimator predicts
    what the previous one did."""
    from widedeep.estimator import WideDeepClassifier

    train_table, test_table = data
    X, y = train_table.drop_columns([LABEL_COLUMN]), train_table.column(LABEL_COLUMN)
    wide, deep = build_model_columns()
    first = WideDeepClassifier(wide, deep, epochs=1, batch_size=100, model_dir=tmp_path / "a")
    first.fit(X, y.to_pylist())
    second = WideDeepClassifier(wide, deep, warm_start_from=tmp_path / "a")
    second.fit(X, y.to_pylist(), max_steps=0)
    np.testing.assert_allclose(
        second.predict_proba(test_table), first.predict_proba(test_table), atol=1e-6
    )
