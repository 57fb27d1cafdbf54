import math

import numpy as np
import pytest

from widedeep.metrics import (
    average_precision,
    binary_classification_metrics,
    hit_rate_at_k,
    multiclass_metrics,
    ndcg_at_k,
    ndcg_at_k_multi,
    regression_metrics,
    roc_auc,
)

BINARY_KEYS = {
    "accuracy",
    "accuracy_baseline",
    "auc",
    "auc_precision_recall",
    "average_loss",
    "label/mean",
    "loss",
    "precision",
    "prediction/mean",
    "recall",
}


def brute_force_auc(y, s, w):
    num = den = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if y[i] == 1 and y[j] == 0:
                pair = w[i] * w[j]
                den += pair
                if s[i] > s[j]:
                    num += pair
                elif s[i] == s[j]:
                    num += 0.5 * pair
    return num / den


def test_auc_hand_example():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_with_ties_by_counting_pairs():
    # negatives: 0.2, 0.5; positives: 0.2 (tie, lose), 0.5 (win, tie), 0.9 (win, win)
    # (0.5 + 0) + (1 + 0.5) + (1 + 1) = 4 of 6 pairs
    auc = roc_auc([0, 1, 0, 1, 1], [0.2, 0.2, 0.5, 0.5, 0.9])
    assert auc == pytest.approx(4 / 6)
    # all scores equal: every pair is a tie
    assert roc_auc([0, 1, 1, 0], [0.3] * 4) == pytest.approx(0.5)


def test_auc_undefined_with_one_class():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    m = binary_classification_metrics([0, 0], [0.2, 0.7])
    assert math.isnan(m["auc"])
    assert math.isnan(m["auc_precision_recall"])  # no positive
    assert m["recall"] == 0.0 and m["precision"] == 0.0


def test_weighted_auc_equals_duplicated_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    s = rng.integers(0, 6, 40) / 5.0  # many ties
    w = rng.integers(0, 4, 40)
    dup_y, dup_s = np.repeat(y, w), np.repeat(s, w)
    assert roc_auc(y, s, w) == pytest.approx(roc_auc(dup_y, dup_s), rel=1e-12)
    assert average_precision(y, s, w) == pytest.approx(average_precision(dup_y, dup_s), rel=1e-12)
    a = binary_classification_metrics(y, s, w.astype(float), batch_size=None)
    b = binary_classification_metrics(dup_y, dup_s)
    for key in BINARY_KEYS:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = np.round(rng.random(n), 1)  # ties
    w = rng.random(n) if seed % 2 else np.ones(n)
    assert roc_auc(y, s, w) == pytest.approx(brute_force_auc(y, s, w), rel=1e-12)


def test_average_precision_hand_examples():
    # ranked: 1 0 1 0 1 -> precision at each positive 1, 2/3, 3/5
    ap = average_precision([1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.1])
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # scikit-learn's documented example
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # tied top scores enter together: P=1/2 at R=1/2, then P=2/3 at R=1
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)


def test_binary_metrics_by_counting():
    y = [1, 0, 1, 1, 0, 0]
    p = [0.9, 0.6, 0.4, 0.7, 0.2, 0.5]  # predicted positive: > 0.5 -> 0.9, 0.6, 0.7
    m = binary_classification_metrics(y, p)
    assert set(m) == BINARY_KEYS
    assert m["precision"] == pytest.approx(2 / 3)  # tp = 2, fp = 1
    assert m["recall"] == pytest.approx(2 / 3)  # fn = 1 (0.4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["label/mean"] == pytest.approx(0.5)
    assert m["accuracy_baseline"] == pytest.approx(0.5)
    assert m["prediction/mean"] == pytest.approx(3.3 / 6)
    expected = -np.mean([math.log(x) for x in (0.9, 0.4, 0.4, 0.7, 0.8, 0.5)])
    assert m["average_loss"] == pytest.approx(expected)
    assert m["loss"] == pytest.approx(expected)
    # positive pairs won: 0.9 beats all 3 negatives, 0.4 beats 1 (0.2), 0.7 beats 3 -> 7 / 9
    assert m["auc"] == pytest.approx(7 / 9)
    # lower threshold: 0.5 and 0.4 become positive too
    m2 = binary_classification_metrics(y, p, threshold=0.3)
    assert m2["recall"] == pytest.approx(1.0)
    assert m2["precision"] == pytest.approx(3 / 5)


