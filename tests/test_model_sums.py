"""The model's fast bag sums equal nn.EmbeddingBag(mode="sum", padding_idx=0), values and grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from widedeep.model import _bag_sum_by_gather, _bag_sum_by_one_hot

# ids with padding (0), a repeated id in one row (multi-valued columns) and an all-padding row
IDS = torch.tensor([[1, 4, 0], [2, 2, 5], [0, 0, 0], [5, 3, 1]], dtype=torch.int32)
WEIGHTS = torch.tensor([[0.5, 2.0, 9.0], [1.0, -1.0, 3.0], [7.0, 7.0, 7.0], [0.25, 1.0, 1.0]])


@pytest.mark.parametrize("fast", [_bag_sum_by_gather, _bag_sum_by_one_hot])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("width", [1, 3])
def test_fast_sum_equals_embedding_bag(fast, weights, width):
    torch.manual_seed(0)
    table = torch.randn(6, width)
    table[0] = 0.0  # padding row, as the model keeps it
    fast_table = table.clone().requires_grad_()
    bag_table = table.clone().requires_grad_()
    upstream = torch.randn(len(IDS), width)

    got = fast(fast_table, IDS, weights)
    want = F.embedding_bag(IDS, bag_table, mode="sum", per_sample_weights=weights, padding_idx=0)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(fast_table.grad, bag_table.grad)
    assert torch.all(fast_table.grad[0] == 0)  # padding learns nothing


def test_hand_computed_row():
    table = torch.tensor([[0.0], [1.0], [10.0], [100.0], [1000.0], [10000.0]])
    # row 1 of IDS is ids 2, 2, 5 weighted 1, -1, 3: 10 - 10 + 3 * 10000
    assert _bag_sum_by_gather(table, IDS, WEIGHTS)[1, 0].item() == 30000.0
    assert _bag_sum_by_one_hot(table, IDS, WEIGHTS)[1, 0].item() == 30000.0


def test_model_gives_the_same_logits_on_both_sides_of_the_threshold():
    """A batch big enough for the fast sums scores as its small chunks (bags) do."""
    from widedeep.batch import Batch
    from widedeep.datasets.census import census_spec, load_census
    from widedeep.model import FAST_SUM_MIN_ROWS, ModelConfig, WideDeep

    table, _ = load_census()
    table = table.slice(0, FAST_SUM_MIN_ROWS + 100)
    spec = census_spec().fit(table)
    batch = spec.transform(table)
    torch.manual_seed(0)
    model = WideDeep(ModelConfig.from_spec(spec))
    with torch.no_grad():
        model.wide.weight[1:].normal_()  # non-zero wide weights, padding row kept at 0
        chunks = [batch.index(slice(i, i + 100)) for i in range(0, len(batch), 100)]
        big = model(Batch.concat(chunks))
        torch.testing.assert_close(big, torch.cat([model(c) for c in chunks]))


@pytest.mark.parametrize("weights", [None, WEIGHTS])
@pytest.mark.parametrize("width", [1, 3])
def test_sparse_wide_sum_equals_sparse_embedding_bag(weights, width):
    """The huge-table sum: same values and gradient as the sparse bag, gradient deduplicated."""
    from widedeep.model import _SparseWideSum

    torch.manual_seed(0)
    table = torch.randn(6, width)
    table[0] = 0.0
    fast_table = table.clone().requires_grad_()
    bag_table = table.clone().requires_grad_()
    upstream = torch.randn(len(IDS), width)

    got = _SparseWideSum.apply(fast_table, IDS, weights)
    want = F.embedding_bag(
        IDS, bag_table, mode="sum", per_sample_weights=weights, padding_idx=0, sparse=True
    )
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(fast_table.grad.to_dense(), bag_table.grad.to_dense())
    rows = fast_table.grad._indices()[0].tolist()
    assert rows == [1, 2, 3, 4, 5]  # each id once, sorted, padding row 0 left out


def test_sparse_wide_sum_reads_a_column_slice_of_a_wider_table():
    """FTRL keeps the weights as columns of a [weight | accum | linear] table (optim.py)."""
    from widedeep.model import _SparseWideSum

    wide = torch.randn(6, 3)
    wide[0] = 0.0
    got = _SparseWideSum.apply(wide[:, :1], IDS, WEIGHTS)
    want = F.embedding_bag(IDS, wide[:, :1].contiguous(), mode="sum", per_sample_weights=WEIGHTS)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("rows", [0, 2])
def test_sparse_wide_sum_of_padding_only_is_zero_with_no_gradient(rows):
    from widedeep.model import _SparseWideSum

    table = torch.randn(6, 1)
    table[0] = 0.0
    table.requires_grad_()
    out = _SparseWideSum.apply(table, torch.zeros(rows, 3, dtype=torch.int32), None)
    assert out.shape == (rows, 1) and torch.all(out == 0)
    out.sum().backward()
    assert table.grad._nnz() == 0
