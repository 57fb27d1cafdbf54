"""Python APIs over the run loop: scikit-learn style, and TensorFlow's canned estimators.

``WideDeepClassifier`` / ``WideDeepRegressor`` follow scikit-learn: the
constructor stores parameters, ``fit`` learns, fitted state ends in ``_``.

``DNNLinearCombinedClassifier``, ``LinearClassifier``, ``DNNClassifier`` and the
``...Regressor`` variants accept TensorFlow's argument names
(``linear_feature_columns``, ``dnn_feature_columns``, ``dnn_hidden_units``,
``linear_optimizer``, ``dnn_optimizer``, ``n_classes``, ``model_dir``,
``dnn_dropout``, ``label_vocabulary``) so that estimator code ports by changing
imports.  ``train`` / ``evaluate`` / ``predict`` take either a TensorFlow-style
``input_fn`` returning ``(features, labels)`` or the data directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .heads import outputs_numpy
from .model import ModelConfig
from .predict import Predictor
from .train import TrainConfig, train
from .transform import FeatureSpec, Label, as_table
from .warm_start import warm_start_from

_LABEL = "__label__"


def _with_label(data: Any, y: Any, label_key: str) -> pa.Table:
    """The features as a Table, with ``y`` attached as the label column when given."""
    table = as_table(data)
    if y is None:
        return table
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != table.num_rows:
        raise ValueError(f"y must be one label per row ({table.num_rows}), got shape {y.shape}")
    if label_key in table.column_names:
        table = table.drop_columns([label_key])
    return table.append_column(label_key, pa.array(y.tolist()))


class _Base:
    """Shared fit / predict / evaluate on FeatureSpec + WideDeep + the run loop."""

    _head = "binary"
    output_range: tuple[float, float] | None = None  # regression only (WideDeepRegressor)

    def __init__(
        self,
        wide_columns: Sequence = (),
        deep_columns: Sequence = (),
        *,
        model_type: str | None = None,
        hidden_units: Sequence[int] = (100, 75, 50, 25),
        label_key: str = _LABEL,
        classes: Sequence[str] | None = None,
        weight_column: str | None = None,
        dropout: float | None = None,
        batch_norm: bool = False,
        epochs: int = 10,
        batch_size: int = 256,
        epochs_between_evals: int = 1,
        linear_optimizer: str = "ftrl",
        linear_learning_rate: float | None = None,
        dnn_optimizer: str = "adagrad",
        dnn_learning_rate: float | None = None,
        loss_reduction: str = "sum",
        model_dir: str | Path | None = None,
        warm_start_from: str | Path | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.wide_columns = wide_columns
        self.deep_columns = deep_columns
        self.model_type = model_type
        self.hidden_units = hidden_units
        self.label_key = label_key
        self.classes = classes
        self.weight_column = weight_column
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.epochs_between_evals = epochs_between_evals
        self.linear_optimizer = linear_optimizer
        self.linear_learning_rate = linear_learning_rate
        self.dnn_optimizer = dnn_optimizer
        self.dnn_learning_rate = dnn_learning_rate
        self.loss_reduction = loss_reduction
        self.model_dir = model_dir
        self.warm_start_from = warm_start_from
        self.seed = seed
        self.verbose = verbose

    def _model_type(self) -> str:
        if self.model_type:
            return self.model_type
        if self.wide_columns and self.deep_columns:
            return "wide_deep"
        return "wide" if self.wide_columns else "deep"

    def _label(self, table: pa.Table) -> Label:
        head = self._head
        classes = self.classes
        if head == "binary" and classes is None:
            values = table.column(self.label_key).drop_null()
            if not pa.types.is_integer(values.type) and not pa.types.is_boolean(values.type):
                classes = sorted(set(values.cast(pa.string()).to_pylist()))
                if len(classes) > 2:
                    raise ValueError(
                        f"label {self.label_key!r} has {len(classes)} classes {classes[:5]}...; "
                        "use a multi-class model (n_classes) or declare classes"
                    )
        return Label(self.label_key, head, classes, self.output_range)

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        eval_data: Any = None,
        eval_y: Any = None,
        max_steps: int | None = None,
    ) -> _Base:
        """Fit the feature spec and train; ``eval_data`` is evaluated every few epochs."""
        table = _with_label(X, y, self.label_key)
        label = self._label(table)
        spec = FeatureSpec(self.wide_columns, self.deep_columns, label, self.weight_column)
        spec.fit(table)
        eval_batch = None
        if eval_data is not None:
            eval_batch = spec.transform(_with_label(eval_data, eval_y, self.label_key), label=True)
        model_config = ModelConfig.from_spec(
            spec,
            model_type=self._model_type(),
            hidden_units=list(self.hidden_units),
            dropout=self.dropout,
            batch_norm=self.batch_norm,
        )
        config = TrainConfig(
            train_epochs=self.epochs,
            epochs_between_evals=self.epochs_between_evals,
            batch_size=self.batch_size,
            seed=self.seed,
            linear_optimizer=self.linear_optimizer,
            linear_learning_rate=self.linear_learning_rate,
            dnn_optimizer=self.dnn_optimizer,
            dnn_learning_rate=self.dnn_learning_rate,
            loss_reduction=self.loss_reduction,
            max_steps=max_steps,
        )
        log = print if self.verbose else (lambda _: None)
        init_model = None
        if self.warm_start_from is not None:  # paper §4.2: start from the previous model
            init_model = warm_start_from(self.warm_start_from, spec, log=log)
        result = train(
            spec,
            spec.transform(table, label=True),
            eval_batch,
            model_config,
            config,
            self.model_dir,
            quiet=not self.verbose,
            log=log,
            init_model=init_model,
        )
        self.spec_ = spec
        self.model_ = result.model
        self.predictor_ = Predictor(spec, result.model)
        self.metrics_ = result.metrics
        self.history_ = result.state.history
        self.global_step_ = result.state.global_step
        return self

    def _require_fitted(self) -> Predictor:
        if not hasattr(self, "predictor_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return self.predictor_

    def evaluate(self, X: Any, y: Any = None) -> dict[str, float]:
        """The reference metrics (the Estimator's names) on labelled rows."""
        predictor = self._require_fitted()
        metrics = predictor.evaluate(_with_label(X, y, self.label_key), self.batch_size)
        return {**metrics, "global_step": self.global_step_}


class WideDeepClassifier(_Base):
    """Binary (or, with ``n_classes > 2``, multi-class) Wide & Deep classifier.

    ``predict_proba`` returns ``[rows, n_classes]`` as scikit-learn does.
    """

    def __init__(
        self,
        wide_columns: Sequence = (),
        deep_columns: Sequence = (),
        *,
        n_classes: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(wide_columns, deep_columns, **kwargs)
        self.n_classes = n_classes

    @property
    def _head(self) -> str:  # type: ignore[override]
        return "binary" if self.n_classes == 2 else "multiclass"

    @property
    def classes_(self) -> np.ndarray:
        classes = self._require_fitted().classes_
        return np.asarray(classes if classes else [0, 1], dtype=object)

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self._require_fitted().predict_proba(X)
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy, as scikit-learn classifiers score."""
        return float(np.mean(self.predict(X).astype(str) == np.asarray(y).astype(str)))


class WideDeepRegressor(_Base):
    """Wide & Deep regression (squared error), e.g. rating prediction; ``output_range``
    (lo, hi) squashes the predictions into it (ratings 1-5: (0.75, 5.25))."""

    _head = "regression"

    def __init__(
        self,
        wide_columns: Sequence = (),
        deep_columns: Sequence = (),
        *,
        output_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(wide_columns, deep_columns, **kwargs)
        self.output_range = output_range

    def predict(self, X: Any) -> np.ndarray:
        return self._require_fitted().predict_proba(X)

    def score(self, X: Any, y: Any) -> float:
        """R², as scikit-learn regressors score."""
        y = np.asarray(y, dtype=np.float64)
        residual = ((y - self.predict(X)) ** 2).sum()
        return float(1 - residual / ((y - y.mean()) ** 2).sum())


# --------------------------------------------------------------------------- TensorFlow names

_OPTIMIZER_NAMES = {
    "ftrl": "ftrl",
    "adagrad": "adagrad",
    "adam": "adam",
    "sgd": "sgd",
    "rmsprop": "rmsprop",
    "adamw": "adamw",
}


def _optimizer(name: str | None, default: str) -> str:
    key = (name or default).lower()
    if key not in _OPTIMIZER_NAMES:
        raise ValueError(
            f"optimizer {name!r} is not supported; use one of {sorted(_OPTIMIZER_NAMES)} "
            "(by name, as TensorFlow's string shortcuts)"
        )
    return _OPTIMIZER_NAMES[key]


class _TFEstimator:
    """The tf.estimator surface: ``train(input_fn)``, ``evaluate(input_fn)``, ``predict``."""

    def __init__(self, impl: _Base, n_classes: int = 2) -> None:
        self._impl = impl
        self._n_classes = n_classes

    @property
    def model_dir(self) -> str | None:
        return None if self._impl.model_dir is None else str(self._impl.model_dir)

    @staticmethod
    def _data(input_fn: Callable | Any, labels: Any = None) -> tuple[Any, Any]:
        if callable(input_fn):
            out = input_fn()
            return out if isinstance(out, tuple) else (out, None)
        return input_fn, labels

    def train(
        self,
        input_fn: Callable | Any,
        steps: int | None = None,
        *,
        labels: Any = None,
        epochs: int | None = None,
        max_steps: int | None = None,
    ) -> _TFEstimator:
        """Train on ``input_fn()`` = (features, labels), or on data + ``labels``.

        ``steps`` / ``max_steps`` stop training after that many steps, as in TensorFlow;
        otherwise ``epochs`` passes (default: the constructor's).
        """
        features, y = self._data(input_fn, labels)
        if epochs is not None:
            self._impl.epochs = epochs
        if steps is not None:
            max_steps = getattr(self._impl, "global_step_", 0) + steps
        self._impl.fit(features, y, max_steps=max_steps)
        return self

    def evaluate(self, input_fn: Callable | Any, *, labels: Any = None) -> dict[str, float]:
        features, y = self._data(input_fn, labels)
        return self._impl.evaluate(features, y)

    def predict(self, input_fn: Callable | Any) -> Iterator[dict[str, Any]]:
        """One dict per row with TensorFlow's prediction keys."""
        features, _ = self._data(input_fn)
        predictor = self._impl._require_fitted()
        logits = predictor.predict_logits(features)
        if predictor.head == "regression":
            values = outputs_numpy(logits, "regression", predictor.output_range)
            for row in values[:, None]:
                yield {"predictions": row}
            return
        classes = predictor.classes_
        if logits.shape[1] == 1:
            logistic = torch.sigmoid(torch.from_numpy(logits)).numpy()
            probabilities = np.concatenate([1 - logistic, logistic], axis=1)
        else:
            logistic = None
            probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        for i, row in enumerate(logits):
            class_id = int(probabilities[i].argmax())
            out = {
                "logits": row,
                "probabilities": probabilities[i],
                "class_ids": np.array([class_id]),
                "classes": np.array([(classes[class_id] if classes else str(class_id)).encode()]),
            }
            if logistic is not None:
                out["logistic"] = logistic[i]
            yield out


def _common(
    model_dir, weight_column, label_vocabulary, loss_reduction, config, warm_start_from=None
) -> dict:
    """Keyword arguments shared by the TensorFlow-named classes; ``config`` adds run settings
    (``epochs``, ``batch_size``, ``seed``...) where TensorFlow took them from the input_fn."""
    out = dict(
        model_dir=model_dir,
        weight_column=weight_column,
        classes=label_vocabulary,
        loss_reduction=_reduction(loss_reduction),
        warm_start_from=warm_start_from,
    )
    out.update(config or {})
    return out


def _reduction(value: str) -> str:
    value = str(value).lower()
    if "mean" in value or value.endswith("over_batch_size"):
        return "mean"
    return "sum"


def _classifier_or_regressor(n_classes: int | None, **kwargs: Any) -> _Base:
    if n_classes is None:
        return WideDeepRegressor(**kwargs)
    return WideDeepClassifier(n_classes=n_classes, **kwargs)


class DNNLinearCombinedClassifier(_TFEstimator):
    """``tf.estimator.DNNLinearCombinedClassifier``: the Wide & Deep estimator."""

    _n_classes_default: int | None = 2

    def __init__(
        self,
        model_dir: str | None = None,
        linear_feature_columns: Sequence = (),
        linear_optimizer: str = "Ftrl",
        dnn_feature_columns: Sequence = (),
        dnn_optimizer: str = "Adagrad",
        dnn_hidden_units: Sequence[int] | None = None,
        dnn_dropout: float | None = None,
        n_classes: int = 2,
        weight_column: str | None = None,
        label_vocabulary: Sequence[str] | None = None,
        batch_norm: bool = False,
        loss_reduction: str = "sum",
        config: dict[str, Any] | None = None,
        warm_start_from: str | None = None,
    ) -> None:
        if dnn_feature_columns and not dnn_hidden_units:
            raise ValueError("dnn_hidden_units must be given when dnn_feature_columns are")
        impl = _classifier_or_regressor(
            None if self._n_classes_default is None else n_classes,
            wide_columns=tuple(linear_feature_columns or ()),
            deep_columns=tuple(dnn_feature_columns or ()),
            hidden_units=tuple(dnn_hidden_units or ()),
            linear_optimizer=_optimizer(linear_optimizer, "ftrl"),
            dnn_optimizer=_optimizer(dnn_optimizer, "adagrad"),
            dropout=dnn_dropout,
            batch_norm=batch_norm,
            **_common(
                model_dir, weight_column, label_vocabulary, loss_reduction, config, warm_start_from
            ),
        )
        super().__init__(impl, n_classes)


class DNNLinearCombinedRegressor(DNNLinearCombinedClassifier):
    """``tf.estimator.DNNLinearCombinedRegressor``."""

    _n_classes_default = None


class LinearClassifier(_TFEstimator):
    """``tf.estimator.LinearClassifier``: the wide part alone (FTRL)."""

    _regression = False

    def __init__(
        self,
        feature_columns: Sequence,
        model_dir: str | None = None,
        n_classes: int = 2,
        weight_column: str | None = None,
        label_vocabulary: Sequence[str] | None = None,
        optimizer: str = "Ftrl",
        loss_reduction: str = "sum",
        config: dict[str, Any] | None = None,
        warm_start_from: str | None = None,
    ) -> None:
        impl = _classifier_or_regressor(
            None if self._regression else n_classes,
            wide_columns=tuple(feature_columns),
            model_type="wide",
            linear_optimizer=_optimizer(optimizer, "ftrl"),
            **_common(
                model_dir, weight_column, label_vocabulary, loss_reduction, config, warm_start_from
            ),
        )
        super().__init__(impl, n_classes)


class LinearRegressor(LinearClassifier):
    """``tf.estimator.LinearRegressor``."""

    _regression = True


class DNNClassifier(_TFEstimator):
    """``tf.estimator.DNNClassifier``: the deep part alone (AdaGrad)."""

    _regression = False

    def __init__(
        self,
        hidden_units: Sequence[int],
        feature_columns: Sequence,
        model_dir: str | None = None,
        n_classes: int = 2,
        weight_column: str | None = None,
        label_vocabulary: Sequence[str] | None = None,
        optimizer: str = "Adagrad",
        dropout: float | None = None,
        batch_norm: bool = False,
        loss_reduction: str = "sum",
        config: dict[str, Any] | None = None,
        warm_start_from: str | None = None,
    ) -> None:
        impl = _classifier_or_regressor(
            None if self._regression else n_classes,
            deep_columns=tuple(feature_columns),
            model_type="deep",
            hidden_units=tuple(hidden_units),
            dnn_optimizer=_optimizer(optimizer, "adagrad"),
            dropout=dropout,
            batch_norm=batch_norm,
            **_common(
                model_dir, weight_column, label_vocabulary, loss_reduction, config, warm_start_from
            ),
        )
        super().__init__(impl, n_classes)


class DNNRegressor(DNNClassifier):
    """``tf.estimator.DNNRegressor``."""

    _regression = True
