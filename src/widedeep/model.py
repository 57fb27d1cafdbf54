"""The Wide & Deep network: a sparse linear model plus an MLP over embeddings, one logit.

    logit = wide(x) + deep(x)
    wide(x) = Σ w[id] · weight(id) + b            (one EmbeddingBag over all wide ids)
    deep(x) = MLP([embeddings, numerics]) with the indicator columns' one-hot
              product computed by gathering first-layer weight rows

The module knows nothing of strings or files: it reads a :class:`Batch` and is
built from plain shape numbers (:class:`ModelConfig`), so it can be saved,
all-reduced and rebuilt anywhere.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .batch import Batch
from .sparse import unique_inverse

MODEL_TYPES = ("wide", "deep", "wide_deep")


@dataclass
class ModelConfig:
    """Shapes and choices that define the network; JSON-serialisable."""

    model_type: str = "wide_deep"
    wide_dim: int = 0
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    indicator_dim: int = 0
    dense_dim: int = 0
    hidden_units: list[int] = field(default_factory=lambda: [100, 75, 50, 25])
    n_outputs: int = 1
    dropout: float | None = None
    batch_norm: bool = False
    sparse_wide: bool = False

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if any(int(h) < 1 for h in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.hidden_units = [int(h) for h in self.hidden_units]

    @classmethod
    def from_spec(cls, spec: Any, **kwargs: Any) -> ModelConfig:
        """Shapes from a fitted :class:`FeatureSpec`; ``kwargs`` set the remaining choices."""
        return cls(
            wide_dim=spec.wide_dim_,
            embeddings=spec.embedding_shapes_,
            indicator_dim=spec.indicator_dim_,
            dense_dim=spec.dense_dim_,
            n_outputs=spec.n_outputs_,
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WideDeep(nn.Module):
    """Wide (linear over sparse ids), deep (MLP) or both, summed into ``n_outputs`` logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.has_wide = config.model_type in ("wide", "wide_deep")
        self.has_deep = config.model_type in ("deep", "wide_deep")
        n_out = config.n_outputs
        if self.has_wide:
            # row 0 is padding: missing values and list padding add nothing; built on zeros
            # (reset_parameters' value) rather than the bag's random init, which on a
            # 10^8-row table takes seconds
            self.wide = nn.EmbeddingBag(
                config.wide_dim + 1,
                n_out,
                mode="sum",
                padding_idx=0,
                sparse=config.sparse_wide,
                _weight=torch.zeros(config.wide_dim + 1, n_out),
            )
            self.wide_bias = nn.Parameter(torch.zeros(n_out))
        if self.has_deep:
            self.embeddings = nn.ModuleList(
                nn.EmbeddingBag(
                    e["num_embeddings"] + 1,
                    e["dimension"],
                    mode="sum",
                    padding_idx=0,
                    max_norm=e.get("max_norm"),
                )
                for e in config.embeddings
            )
            widths = [
                config.dense_dim + sum(e["dimension"] for e in config.embeddings),
                *config.hidden_units,
            ]
            first_width = widths[1] if len(widths) > 1 else n_out
            self.indicator = (
                nn.EmbeddingBag(config.indicator_dim + 1, first_width, mode="sum", padding_idx=0)
                if config.indicator_dim
                else None
            )
            layers: list[nn.Module] = []
            for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:] + [n_out])):
                with warnings.catch_warnings():  # fan_in 0: only indicator columns feed layer 1
                    warnings.simplefilter("ignore", UserWarning)
                    layers.append(nn.Linear(fan_in, fan_out))
                if i < len(widths) - 1:
                    if config.batch_norm:
                        layers.append(nn.BatchNorm1d(fan_out))
                    layers.append(nn.ReLU())
                    if config.dropout:
                        layers.append(nn.Dropout(config.dropout))
            self.first = layers[0]
            self.rest = nn.Sequential(*layers[1:])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TensorFlow's initialisation: linear weights zero, dense layers Glorot-uniform."""
        if self.has_wide:
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide_bias)
        if not self.has_deep:
            return
        for bag, spec in zip(self.embeddings, self.config.embeddings):
            _init_embedding(bag.weight, spec.get("initializer"), spec["dimension"])
        for module in [self.first, *self.rest]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.indicator is not None:
            # the indicator rows are columns of the first layer: the same Glorot range over
            # the first layer's full fan-in
            fan_in = self.first.in_features + self.config.indicator_dim
            limit = math.sqrt(6.0 / (fan_in + self.first.out_features))
            nn.init.uniform_(self.indicator.weight, -limit, limit)
            nn.init.uniform_(self.first.weight, -limit, limit)
        for bag in [*self.embeddings, self.indicator]:
            if bag is not None:
                with torch.no_grad():
                    bag.weight[0].zero_()

    def wide_parameters(self) -> list[nn.Parameter]:
        """Parameters of the linear part (trained by FTRL by default)."""
        return [self.wide.weight, self.wide_bias] if self.has_wide else []

    def deep_parameters(self) -> list[nn.Parameter]:
        """Parameters of the deep part (trained by AdaGrad by default)."""
        wide = {id(p) for p in self.wide_parameters()}
        return [p for p in self.parameters() if id(p) not in wide]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits, [rows, n_outputs]."""
        logits = None
        if self.has_wide:
            if self.wide.sparse:  # huge tables: EmbeddingBag's padding_idx path is ~5x slower
                wide = _SparseWideSum.apply(self.wide.weight, batch.wide_ids, batch.wide_weights)
            elif len(batch) < FAST_SUM_MIN_ROWS:  # small batches: the bag, one kernel
                wide = self.wide(batch.wide_ids, per_sample_weights=batch.wide_weights)
            else:
                wide = _bag_sum_by_gather(self.wide.weight, batch.wide_ids, batch.wide_weights)
            logits = wide + self.wide_bias
        if self.has_deep:
            parts = [
                bag(ids, per_sample_weights=w)
                for bag, ids, w in zip(self.embeddings, batch.embed_ids, batch.embed_weights)
            ]
            x = torch.cat([*parts, batch.dense], dim=1) if parts else batch.dense
            h = self.first(x)
            one_hot = (
                len(batch) >= FAST_SUM_MIN_ROWS and self.config.indicator_dim <= ONE_HOT_MAX_DIM
            )
            if self.indicator is not None and one_hot:
                h = h + _bag_sum_by_one_hot(
                    self.indicator.weight, batch.indicator_ids, batch.indicator_weights
                )
            elif self.indicator is not None:
                h = h + self.indicator(
                    batch.indicator_ids, per_sample_weights=batch.indicator_weights
                )
            deep = self.rest(h)
            logits = deep if logits is None else logits + deep
        return logits


# EmbeddingBag(mode="sum")'s CPU backward is slow for big batches (4096 rows: ~8x slower
# than the gather below for the wide table, ~2x slower than the one-hot product for the
# indicator columns), which made training at batch >= 1024 ~20 % slower than a hand-written
# loop.  The two helpers compute the same sums with faster backward passes; the parameters
# (and so the saved models) stay the bags' weights.  Small batches keep the bags: one
# kernel each beats the helpers' few (batch 40: ~20 % faster training).
FAST_SUM_MIN_ROWS = 512
"""Batches of at least this many rows take the gather / one-hot sums."""
ONE_HOT_MAX_DIM = 512
"""Largest indicator id space multiplied as a one-hot block (rows x dim floats per batch)."""


def _bag_sum_by_gather(
    weight: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Σ_j weights[:, j] · weight[ids[:, j]] without the padding id 0 (the bag's sum)."""
    rows = weight[ids]  # [batch, k, out]
    if weights is not None:
        rows = rows * weights.unsqueeze(-1)
    # masked, not multiplied: row 0 then gets an exactly-zero gradient, as padding_idx gives
    return rows.masked_fill((ids == 0).unsqueeze(-1), 0.0).sum(1)


