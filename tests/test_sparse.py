"""Sparse-gradient helpers: the same answers as torch.unique / coalesce, faster on CPU."""

from __future__ import annotations

import pytest
import torch

from widedeep.sparse import sum_rows, unique_inverse, unique_rows


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_unique_inverse_equals_torch_unique(dtype):
    gen = torch.Generator().manual_seed(0)
    for ids in [
        torch.randint(0, 50, (64, 7), generator=gen, dtype=dtype),
        torch.randint(0, 2**31 - 1, (8, 3), generator=gen, dtype=dtype),
        torch.tensor([[-3, 5, -3, 0]], dtype=dtype),
        torch.zeros(0, 4, dtype=dtype),
    ]:
        uniq, inverse = unique_inverse(ids)
        want_uniq, want_inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        assert torch.equal(uniq, want_uniq.long())
        assert torch.equal(inverse, want_inverse.reshape(-1))
        assert torch.equal(uniq[inverse], ids.reshape(-1).long())  # the defining property


def test_sum_rows_merges_per_rank_runs():
    """Two ranks' sorted, deduplicated rows: shared rows summed, each row once, sorted."""
    indices = torch.tensor([2, 5, 9, 1, 5, 9, 12])  # rank 0: 2 5 9, rank 1: 1 5 9 12
    values = torch.tensor([[1.0], [2.0], [4.0], [8.0], [16.0], [32.0], [64.0]])
    rows, summed = sum_rows(indices, values)
    assert rows.tolist() == [1, 2, 5, 9, 12]
    assert summed[:, 0].tolist() == [8.0, 1.0, 18.0, 36.0, 64.0]


def test_sum_rows_equals_coalesce_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 30, (200,), generator=gen)
    values = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    rows, summed = sum_rows(indices, values)
    want = torch.sparse_coo_tensor(indices[None], values, (30, 3), check_invariants=True).coalesce()
    assert torch.equal(rows, want.indices()[0])
    torch.testing.assert_close(summed, want.values())


def test_unique_rows_sorts_only_what_needs_it():
    deduplicated = torch.sparse_coo_tensor(
        torch.tensor([[1, 4, 7]]), torch.ones(3, 1), (9, 1), check_invariants=True
    )
    rows, values = unique_rows(deduplicated)
    assert rows.tolist() == [1, 4, 7] and values[:, 0].tolist() == [1.0, 1.0, 1.0]
    repeated = torch.sparse_coo_tensor(
        torch.tensor([[7, 1, 7]]),
        torch.tensor([[1.0], [2.0], [3.0]]),
        (9, 1),
        check_invariants=True,
    )
    rows, values = unique_rows(repeated)
    assert rows.tolist() == [1, 7] and values[:, 0].tolist() == [2.0, 4.0]
