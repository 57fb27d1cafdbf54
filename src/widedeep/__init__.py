"""widedeep: Wide & Deep learning (Cheng et al., 2016) on PyTorch.

``from widedeep import feature_column as fc`` declares columns as ``tf.feature_column``
did; ``FeatureSpec`` fits and encodes them; ``WideDeepClassifier`` (scikit-learn style)
or ``DNNLinearCombinedClassifier`` (TensorFlow's names) train; ``load`` reads a saved model.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "FeatureSpec": "transform",
    "Label": "transform",
    "WideDeepClassifier": "estimator",
    "WideDeepRegressor": "estimator",
    "DNNLinearCombinedClassifier": "estimator",
    "DNNLinearCombinedRegressor": "estimator",
    "LinearClassifier": "estimator",
    "LinearRegressor": "estimator",
    "DNNClassifier": "estimator",
    "DNNRegressor": "estimator",
    "load": "predict",
    "Predictor": "predict",
    "load_preset": "presets",
}


def __getattr__(name: str) -> Any:  # lazy: `import widedeep` stays cheap for the CLI
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'widedeep' has no attribute {name!r}")


__all__ = ["__version__", *_EXPORTS]