def _bag_sum_by_one_hot(
    weight: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """The same sum as a (multi-)one-hot matrix times ``weight``, padding column dropped."""
    like = {"dtype": weight.dtype, "device": weight.device}
    values = torch.ones(ids.shape, **like) if weights is None else weights
    one_hot = torch.zeros(ids.shape[0], weight.shape[0], **like).scatter_add_(1, ids.long(), values)
    return one_hot[:, 1:] @ weight[1:]


class _SparseWideSum(torch.autograd.Function):
    """Σ weight[id] · w per row, id 0 adding nothing, with a coalesced sparse COO gradient.

    The same function and gradient as ``EmbeddingBag(mode="sum", padding_idx=0,
    sparse=True)``, built for huge tables: the batch's ids are deduplicated once, each
    touched row is read once (on a 10^8-row table every read is a cache miss), the
    bag runs on those few rows, and the backward pass sums the gradient per distinct
    id with ``index_add`` -- so the gradient comes out coalesced (sorted, unique
    indices) and the optimizer does not sort it again. Row 0 (padding) stays zero:
    it never receives a gradient.
    """

    @staticmethod
    def forward(ctx, weight, ids, per_sample_weights):
        uniq, inverse = unique_inverse(ids)
        ctx.save_for_backward(uniq, inverse, per_sample_weights)
        ctx.rows, ctx.ids_per_row = weight.shape[0], ids.shape[1]
        return nn.functional.embedding_bag(
            inverse.view(ids.shape),
            _gather_rows(weight, uniq),
            mode="sum",
            per_sample_weights=per_sample_weights,
        )

    @staticmethod
    def backward(ctx, grad_out):
        uniq, inverse, per_sample_weights = ctx.saved_tensors
        values = grad_out.repeat_interleave(ctx.ids_per_row, dim=0)
        if per_sample_weights is not None:
            values = values * per_sample_weights.reshape(-1, 1)
        grad = values.new_zeros(uniq.numel(), grad_out.shape[1]).index_add_(0, inverse, values)
        if uniq.numel() and int(uniq[0]) == 0:  # padding: no gradient
            uniq, grad = uniq[1:], grad[1:]
        grad = torch.sparse_coo_tensor(
            uniq[None], grad, (ctx.rows, grad_out.shape[1]), is_coalesced=True,
            check_invariants=False,
        )  # fmt: skip
        return grad, None, None


def _gather_rows(weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``weight.index_select(0, index)``, fast also when ``weight`` is a column slice.

    FTRL keeps a huge sparse table's weights as a slice of a wider table (each row
    ``[weight | accum | linear]``, see :mod:`widedeep.optim`); ``index_select`` on such a
    view takes PyTorch's generic strided path (~2.5x slower on 10^8 rows), while
    gathering the underlying whole rows and slicing them reads the same cache lines.
    """
    rows, width = weight.shape
    stride, offset = weight.stride(0), weight.storage_offset()
    whole_rows_fit = offset + rows * stride <= weight.untyped_storage().nbytes() // weight.itemsize
    if weight.stride(1) != 1 or stride == width or not whole_rows_fit:
        return weight.index_select(0, index)
    table = weight.detach().as_strided((rows, stride), (stride, 1), offset)
    return table.index_select(0, index)[:, :width]


def _init_embedding(weight: torch.Tensor, initializer: str | None, dimension: int) -> None:
    """TensorFlow's embedding_column default: truncated normal, stddev 1/sqrt(dimension)."""
    std = 1.0 / math.sqrt(dimension)
    if initializer in (None, "truncated_normal"):
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
    elif initializer == "normal":
        nn.init.normal_(weight, std=std)
    elif initializer == "uniform":
        nn.init.uniform_(weight, -std, std)
    else:
        nn.init.zeros_(weight)