def test_baseline_and_clipping():
    m = binary_classification_metrics([1, 1, 1, 0], [1.0, 1.0, 0.0, 0.0])
    assert m["accuracy_baseline"] == pytest.approx(0.75)
    assert m["label/mean"] == pytest.approx(0.75)
    assert math.isfinite(m["average_loss"])
    assert m["average_loss"] == pytest.approx(-math.log(1e-7) / 4, rel=1e-6)


def test_loss_batch_convention():
    y = [0, 1, 0, 1, 1]
    p = [0.5] * 5
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    m = binary_classification_metrics(y, p, losses=losses, batch_size=2)
    assert m["average_loss"] == pytest.approx(3.0)
    assert m["loss"] == pytest.approx((3 + 7 + 5) / 3)  # batch sums of [1,2] [3,4] [5]
    w = [1, 1, 2, 1, 0]  # weighted losses 1 2 6 4 0
    m = binary_classification_metrics(y, p, w, losses=losses, batch_size=2)
    assert m["loss"] == pytest.approx((3 + 10 + 0) / 3)
    assert m["average_loss"] == pytest.approx(13 / 5)
    assert binary_classification_metrics(y, p, losses=losses)["loss"] == pytest.approx(3.0)
    # batch 40, loss ~ 40 x average_loss (the reference run's relation)
    rng = np.random.default_rng(0)
    yy = rng.integers(0, 2, 400)
    pp = rng.random(400)
    m = binary_classification_metrics(yy, pp, batch_size=40)
    assert m["loss"] == pytest.approx(40 * m["average_loss"])


def test_regression_metrics_by_hand():
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], batch_size=2)
    assert m["average_loss"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["mae"] == pytest.approx(1.0)
    assert m["label/mean"] == pytest.approx(2.0)
    assert m["prediction/mean"] == pytest.approx(3.0)
    assert m["loss"] == pytest.approx((1 + 4) / 2)
    mw = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], [3.0, 1.0, 0.0])
    assert mw["average_loss"] == pytest.approx(3 / 4)
    assert mw["mae"] == pytest.approx(3 / 4)
    assert mw["label/mean"] == pytest.approx(5 / 4)


def test_multiclass_metrics_by_hand():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]
    m = multiclass_metrics([0, 2, 2], probs, batch_size=2)
    assert m["accuracy"] == pytest.approx(2 / 3)
    ce = [-math.log(0.7), -math.log(0.4), -math.log(0.4)]
    assert m["average_loss"] == pytest.approx(sum(ce) / 3)
    assert m["loss"] == pytest.approx(((ce[0] + ce[1]) + ce[2]) / 2)
    with pytest.raises(ValueError):
        multiclass_metrics([0, 3, 1], probs)


def test_ranking_single_positive():
    ranks = [0, 1, 5, 2]
    assert hit_rate_at_k(ranks, 3) == pytest.approx(3 / 4)
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 4)
    expected = (1 + 1 / math.log2(3) + 0 + 1 / math.log2(4)) / 4
    assert ndcg_at_k(ranks, 3) == pytest.approx(expected)
    assert ndcg_at_k(ranks, 10) == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(7) + 0.5) / 4
    )
    with pytest.raises(ValueError):
        ndcg_at_k(ranks, 0)


def test_ranking_multi_positive():
    lists = [[1, 0, 1, 0], [0, 0, 0], [0, 1]]
    # user 0: dcg@2 = 1, ideal (2 positives) = 1 + 1/log2 3; user 1 has no positive (skipped);
    # user 2: dcg@2 = 1/log2 3, ideal = 1
    u0 = 1 / (1 + 1 / math.log2(3))
    u2 = 1 / math.log2(3)
    assert ndcg_at_k_multi(lists, 2) == pytest.approx((u0 + u2) / 2)
    # whole list: user 0 dcg = 1 + 1/log2 4
    u0_full = (1 + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k_multi(lists, 4) == pytest.approx((u0_full + u2) / 2)
    # single positive per user agrees with ndcg_at_k
    one_hot = np.eye(6)[[0, 3, 5]]
    assert ndcg_at_k_multi(one_hot, 4) == pytest.approx(ndcg_at_k([0, 3, 5], 4))
    # truncated lists with the true number of positives
    got = ndcg_at_k_multi([[0, 1]], 2, num_positives=[3])
    assert got == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_input_validation():
    with pytest.raises(ValueError):
        binary_classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        binary_classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        binary_classification_metrics([0, 1], [0.1, 0.2], [1.0, -1.0])
    with pytest.raises(ValueError):
        regression_metrics([1.0], [1.0], batch_size=0)
