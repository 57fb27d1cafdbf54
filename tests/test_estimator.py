"""The scikit-learn style and TensorFlow-named estimators."""

from __future__ import annotations

import numpy as np
import pytest

from widedeep import feature_column as fc
from widedeep.datasets.census import LABEL_COLUMN, build_model_columns, load_census
from widedeep.estimator import (
    DNNClassifier,
    DNNLinearCombinedClassifier,
    LinearRegressor,
    WideDeepClassifier,
    WideDeepRegressor,
)
from widedeep.transform import DataError


@pytest.fixture(scope="module")
def census():
    train, test = load_census()
    train, test = train.slice(0, 3000), test.slice(0, 1000)
    split = lambda t: (t.drop_columns([LABEL_COLUMN]), t.column(LABEL_COLUMN).to_pylist())  # noqa: E731
    return split(train), split(test)


def test_sklearn_classifier(census):
    (X, y), (Xt, yt) = census
    wide, deep = build_model_columns()
    clf = WideDeepClassifier(wide, deep, epochs=2, batch_size=100).fit(X, y)
    assert list(clf.classes_) == ["<=50K", ">50K"]  # learned, sorted
    proba = clf.predict_proba(Xt)
    assert proba.shape == (1000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    predicted = clf.predict(Xt)
    assert list(predicted) == [clf.classes_[i] for i in proba.argmax(axis=1)]
    assert clf.score(Xt, yt) == pytest.approx(np.mean(np.asarray(yt) == predicted))
    metrics = clf.evaluate(Xt, yt)
    assert metrics["accuracy"] == pytest.approx(clf.score(Xt, yt))
    assert metrics["global_step"] == 2 * 30
    with pytest.raises(RuntimeError, match="not fitted"):
        WideDeepClassifier(wide, deep).predict(Xt)


def test_tensorflow_names_and_prediction_keys(census):
    (X, y), (Xt, _) = census
    wide, deep = build_model_columns()
    est = DNNLinearCombinedClassifier(
        linear_feature_columns=wide,
        dnn_feature_columns=deep,
        dnn_hidden_units=[16, 8],
        label_vocabulary=["<=50K", ">50K"],
        config={"batch_size": 40},
    )
    est.train(input_fn=lambda: (X, y), steps=25)
    assert est._impl.global_step_ == 25
    rows = list(est.predict(lambda: (Xt.slice(0, 4), None)))
    for row in rows:
        assert set(row) == {"logits", "logistic", "probabilities", "class_ids", "classes"}
        assert row["logistic"][0] == pytest.approx(
            np.exp(-np.logaddexp(0.0, -float(row["logits"][0]))), rel=1e-5, abs=1e-12
        )
        assert row["class_ids"][0] == int(row["probabilities"].argmax())
        assert row["classes"][0].decode() == ["<=50K", ">50K"][row["class_ids"][0]]


def test_dnn_classifier_needs_only_deep_columns(census):
    (X, y), (Xt, yt) = census
    _, deep = build_model_columns()
    est = DNNClassifier(
        hidden_units=[8],
        feature_columns=deep,
        label_vocabulary=["<=50K", ">50K"],
        config={"epochs": 1, "batch_size": 200},
    )
    metrics = est.train(X, labels=y).evaluate(Xt, labels=yt)
    assert 0 <= metrics["auc"] <= 1 and metrics["global_step"] == 15


def test_regressor_recovers_a_linear_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    group = rng.choice(["a", "b", "c"], size=2000)
    offset = {"a": -1.0, "b": 0.0, "c": 2.0}
    y = 3.0 * x + np.array([offset[g] for g in group])
    data = {"x": x, "group": group.tolist()}
    cols = [fc.numeric_column("x"), fc.categorical_column_with_vocabulary_list("group", "abc")]
    reg = LinearRegressor(
        cols,
        optimizer="Adagrad",
        config={"epochs": 30, "batch_size": 50, "linear_learning_rate": 0.5},
    )
    reg.train(data, labels=y)
    assert reg.evaluate(data, labels=y)["rmse"] < 0.1
    sk = WideDeepRegressor(
        cols,
        model_type="wide",
        linear_optimizer="adagrad",
        linear_learning_rate=0.5,
        epochs=30,
        batch_size=50,
    ).fit(data, y)
    assert sk.score(data, y) > 0.99  # R² of an exactly linear target
    # the same target squashed into its own range: predictions stay inside, and still fit
    lo, hi = y.min(), y.max()
    bounded = WideDeepRegressor(cols, model_type="wide", output_range=(lo, hi), epochs=30,
                                linear_optimizer="adagrad", linear_learning_rate=0.5)  # fmt: skip
    inside = bounded.fit(data, y).predict(data)
    assert ((inside > lo) & (inside < hi)).all() and bounded.score(data, y) > 0.95
    assert bounded.output_range == (lo, hi)  # stored as given (scikit-learn style)
    narrow = WideDeepRegressor(cols, model_type="wide", output_range=(lo, 0.0), epochs=1)
    with pytest.raises(DataError, match="outside the label's output_range"):
        narrow.fit(data, y)  # labels the squash could never reach


def test_multiclass_classifier():
    rng = np.random.default_rng(1)
    colour = rng.choice(["red", "green", "blue"], size=1500)
    target = [{"red": "R", "green": "G", "blue": "B"}[c] for c in colour]
    data = {"colour": colour.tolist()}
    column = fc.categorical_column_with_vocabulary_list("colour", ["red", "green", "blue"])
    clf = WideDeepClassifier(
        deep_columns=[fc.indicator_column(column)],
        hidden_units=[8],
        n_classes=3,
        epochs=5,
        batch_size=50,
        dnn_learning_rate=0.1,
    )
    clf.fit(data, target)
    assert sorted(clf.classes_) == ["B", "G", "R"]
    assert clf.predict_proba(data).shape == (1500, 3)
    assert clf.score(data, target) == 1.0
