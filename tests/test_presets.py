"""Presets (plain YAML recipes), numeric columns used as categorical ones, and the reference
run's numeric handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from widedeep import feature_column as fc
from widedeep.cli import build_parser, main
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep
from widedeep.presets import PresetError, available_presets, load_preset
from widedeep.train import TrainConfig
from widedeep.transform import FeatureSpec


@pytest.fixture(scope="module")
def census_sample():
    train_table, test_table = load_census()
    return train_table.slice(0, 3000), test_table.slice(0, 1500)


def test_shipped_presets():
    assert {"reference", "best"} <= set(available_presets())


def test_reference_preset_is_the_census_example():
    preset = load_preset("reference")
    assert preset.feature_spec().to_dict() == census_spec().to_dict()
    assert preset.train_config() == TrainConfig()  # the reference run's defaults
    assert ModelConfig(**preset.model) == ModelConfig()


def test_best_preset_loads_and_trains_on_a_sample(census_sample):
    train_table, test_table = census_sample
    preset = load_preset("best")
    assert preset.dataset == "census"
    result = preset.fit(train_table, test_table, train_epochs=2, epochs_between_evals=2)
    # 2 epochs on 3,000 rows: far above chance (0.5), which a broken pipeline would give
    assert result.metrics["auc"] > 0.85
    assert result.state.epoch == 2
    # the preset's columns read every census feature but the sampling weight
    keys = set(preset.feature_spec().input_keys)
    assert {"race", "gender", "native_country", "capital_gain"} <= keys


def test_a_copied_preset_file_loads_with_its_spec_file(tmp_path):
    """Users copy a preset and its spec file, edit them, and pass the path."""
    from widedeep.presets import PRESETS_DIR

    for name in ("best.yaml", "census_best.yaml"):
        (tmp_path / name).write_text((PRESETS_DIR / name).read_text())
    edited = (tmp_path / "best.yaml").read_text().replace("train_epochs: 12", "train_epochs: 3")
    (tmp_path / "mine.yaml").write_text(edited)
    preset = load_preset(tmp_path / "mine.yaml")
    assert preset.train_config().train_epochs == 3
    assert preset.feature_spec().to_dict() == load_preset("best").feature_spec().to_dict()


def test_preset_overrides_and_errors(tmp_path):
    preset = load_preset("best")
    assert preset.train_config(seed=7).seed == 7
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: {wide_columns: []}\ntrain: {epochs: 3}\n")
    with pytest.raises(PresetError, match=r"unknown train setting\(s\) \['epochs'\]"):
        load_preset(bad)


def test_cli_preset_sets_defaults_and_flags_override():
    from widedeep.cli import _preset_defaults

    best = load_preset("best")
    argv = ["train", "--preset", "best"]
    args = build_parser(_preset_defaults(argv)).parse_args(argv)
    assert args.batch_size == best.train["batch_size"]
    assert args.hidden_units == best.model["hidden_units"]
    argv = ["train", "--preset", "best", "--batch_size", "7"]
    assert build_parser(_preset_defaults(argv)).parse_args(argv).batch_size == 7
    plain = build_parser().parse_args(["train"])
    assert (plain.preset, plain.batch_size, plain.train_epochs) == ("reference", 40, 40)


def test_cli_unknown_preset_is_one_line(capsys):
    assert main(["train", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- numeric as categorical

ROWS = {"capital_gain": [0, 0, 7688, 0, 7688, 99999, 0, 15024], "y": [0, 0, 1, 0, 1, 1, 0, 1]}


def test_numeric_values_as_a_learned_vocabulary_in_the_wide_part():
    gain = fc.categorical_column_with_vocabulary_from_data("capital_gain", min_count=2)
    spec = FeatureSpec([gain], [], label="y").fit(ROWS)
    # values seen at least twice, most frequent first; others go to the one OOV bucket
    assert spec.state_["vocabulary_from_data:capital_gain"]["vocabulary"] == ["0", "7688"]
    batch = spec.transform({"capital_gain": [7688, 0, 12345, 7688.0]})
    # wide ids: 1 + vocabulary index, OOV = 1 + 2; a float 7688.0 is the value 7688
    assert batch.wide_ids[:, 0].tolist() == [2, 1, 3, 2]


def test_numeric_values_as_a_learned_vocabulary_in_the_deep_part():
    gain = fc.categorical_column_with_vocabulary_from_data("capital_gain", min_count=2)
    spec = FeatureSpec(
        [fc.crossed_column(["capital_gain", gain], 50)],
        [fc.embedding_column(gain, 3), fc.indicator_column(gain)],
        label="y",
    ).fit(ROWS)
    batch = spec.transform({"capital_gain": [7688, 0, 12345]})
    assert batch.embed_ids[0][:, 0].tolist() == [2, 1, 3]
    assert batch.indicator_ids[:, 0].tolist() == [2, 1, 3]
    model = WideDeep(ModelConfig.from_spec(spec, hidden_units=[4]))
    with torch.no_grad():  # the deep input of a row is its value's embedding row
        rows = batch.index(slice(0, 3))
        embedded = model.embeddings[0](rows.embed_ids[0])
        np.testing.assert_allclose(embedded, model.embeddings[0].weight[[2, 1, 3]])
    assert model(batch).shape == (3, 1)


# --------------------------------------------------------------------------- the reference fix


def test_reference_deep_numerics_are_unit_free(census_sample):
    """The deep part sees standardised numerics: the same inputs whatever the units (dollars or
    cents), mean 0 and standard deviation 1 on the training data, so no raw 99,999 saturates
    the first layer."""
    train_table, _ = census_sample
    spec = census_spec().fit(train_table)
    dense = spec.transform(train_table).dense.numpy()
    np.testing.assert_allclose(dense.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(dense.std(axis=0), 1, atol=1e-4)
    scaled = train_table.set_column(
        train_table.schema.get_field_index("capital_gain"),
        "capital_gain",
        [np.asarray(train_table.column("capital_gain")) * 100],
    )
    rescaled = census_spec().fit(scaled).transform(scaled).dense.numpy()
    np.testing.assert_allclose(rescaled, dense, rtol=1e-4, atol=1e-5)


def test_reference_first_layer_starts_unsaturated(census_sample):
    """Why the raw reference's deep part could die: a raw capital_gain of 99,999 times a Glorot
    weight puts first-layer pre-activations in the thousands, so one AdaGrad step moves them by
    hundreds. Standardised, every pre-activation at initialisation is of order one."""
    train_table, _ = census_sample
    spec = census_spec().fit(train_table)
    batch = spec.transform(train_table)
    torch.manual_seed(0)
    model = WideDeep(ModelConfig.from_spec(spec, model_type="deep"))
    with torch.no_grad():
        x = torch.cat([model.embeddings[0](batch.embed_ids[0]), batch.dense], dim=1)
        h = model.first(x) + model.indicator(batch.indicator_ids)
    assert h.abs().max().item() < 20


def test_cli_trains_the_best_preset(tmp_path):
    import gzip
    from importlib import resources

    from widedeep import artifact

    data = resources.files("widedeep.datasets") / "data"
    for name, rows in (("adult.data", 1500), ("adult.test", 600)):
        with gzip.open(data / f"{name}.gz", "rt") as f:
            (tmp_path / name).write_text("".join(next(f) for _ in range(rows)))
    model_dir = tmp_path / "model"
    argv = ["train", "--preset", "best", "--data_dir", str(tmp_path), "--train_epochs", "1",
            "--model_dir", str(model_dir), "--quiet", "--threads", "1"]
    assert main(argv) == 0
    spec, model, config, _ = artifact.read_model_dir(model_dir)
    assert config["settings"]["preset"] == "best"
    assert config["settings"]["train"]["train_epochs"] == 1  # the flag beat the preset's 12
    assert model.config.hidden_units == [256, 128] and model.config.dropout == 0.2
    assert "vocabulary_from_data:capital_gain" in spec.state_
