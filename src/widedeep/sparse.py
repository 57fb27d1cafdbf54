"""Sparse wide gradients: deduplicating ids and summing rows, fast on CPU.

A step on a huge wide table touches ~10^4-10^5 ids.  Deduplicating them is a sort,
and PyTorch's CPU sort (behind ``torch.unique`` and ``Tensor.coalesce``) takes ~3 ms
for 30k ids; NumPy sorts the same ids packed with their positions into one int64 key
about 4x faster (30k ids: 0.8 vs 2.9 ms).  Used by the model's sparse wide sum, FTRL
and the exchange of sparse gradients in a distributed run.
"""

from __future__ import annotations

import numpy as np
import torch

_INT32 = (-(2**31), 2**31 - 1)


def unique_inverse(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(ids.flatten(), sorted=True, return_inverse=True)``, as int64 tensors."""
    flat = ids.reshape(-1)
    if not _fits_int32(flat):
        uniq, inverse = torch.unique(flat, return_inverse=True)
        return uniq.long(), inverse
    n = flat.numel()
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    values = flat.numpy().astype(np.int64)
    keys = np.sort((values << 32) | np.arange(n, dtype=np.int64))  # by id, then position
    ordered = keys >> 32
    first = _run_starts(ordered)
    inverse = np.empty(n, dtype=np.int64)
    inverse[keys & 0xFFFFFFFF] = np.cumsum(first) - 1
    return torch.from_numpy(ordered[first]), torch.from_numpy(inverse)


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted, non-empty array begins (a bool mask)."""
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def _fits_int32(flat: torch.Tensor) -> bool:
    if flat.device.type != "cpu" or flat.dtype not in (torch.int32, torch.int64):
        return False
    if flat.dtype == torch.int32 or flat.numel() == 0:
        return True
    lo, hi = torch.aminmax(flat)
    return _INT32[0] <= int(lo) and int(hi) <= _INT32[1]


def sum_rows(indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each distinct index once (sorted) with the sum of its rows of ``values``.

    Made for the gradient rows several ranks sent: sorted runs, one per rank, which a
    stable (merge) sort combines in linear time; equal indices then sit side by
    side and are summed in one sequential pass.
    """
    if indices.device.type != "cpu" or indices.numel() == 0:
        uniq, inverse = torch.unique(indices, return_inverse=True)
        summed = values.new_zeros((uniq.numel(), *values.shape[1:])).index_add_(0, inverse, values)
        return uniq, summed
    flat = indices.numpy()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(_run_starts(ordered))
    v = values.numpy()
    if v.ndim == 2 and v.shape[1] == 1:  # a wide table's gradient: 1-D is ~1.7x faster
        summed = np.add.reduceat(v[:, 0][order], starts)[:, None]
    else:
        summed = np.add.reduceat(v[order], starts, axis=0)
    return torch.from_numpy(ordered[starts]), torch.from_numpy(summed)


def unique_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (each once, sorted) and summed values of a sparse COO gradient.

    Autograd drops the "coalesced" flag when it stores a gradient, so an already
    deduplicated gradient (the wide model's) is recognised by its strictly increasing
    indices -- a linear check -- rather than sorted again.  Other gradients go through
    ``coalesce()``, which sums duplicates in the order a dense gradient would.
    """
    rows = grad._indices()[0]
    if not (grad.is_coalesced() or rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all())):
        grad = grad.coalesce()
    return grad._indices()[0], grad._values()
