"""Ragged categorical ids: per-row id lists as NumPy arrays, and their padded tensor form.

A categorical column encodes to :class:`Ids`: either one slot per row
(``offsets is None``, -1 meaning "no id") or CSR lists (``values`` cut by
``offsets``) for multi-valued input.  Everything here is vectorised; no
Python loop runs per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Ids:
    """Ids for each row: one slot per row (``offsets`` None, -1 = no id) or CSR lists."""

    values: np.ndarray
    offsets: np.ndarray | None = None
    weights: np.ndarray | None = None

    def csr(self) -> Ids:
        """The same ids as CSR lists, with missing ids dropped."""
        keep = self.values >= 0
        if self.offsets is not None and keep.all():
            return self
        if self.offsets is None:
            lengths = keep.astype(np.int64)
        else:
            lengths = segment_sum(keep.astype(np.int64), self.offsets)
        weights = None if self.weights is None else self.weights[keep]
        return Ids(self.values[keep], offsets_of(lengths), weights)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """CSR offsets (n + 1) from per-row lengths."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``values`` within each CSR segment."""
    csum = np.zeros(len(values) + 1, dtype=np.float64 if values.dtype.kind == "f" else np.int64)
    np.cumsum(values, out=csum[1:])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def row_of(offsets: np.ndarray) -> np.ndarray:
    """The row number of each CSR value."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def cartesian(a: Ids, b: Ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, every pair (i from a, j from b): (positions in a, positions in b, offsets)."""
    lb = b.lengths()
    offsets = offsets_of(a.lengths() * lb)
    row = row_of(offsets)
    pos = np.arange(offsets[-1]) - offsets[:-1][row]
    width = lb[row]
    return a.offsets[:-1][row] + pos // width, b.offsets[:-1][row] + pos % width, offsets


def padded(ids: Ids, shift: int, n_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids as an int32 [rows, width] matrix of ``id + shift`` with 0 for padding, plus weights."""
    if ids.offsets is None:
        out = (ids.values + shift).astype(np.int32)
        out[ids.values < 0] = 0
        weights = None
        if ids.weights is not None:
            weights = np.where(ids.values >= 0, ids.weights, 0).astype(np.float32).reshape(-1, 1)
        return out.reshape(n_rows, 1), weights
    ids = ids.csr()
    lengths = ids.lengths()
    width = max(int(lengths.max()) if n_rows else 0, 1)
    out = np.zeros((n_rows, width), dtype=np.int32)
    row = row_of(ids.offsets)
    col = np.arange(len(ids.values)) - ids.offsets[:-1][row]
    out[row, col] = ids.values + shift
    weights = None
    if ids.weights is not None:
        weights = np.zeros((n_rows, width), dtype=np.float32)
        weights[row, col] = ids.weights
    return out, weights


def assemble(parts: list[tuple[Ids, int]], n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Several columns' ids, each shifted by its base into one id space, as one padded matrix."""
    if not parts:
        return np.zeros((n, 1), dtype=np.int32), None
    if all(ids.offsets is None and ids.weights is None for ids, _ in parts):
        matrix = np.empty((len(parts), n), dtype=np.int32)  # column-major fill, one transpose
        for j, (ids, base) in enumerate(parts):
            np.add(ids.values, base, out=matrix[j], casting="unsafe")
            matrix[j][ids.values < 0] = 0
        return np.ascontiguousarray(matrix.T), None
    # Each row holds its columns' ids side by side, in column order, padded with 0 on the
    # right.  A one-slot column (the common case) is placed directly, without a CSR pass.
    present = [ids.values >= 0 if ids.offsets is None else ids.csr() for ids, _ in parts]
    lengths = np.stack(
        [p.astype(np.int64) if isinstance(p, np.ndarray) else p.lengths() for p in present]
    )  # [columns, rows]
    cols = np.cumsum(lengths, axis=0)  # where each column's ids end in the row
    width = max(int(cols[-1].max()) if n else 0, 1)
    out = np.zeros((n, width), dtype=np.int32)
    any_weights = any(ids.weights is not None for ids, _ in parts)
    weights = np.zeros((n, width), dtype=np.float32) if any_weights else None
    for j, ((ids, base), p) in enumerate(zip(parts, present)):
        start = cols[j] - lengths[j]  # first slot of column j in each row
        if isinstance(p, np.ndarray):  # one slot per row: the rows that have an id
            row = np.flatnonzero(p)
            col, values, w = start[row], ids.values[row], ids.weights
            w = None if w is None else w[row]
        else:
            row = row_of(p.offsets)
            col = start[row] + np.arange(len(p.values)) - p.offsets[:-1][row]
            values, w = p.values, p.weights
        out[row, col] = values + base
        if weights is not None:
            weights[row, col] = 1.0 if w is None else w
    return out, weights


def combine(ids: Ids, combiner: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Embedding ids [rows, width] (0 pads) and per-id weights that implement the combiner.

    TensorFlow's combiners over weights w: sum = Σ w·e, mean = Σ w·e / Σ w,
    sqrtn = Σ w·e / sqrt(Σ w²); one unweighted id per row needs no weights.
    """
    if ids.offsets is None and ids.weights is None:
        return padded(ids, 1, n)
    csr = ids.csr()
    weights = np.ones(len(csr.values), np.float32) if csr.weights is None else csr.weights
    if combiner != "sum":
        w64 = weights.astype(np.float64)
        norm = segment_sum(w64, csr.offsets) if combiner == "mean" else np.sqrt(
            segment_sum(w64**2, csr.offsets)
        )
        weights = (weights / np.where(norm > 0, norm, 1.0)[row_of(csr.offsets)]).astype(np.float32)
    return padded(Ids(csr.values, csr.offsets, weights), 1, n)
