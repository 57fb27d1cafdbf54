"""Model, joint training and the run loop on a small census sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from widedeep.batch import Batch
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep
from widedeep.train import TrainConfig, make_optimizers, train


@pytest.fixture(scope="module")
def census_small():
    train_table, test_table = load_census()
    train_table, test_table = train_table.slice(0, 2000), test_table.slice(0, 1000)
    spec = census_spec().fit(train_table)
    return spec, spec.transform(train_table), spec.transform(test_table)


def test_wide_logit_is_sum_of_weights_plus_bias(census_small):
    spec, batch, _ = census_small
    model = WideDeep(ModelConfig.from_spec(spec, model_type="wide"))
    with torch.no_grad():
        model.wide.weight.copy_(torch.randn_like(model.wide.weight))
        model.wide.weight[0] = 0.0
        model.wide_bias.fill_(0.25)
    rows = batch.index(slice(0, 5))
    expected = [
        sum(float(model.wide.weight[i, 0].detach()) for i in row if i != 0) + 0.25
        for row in rows.wide_ids.tolist()
    ]
    np.testing.assert_allclose(model(rows)[:, 0].detach().numpy(), expected, rtol=1e-5)


def test_indicator_ids_equal_one_hot_times_first_layer(census_small):
    """The indicator bag must compute exactly Linear(concat(emb, dense, one_hot))."""
    spec, batch, _ = census_small
    model = WideDeep(ModelConfig.from_spec(spec, model_type="deep"))
    rows = batch.index(slice(0, 7))
    one_hot = torch.zeros(len(rows), spec.indicator_dim_ + 1)
    one_hot.scatter_(1, rows.indicator_ids.long(), 1.0)
    one_hot = one_hot[:, 1:]
    emb = model.embeddings[0](rows.embed_ids[0])
    full_weight = torch.cat([model.first.weight, model.indicator.weight[1:].T], dim=1)
    h = torch.cat([emb, rows.dense, one_hot], 1) @ full_weight.T + model.first.bias
    np.testing.assert_allclose(
        model.rest(h).detach().numpy(), model(rows).detach().numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("model_type", ["wide", "deep", "wide_deep"])
def test_model_types_have_their_parts(census_small, model_type):
    spec, batch, _ = census_small
    model = WideDeep(ModelConfig.from_spec(spec, model_type=model_type))
    assert model.has_wide == (model_type != "deep")
    assert model.has_deep == (model_type != "wide")
    assert model(batch.index(slice(0, 3))).shape == (3, 1)
    optimizers = make_optimizers(model, len(spec.wide_columns), TrainConfig())
    assert (
        set(optimizers)
        == {"wide": {"linear"}, "deep": {"dnn"}, "wide_deep": {"linear", "dnn"}}[model_type]
    )


def test_joint_step_changes_both_parts(census_small):
    spec, batch, _ = census_small
    model = WideDeep(ModelConfig.from_spec(spec))
    optimizers = make_optimizers(model, len(spec.wide_columns), TrainConfig())
    wide_before = model.wide.weight.detach().clone()
    deep_before = model.first.weight.detach().clone()
    rows = batch.index(slice(0, 40))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(rows)[:, 0], rows.label, reduction="sum"
    )
    loss.backward()
    for opt in optimizers.values():
        opt.step()
    touched = torch.unique(rows.wide_ids.long())
    touched = touched[touched != 0]
    assert not torch.equal(model.wide.weight[touched], wide_before[touched])
    untouched = torch.ones(len(wide_before), dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(model.wide.weight[untouched], wide_before[untouched])
    assert not torch.equal(model.first.weight, deep_before)
    assert isinstance(optimizers["linear"], __import__("widedeep.optim").optim.Ftrl)


def test_training_learns_and_logs(census_small, tmp_path):
    spec, train_batch, eval_batch = census_small
    config = TrainConfig(train_epochs=4, epochs_between_evals=2, batch_size=40)
    result = train(
        spec, train_batch, eval_batch, ModelConfig.from_spec(spec), config, tmp_path, quiet=True
    )
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [2, 4]
    assert lines[-1]["global_step"] == 4 * int(np.ceil(2000 / 40))
    assert result.metrics["auc"] > 0.7  # well above chance (0.5) on held-out rows
    assert result.metrics["accuracy_baseline"] == pytest.approx(
        max(eval_batch.label.mean().item(), 1 - eval_batch.label.mean().item()), abs=1e-6
    )


def test_output_range_squashes_a_regression_by_hand():
    """lo + (hi - lo) * sigmoid(z): the loss and its gradient through the squash."""
    from widedeep.heads import outputs, training_loss

    z = torch.tensor([[0.0], [np.log(3.0)], [-50.0]], requires_grad=True)
    label = torch.tensor([4.0, 4.0, 1.0])
    np.testing.assert_allclose(outputs(z.detach(), "regression", (1, 5)), [3.0, 4.0, 1.0])
    loss = training_loss(z, label, None, "regression", "sum", (1, 5))
    loss.backward()
    assert loss.item() == pytest.approx(1.0, abs=1e-6)  # (3 - 4)^2 + 0 + 0
    # d/dz (v - y)^2 = 2 (v - y) * (hi - lo) * s (1 - s); at z = 0: 2 * -1 * 4 * 0.25
    np.testing.assert_allclose(z.grad[:, 0].numpy(), [-2.0, 0.0, 0.0], atol=1e-6)


def test_a_bounded_regression_trains_inside_its_range(census_small):
    """Hours per week (1-99) with output_range (1, 99): every prediction lies inside, and
    the reported RMSE is that of the predictions."""
    from widedeep.predict import Predictor
    from widedeep.transform import FeatureSpec, Label

    train_table, test_table = (t.slice(0, 2000) for t in load_census())
    spec = census_small[0]
    label = Label("hours_per_week", "regression", output_range=(1.0, 99.0))
    deep = [c for c in spec.deep_columns if c.name != "hours_per_week"]  # not the label
    spec = FeatureSpec(spec.wide_columns, deep, label=label).fit(train_table)
    config = TrainConfig(train_epochs=2, batch_size=64, dnn_learning_rate=0.05)
    result = train(spec, spec.transform(train_table), spec.transform(test_table),
                   ModelConfig.from_spec(spec, hidden_units=[16]), config, quiet=True)  # fmt: skip
    predicted = Predictor(spec, result.model).predict(test_table)
    hours = test_table.column("hours_per_week").to_numpy()
    assert ((predicted > 1) & (predicted < 99)).all()
    rmse = float(np.sqrt(np.mean((predicted - hours) ** 2)))
    assert result.metrics["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert rmse < float(np.std(hours))  # learned more than the mean


def test_same_seed_same_metrics(census_small):
    spec, train_batch, eval_batch = census_small
    config = TrainConfig(train_epochs=2, epochs_between_evals=2, batch_size=64, seed=3)
    a = train(spec, train_batch, eval_batch, ModelConfig.from_spec(spec), config, quiet=True)
    b = train(spec, train_batch, eval_batch, ModelConfig.from_spec(spec), config, quiet=True)
    assert a.metrics["auc"] == b.metrics["auc"]
    assert a.metrics["loss"] == b.metrics["loss"]


def test_resume_continues_exactly(census_small, tmp_path):
    spec, train_batch, eval_batch = census_small
    model_config = ModelConfig.from_spec(spec, dropout=0.1)  # dropout: the RNG must resume too

    def run(epochs, model_dir):
        config = TrainConfig(train_epochs=epochs, epochs_between_evals=2, batch_size=50)
        return train(spec, train_batch, eval_batch, model_config, config, model_dir, quiet=True)

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b")
    assert resumed.state.global_step == straight.state.global_step
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_resume_refuses_a_different_model(census_small, tmp_path):
    spec, train_batch, eval_batch = census_small
    config = TrainConfig(train_epochs=2, epochs_between_evals=2, batch_size=200)
    train(spec, train_batch, eval_batch, ModelConfig.from_spec(spec), config, tmp_path, quiet=True)
    other = ModelConfig.from_spec(spec, hidden_units=[8])
    with pytest.raises(ValueError, match="--clean"):
        train(spec, train_batch, eval_batch, other, config, tmp_path, quiet=True)


def test_batch_concat_pads_lists():
    def batch(ids):
        ids = torch.tensor(ids, dtype=torch.int32)
        return Batch(ids, None, [ids], [None], ids, None, torch.zeros(len(ids), 2))

    merged = Batch.concat([batch([[1], [2]]), batch([[3, 4]])])
    assert merged.wide_ids.tolist() == [[1, 0], [2, 0], [3, 4]]
    assert len(merged) == 3
