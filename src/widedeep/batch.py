"""The encoded form of rows: the tensors the model reads.

Every tensor is row-aligned (first dimension = rows), so a mini-batch is one
``index_select`` per tensor, and batches from a stream concatenate after
padding their id lists to a common width.  Id 0 is the padding id everywhere:
``nn.EmbeddingBag(padding_idx=0)`` skips it, so a missing value contributes
nothing, as in TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """Wide ids, deep embedding ids, dense floats and (optionally) labels for a set of rows.

    - ``wide_ids``: int32 [rows, k], one id space for all wide columns, 0 = padding.
    - ``wide_weights``: float32 [rows, k] per-id weights, or None when all are 1.
    - ``embed_ids`` / ``embed_weights``: one [rows, l] tensor per embedding column; the
      weights already hold the combiner's normalisation (mean, sqrtn), or None for one id.
    - ``indicator_ids`` / ``indicator_weights``: the deep part's indicator columns as ids in
      one id space (0 = padding); the model multiplies their one-hot form implicitly.
    - ``dense``: float32 [rows, d], the deep part's numeric columns.
    - ``label``: float32 [rows] (binary, regression) or int64 [rows] (multi-class).
    - ``weight``: float32 [rows] example weights, or None.
    """

    wide_ids: torch.Tensor
    wide_weights: torch.Tensor | None
    embed_ids: list[torch.Tensor]
    embed_weights: list[torch.Tensor | None]
    indicator_ids: torch.Tensor
    indicator_weights: torch.Tensor | None
    dense: torch.Tensor
    label: torch.Tensor | None = None
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.dense.shape[0]

    def _map(self, fn) -> Batch:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                out[f.name] = [None if v is None else fn(v) for v in value]
            else:
                out[f.name] = None if value is None else fn(value)
        return Batch(**out)

    def index(self, rows: torch.Tensor | slice) -> Batch:
        """The subset of rows given by an index tensor or a slice."""
        if isinstance(rows, slice):
            return self._map(lambda t: t[rows])
        return self._map(lambda t: t.index_select(0, rows))

    def to(self, device: torch.device | str) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def without_label(self) -> Batch:
        return replace(self, label=None, weight=None)

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """Rows of several batches, id lists right-padded with 0 to the widest."""
        n_embed = len(batches[0].embed_ids)
        return Batch(
            wide_ids=_cat([b.wide_ids for b in batches]),
            wide_weights=_cat([b.wide_weights for b in batches], [b.wide_ids for b in batches]),
            embed_ids=[_cat([b.embed_ids[i] for b in batches]) for i in range(n_embed)],
            embed_weights=[
                _cat([b.embed_weights[i] for b in batches], [b.embed_ids[i] for b in batches])
                for i in range(n_embed)
            ],
            indicator_ids=_cat([b.indicator_ids for b in batches]),
            indicator_weights=_cat(
                [b.indicator_weights for b in batches], [b.indicator_ids for b in batches]
            ),
            dense=torch.cat([b.dense for b in batches]),
            label=_cat([b.label for b in batches]),
            weight=_cat([b.weight for b in batches]),
        )


def _cat(parts: list, ids: list[torch.Tensor] | None = None) -> torch.Tensor | None:
    """Concatenate rows; a missing weight tensor means all ones; 2-D parts are padded."""
    if all(p is None for p in parts):
        return None
    if ids is not None:
        parts = [torch.ones(i.shape) if p is None else p for p, i in zip(parts, ids)]
    if parts[0].dim() == 2:
        width = max(p.shape[1] for p in parts)
        parts = [F.pad(p, (0, width - p.shape[1])) for p in parts]
    return torch.cat(parts)
