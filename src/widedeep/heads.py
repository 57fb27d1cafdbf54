"""What differs between binary, multi-class and regression models: loss, outputs, metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics

Range = tuple[float, float]


def regression_value(logits: torch.Tensor, output_range: Range | None) -> torch.Tensor:
    """A regression's prediction from its logit: the logit itself, or, with an
    ``output_range`` (lo, hi), lo + (hi - lo) * sigmoid(logit), which stays inside it.

    A bounded target (ratings 1-5) then needs no clipping, and training spends nothing on
    pushing predictions past a bound the label never crosses (fastai's ``y_range``)."""
    if output_range is None:
        return logits
    lo, hi = output_range
    return lo + (hi - lo) * torch.sigmoid(logits)


def per_example_loss(
    logits: torch.Tensor, label: torch.Tensor, head: str, output_range: Range | None = None
) -> torch.Tensor:
    """Logistic loss (binary), cross-entropy (multi-class) or squared error (regression)."""
    if head == "binary":
        return F.binary_cross_entropy_with_logits(logits[:, 0], label, reduction="none")
    if head == "multiclass":
        return F.cross_entropy(logits, label, reduction="none")
    return (regression_value(logits[:, 0], output_range) - label) ** 2


def training_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None,
    head: str,
    reduction: str,
    output_range: Range | None = None,
) -> torch.Tensor:
    """The loss one step minimises: summed over the batch (the reference) or its mean."""
    if weight is None and head == "binary":  # the fused kernel: the hot path of the reference run
        return F.binary_cross_entropy_with_logits(logits[:, 0], label, reduction=reduction)
    losses = per_example_loss(logits, label, head, output_range)
    if weight is not None:
        losses = losses * weight
    return losses.sum() if reduction == "sum" else losses.mean()


def outputs(logits: torch.Tensor, head: str, output_range: Range | None = None) -> np.ndarray:
    """P(positive) [rows] (binary), class probabilities [rows, k], or the predicted value."""
    if head == "binary":
        return torch.sigmoid(logits[:, 0]).numpy()
    if head == "multiclass":
        return torch.softmax(logits, dim=1).numpy()
    return regression_value(logits[:, 0], output_range).numpy()


def outputs_numpy(logits: np.ndarray, head: str, output_range: Range | None = None) -> np.ndarray:
    """:func:`outputs` in NumPy, for the NumPy forward path's few rows, where a torch call
    costs more than the arithmetic; in float64, so that ``exp`` cannot overflow."""
    if head == "regression" and output_range is None:
        return logits[:, 0]
    x = logits.astype(np.float64)
    if head == "regression":
        lo, hi = output_range
        return (lo + (hi - lo) / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)
    if head == "binary":
        return (1.0 / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def evaluation_metrics(
    logits: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None,
    head: str,
    batch_size: int | None,
    output_range: Range | None = None,
) -> dict[str, float]:
    """The reference metrics for the head, from logits (losses computed stably from logits)."""
    w = None if weight is None else weight.numpy()
    with torch.no_grad():
        losses = per_example_loss(logits, label, head, output_range).numpy()
    if head == "binary":
        return metrics.binary_classification_metrics(
            label.numpy(), outputs(logits, head), w, losses=losses, batch_size=batch_size
        )
    if head == "multiclass":
        return metrics.multiclass_metrics(
            label.numpy(), outputs(logits, head), w, batch_size=batch_size
        )
    return metrics.regression_metrics(
        label.numpy(), outputs(logits, head, output_range), w, batch_size=batch_size
    )
