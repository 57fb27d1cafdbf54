"""Evaluation metrics under the reference (TF Estimator) names, computed exactly.

NumPy only, vectorised (sorting and ``np.unique`` / ``np.bincount``; no per-row Python),
in float64. Inputs may be any array-likes; 2-D ``(n, 1)`` columns are flattened.

Differences from the reference worth knowing:

- ``auc`` is the exact ROC AUC (Mann-Whitney U, tied scores counted as one half);
  TensorFlow approximated it with 200 thresholds.
- ``auc_precision_recall`` is the exact step-wise average precision (as scikit-learn's
  ``average_precision_score``); TensorFlow interpolated a 200-threshold curve
  ("careful_interpolation"), which usually reads a little higher.
- ``loss`` follows the Estimator with ``loss_reduction=SUM``: the mean, over consecutive
  evaluation batches, of each batch's summed (weighted) loss -- so it depends on the
  evaluation batch size. ``average_loss`` is the per-example mean and does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike = Any

_EPSILON = 1e-7


def binary_classification_metrics(
    labels: ArrayLike,
    probabilities: ArrayLike,
    weights: ArrayLike | None = None,
    threshold: float = 0.5,
    *,
    losses: ArrayLike | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Metrics of a binary classifier under the TF Estimator's names.

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        probabilities: predicted probability of class 1, shape ``(n,)``.
        weights: optional non-negative example weights.
        threshold: an example is predicted positive when its probability is strictly
            greater than ``threshold`` (the Estimator's ``class_ids`` at 0.5).
        losses: optional per-example losses (e.g. sigmoid cross-entropy computed from
            logits); by default the log loss of ``probabilities`` clipped to
            ``[1e-7, 1 - 1e-7]``.
        batch_size: evaluation batch size for ``loss`` (see module docstring); ``None``
            makes ``loss`` equal ``average_loss``.

    Returns:
        ``accuracy``, ``accuracy_baseline``, ``auc``, ``auc_precision_recall``,
        ``average_loss``, ``label/mean``, ``loss``, ``precision``, ``prediction/mean``,
        ``recall``. ``auc`` is nan when only one class is present, ``precision`` /
        ``recall`` are 0.0 when undefined.
    """
    y = _vector(labels, "labels")
    p = _vector(probabilities, "probabilities")
    _same_length(y, p, "labels", "probabilities")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1 for binary classification metrics")
    w = _weights(weights, len(y))
    if losses is None:
        pc = np.clip(p, _EPSILON, 1.0 - _EPSILON)
        per_example = -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))
    else:
        per_example = _vector(losses, "losses")
        _same_length(y, per_example, "labels", "losses")

    total = w.sum()
    predicted = p > threshold
    positive = y == 1
    tp = w[predicted & positive].sum()
    predicted_pos = w[predicted].sum()
    actual_pos = w[positive].sum()
    correct = w[predicted == positive].sum()
    label_mean = _ratio(np.dot(w, y), total)
    return {
        "accuracy": _ratio(correct, total),
        "accuracy_baseline": max(label_mean, 1.0 - label_mean),
        "auc": roc_auc(y, p, w),
        "auc_precision_recall": average_precision(y, p, w),
        "average_loss": _ratio(np.dot(w, per_example), total),
        "label/mean": label_mean,
        "loss": _batched_loss(per_example, w, batch_size),
        "precision": float(tp / predicted_pos) if predicted_pos > 0 else 0.0,
        "prediction/mean": _ratio(np.dot(w, p), total),
        "recall": float(tp / actual_pos) if actual_pos > 0 else 0.0,
    }


def regression_metrics(
    labels: ArrayLike,
    predictions: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Regression metrics: ``average_loss`` (MSE), ``loss``, ``rmse``, ``mae``, means.

    ``loss`` uses the same batch-sum convention as :func:`binary_classification_metrics`.
    """
    y = _vector(labels, "labels")
    f = _vector(predictions, "predictions")
    _same_length(y, f, "labels", "predictions")
    w = _weights(weights, len(y))
    total = w.sum()
    err = f - y
    sq = err * err
    mse = _ratio(np.dot(w, sq), total)
    return {
        "average_loss": mse,
        "label/mean": _ratio(np.dot(w, y), total),
        "loss": _batched_loss(sq, w, batch_size),
        "mae": _ratio(np.dot(w, np.abs(err)), total),
        "prediction/mean": _ratio(np.dot(w, f), total),
        "rmse": float(np.sqrt(mse)),
    }


def multiclass_metrics(
    labels: ArrayLike,
    probabilities: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Multi-class metrics: ``accuracy``, ``average_loss`` (cross-entropy), ``loss``.

    ``labels`` are class ids in ``[0, k)``, ``probabilities`` has shape ``(n, k)``;
    probabilities are clipped to ``[1e-7, 1]`` before the log. The predicted class is the
    first arg-max.
    """
    y = np.asarray(labels).reshape(-1)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, k), got {probs.shape}")
    n, k = probs.shape
    if len(y) != n:
        raise ValueError(f"labels has {len(y)} rows but probabilities has {n}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class ids")
        y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must be class ids in [0, {k})")
    w = _weights(weights, n)
    total = w.sum()
    per_example = -np.log(np.clip(probs[np.arange(n), y], _EPSILON, 1.0))
    correct = w[np.argmax(probs, axis=1) == y].sum() if n else 0.0
    return {
        "accuracy": _ratio(correct, total),
        "average_loss": _ratio(np.dot(w, per_example), total),
        "loss": _batched_loss(per_example, w, batch_size),
    }


