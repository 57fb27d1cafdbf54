"""A trained model ready to score raw rows: ``widedeep.load(path).predict_proba(rows)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifact
from .heads import outputs
from .model import WideDeep
from .train import EVAL_CHUNK, evaluate
from .transform import FeatureSpec


class Predictor:
    """The fitted feature spec and the network together: raw rows in, scores out.

    Accepts whatever the spec accepts: a pyarrow Table, a pandas DataFrame, a
    dict of columns, a list of row dicts or a single row dict.  The label
    column is optional.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        model: WideDeep,
        config: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.spec = spec
        self.model = model.eval()
        self.config = config or {}
        self.path = path

    @property
    def head(self) -> str:
        return self.spec.label.head if self.spec.label else "binary"

    @property
    def classes_(self) -> tuple[str, ...] | None:
        return self.spec.classes_

    def _logits(self, data: Any) -> torch.Tensor:
        # the serving hot path: no autograd bookkeeping, no train/eval switching, no copies
        batch = self.spec.transform(data, label=False)
        with torch.inference_mode():
            if len(batch) <= EVAL_CHUNK:
                return self.model(batch)
            return torch.cat(
                [
                    self.model(batch.index(slice(i, i + EVAL_CHUNK)))
                    for i in range(0, len(batch), EVAL_CHUNK)
                ]
            )

    def predict_logits(self, data: Any) -> np.ndarray:
        """Raw scores, [rows, n_outputs]."""
        return self._logits(data).numpy()

    def predict_proba(self, data: Any) -> np.ndarray:
        """P(positive) per row for a binary model ([rows]); class probabilities ([rows, k])
        for a multi-class one; the predicted value for a regression."""
        return outputs(self._logits(data), self.head)

    def predict(self, data: Any, threshold: float = 0.5) -> np.ndarray:
        """Class labels (the declared class names when there are any) or regression values."""
        scores = self.predict_proba(data)
        if self.head == "regression":
            return scores
        ids = (scores > threshold).astype(np.int64) if self.head == "binary" else scores.argmax(1)
        classes = self.classes_
        return np.asarray(classes, dtype=object)[ids] if classes else ids

    def evaluate(self, data: Any, batch_size: int | None = None) -> dict[str, float]:
        """The reference metrics on labelled rows."""
        if batch_size is None:
            batch_size = self.config.get("settings", {}).get("train", {}).get("batch_size")
        batch = self.spec.transform(data, label=True)
        return evaluate(self.model, batch, self.head, batch_size)

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"Predictor({self.model.config.model_type}, {self.head}{where})"


def load(path: str | Path) -> Predictor:
    """Load a model directory, a training model_dir (newest checkpoint) or an export base.

    Never unpickles: the spec and config are JSON, the weights safetensors, each
    file checked against the manifest's SHA-256 first.
    """
    spec, model, config, resolved = artifact.read_model_dir(path)
    return Predictor(spec, model, config, resolved)