def roc_auc(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Exact (weighted) ROC AUC: P(score of a positive > score of a negative), ties 1/2.

    Equivalent to the Mann-Whitney statistic with averaged ranks for ties; with weights,
    each (positive, negative) pair counts ``w_pos * w_neg``. nan if a class is missing.
    """
    y = _vector(labels, "labels")
    s = _vector(scores, "scores")
    _same_length(y, s, "labels", "scores")
    w = _weights(weights, len(y))
    pos_w = w * (y != 0)
    neg_w = w * (y == 0)
    total_pos, total_neg = pos_w.sum(), neg_w.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    # Group equal scores; within a group pairs are ties (1/2), below it they are wins.
    _, group = np.unique(s, return_inverse=True)
    group = group.reshape(-1)
    pos_g = np.bincount(group, weights=pos_w)
    neg_g = np.bincount(group, weights=neg_w)
    neg_below = np.cumsum(neg_g) - neg_g
    wins = np.dot(pos_g, neg_below + 0.5 * neg_g)
    return float(wins / (total_pos * total_neg))


def average_precision(
    labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """Exact (weighted) average precision, step-wise: ``sum_n (R_n - R_{n-1}) P_n``.

    Thresholds are the distinct scores, highest first (tied scores enter together), as in
    scikit-learn's ``average_precision_score``. nan if there is no positive.
    """
    y = _vector(labels, "labels")
    s = _vector(scores, "scores")
    _same_length(y, s, "labels", "scores")
    w = _weights(weights, len(y))
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(w[order] * (y[order] != 0))
    fp = np.cumsum(w[order] * (y[order] == 0))
    if len(tp) == 0 or tp[-1] <= 0:
        return float("nan")
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp, fp = tp[last_of_group], fp[last_of_group]
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / tp[-1]
    return float(np.dot(np.diff(recall, prepend=0.0), precision))


def hit_rate_at_k(ranks: ArrayLike, k: int) -> float:
    """Fraction of users whose held-out positive has 0-based rank ``< k`` (HR@k)."""
    r = _ranks(ranks, k)
    return float(np.mean(r < k)) if len(r) else float("nan")


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """Mean NDCG@k with one relevant item per user at 0-based ``ranks``.

    Per user: ``1 / log2(rank + 2)`` if ``rank < k`` else 0 (the ideal DCG is 1).
    """
    r = _ranks(ranks, k)
    if not len(r):
        return float("nan")
    gains = np.where(r < k, 1.0 / np.log2(r.astype(np.float64) + 2.0), 0.0)
    return float(gains.mean())


def ndcg_at_k_multi(
    relevance_lists: Sequence[ArrayLike] | np.ndarray,
    k: int,
    num_positives: ArrayLike | None = None,
) -> float:
    """Mean NDCG@k with several relevant items per user (linear gain).

    Args:
        relevance_lists: per user, the relevance (0/1, or graded) of the items in the
            order the model ranked them, best first; a ragged sequence or a 2-D array.
        k: cut-off.
        num_positives: optional per-user number of relevant items (binary relevance),
            for lists cut before their end; by default the ideal DCG is computed from
            the whole list (for binary relevance: from its number of positives).

    Users with no relevant item (ideal DCG 0) are left out of the mean; nan if none is left.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(relevance_lists, np.ndarray) and relevance_lists.ndim == 2:
        rows = list(relevance_lists)
    else:
        rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in relevance_lists]
    n_users = len(rows)
    if n_users == 0:
        return float("nan")
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    rel = np.concatenate(rows).astype(np.float64) if lengths.sum() else np.zeros(0)
    user = np.repeat(np.arange(n_users), lengths)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(rel)) - np.repeat(starts, lengths)
    discount = 1.0 / np.log2(position + 2.0)
    in_top = position < k
    dcg = np.bincount(user[in_top], weights=rel[in_top] * discount[in_top], minlength=n_users)
    if num_positives is not None:
        npos = np.asarray(num_positives, dtype=np.int64).reshape(-1)
        if len(npos) != n_users:
            raise ValueError(f"num_positives has {len(npos)} entries for {n_users} users")
        # ideal DCG = sum_{i < min(npos, k)} 1 / log2(i + 2)
        cum = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
        idcg = cum[np.clip(npos, 0, k)]
    else:
        order = np.lexsort((-rel, user))  # by user, then relevance descending
        ideal_rel = rel[order]
        idcg = np.bincount(
            user[in_top], weights=ideal_rel[in_top] * discount[in_top], minlength=n_users
        )
    keep = idcg > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(dcg[keep] / idcg[keep]))


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per example, got shape {a.shape}")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} rows but {name_b} has {len(b)}")


def _weights(weights: ArrayLike | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = _vector(weights, "weights")
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} rows but there are {n} examples")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    return w


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _batched_loss(per_example: np.ndarray, w: np.ndarray, batch_size: int | None) -> float:
    """Mean over consecutive batches of each batch's summed weighted loss (SUM reduction)."""
    weighted = w * per_example
    if batch_size is None:
        return _ratio(weighted.sum(), w.sum())
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(weighted) == 0:
        return float("nan")
    batch_sums = np.add.reduceat(weighted, np.arange(0, len(weighted), batch_size))
    return float(batch_sums.mean())


def _ranks(ranks: ArrayLike, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r = np.asarray(ranks).reshape(-1)
    if len(r) and r.min() < 0:
        raise ValueError("ranks must be 0-based (>= 0)")
    return r
