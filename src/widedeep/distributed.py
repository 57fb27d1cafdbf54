"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node N -m widedeep train ...`` starts N processes with
``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` in their environment;
:func:`init_from_env` joins them into one process group (gloo on CPU, NCCL on
GPU).  What each piece does:

- the model is wrapped in ``DistributedDataParallel``, which all-reduces the
  dense layers' gradients while the backward pass runs;
- the sparse wide table (``sparse_wide``) and large deep embeddings are left out
  of DDP, which would send them whole every step: :func:`sync_sparse_grads`
  sends only the rows each rank touched, in one all-to-all, so the cost follows
  the batch, not the table.  A wide row is summed and updated by the rank that
  owns it (``row % world``) and :func:`share_updated_rows` copies the updated
  rows, optimizer state included, to the other ranks: FTRL's work is split
  between the ranks, its results are the same everywhere;
- with the reference's *summed* loss every rank scales its loss by the world
  size, so DDP's average equals the gradient of the global batch summed: N
  processes at batch b train exactly like one process at batch N·b;
- AdaGrad runs on identical (rank-order summed) gradients on every rank, so
  weights and optimizer state stay identical without being broadcast;
- :func:`in_lockstep` ends an epoch for all ranks as soon as one runs out of
  batches (shards need not hold the same number of rows);
- evaluation gathers every rank's logits and labels, so metrics are exact over
  all rows, not averages of per-rank metrics.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import optim
from .batch import Batch
from .sparse import sum_rows, unique_rows


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size, and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (shares differ by at most one row)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)


_context = Context()


def current() -> Context:
    return _context


def resolve_device(device: str | None) -> str:
    """'cpu', 'cuda' or 'cuda:k'; ``None`` or 'auto' picks CUDA when present."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return device


def init_from_env(device: str | None = None) -> Context:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    global _context
    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _context = Context(device=device)
        return _context
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    _context = Context(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return _context


def shutdown() -> None:
    global _context
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = Context(device=_context.device)


def use(context: Context) -> None:
    """Set the current context (for process groups started by hand, e.g. in tests)."""
    global _context
    _context = context


# --------------------------------------------------------------------------- training


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` under DDP, without the tables whose gradients :func:`sync_sparse_grads`
    exchanges row by row (sparse wide table, large embedding tables)."""
    if not ctx.distributed:
        return model
    ignored = list(_exchanged(model))
    if len([p for n, p in model.named_parameters() if n not in ignored]) == 0:
        return model
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, gradient_as_bucket_view=True
    )


EXCHANGE_MIN_ROWS = 1 << 14
"""Dense-gradient embedding tables with at least this many rows exchange their touched rows
instead of being all-reduced whole: a batch touches a few thousand rows of them (the
synthetic ``apps`` table: 8k of 100k rows at batch 4,096, 0.3 of 3.2 MB).  Measured on 2
gloo ranks: ~2.1 ms of CPU per step to all-reduce that table, ~1.4 ms to find, send and
add its touched rows; for tables of a few thousand rows the two are even."""


def _exchanged(model: nn.Module) -> dict[str, nn.Embedding | nn.EmbeddingBag]:
    """The tables whose gradients go through :func:`sync_sparse_grads`, by weight name."""
    return {
        f"{name}.weight": m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
        and (m.sparse or m.weight.shape[0] >= EXCHANGE_MIN_ROWS)
    }


def loss_scale(ctx: Context, reduction: str) -> float:
    """Factor on each rank's loss so that DDP's mean is the global batch's gradient."""
    return float(ctx.world) if reduction == "sum" else 1.0


def sync_sparse_grads(model: nn.Module, ctx: Context) -> list[Owned]:
    """Average over ranks (as DDP does) the gradients of the tables DDP leaves out, sending
    only the rows each rank touched, all tables in one all-to-all.

    - A sparse table (the wide one) is *sharded for the update*: row ``i`` belongs to rank
      ``i % world``, which alone receives every rank's gradient rows for it, sums them and
      updates them; :func:`share_updated_rows` then sends the updated rows (weights and
      optimizer state) to the other ranks.  So each rank merges and updates 1/world of
      the rows instead of all of them, and all ranks still end the step with identical
      tables.  Returns what :func:`share_updated_rows` needs.
    - A dense table (a large deep embedding) gets every rank's rows: its gradient becomes
      the rank-order sum on every rank, bit-identical everywhere, and the optimizer runs
      on it as on any dense parameter.
    """
    if not ctx.distributed:
        return []
    tables = list(_exchanged(model).values())
    if not tables:
        return []
    world, me = ctx.world, ctx.rank
    sends = []  # sends[i][dest]: (rows, values) of table i for rank dest
    for m in tables:
        rows, values = _touched_rows(m.weight)
        sends.append(_split_by_owner(rows, values, world) if m.sparse else [(rows, values)] * world)
    # counts[src][dest][i]: rows of table i that src sends to dest (one small all-gather)
    counts = torch.tensor([[len(sends[i][d][0]) for d in range(world) for i in range(len(tables))]])
    counts = gather_rows(counts.to(ctx.device), ctx, [1] * world)
    counts = counts.view(world, world, len(tables)).tolist()
    send = torch.cat(
        [_pack(m.weight, *sends[i][d]) for d in range(world) for i, m in enumerate(tables)]
    )
    nbytes = [
        [_nbytes(m.weight, n) for m, n in zip(tables, counts[src][me])] for src in range(world)
    ]
    recv = torch.empty(sum(map(sum, nbytes)), dtype=torch.uint8, device=send.device)
    dist.all_to_all_single(
        recv,
        send,
        [sum(b) for b in nbytes],
        [sum(_nbytes(m.weight, n) for m, n in zip(tables, counts[me][d])) for d in range(world)],
    )
    parts = [buf.split(b) for buf, b in zip(recv.split([sum(b) for b in nbytes]), nbytes)]
    owned = []
    for i, m in enumerate(tables):
        p = m.weight
        ranks = [_unpack(p, parts[src][i], counts[src][me][i]) for src in range(world)]
        if m.sparse:  # the rows this rank owns: sum (in rank order), to update here
            rows, values = sum_rows(*(torch.cat(t) for t in zip(*ranks)))
            p.grad = torch.sparse_coo_tensor(
                rows[None], values.div_(world), p.shape, is_coalesced=True, check_invariants=False
            )
            most = [sum(counts[src][owner][i] for src in range(world)) for owner in range(world)]
            owned.append(Owned(p, rows, max(most)))
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        grad.index_fill_(0, sends[i][me][0], 0.0)  # own rows are added back in rank order
        for rows, values in ranks:  # a rank's rows are distinct: gather, add, scatter
            # (index_add_ takes 8x longer on [rows, 8] tables)
            grad.index_copy_(0, rows, grad.index_select(0, rows).add_(values, alpha=1 / world))
        p.grad = grad
    return owned


@dataclass(frozen=True)
class Owned:
    """A table whose touched rows this rank updated alone (see :func:`sync_sparse_grads`):
    ``rows`` it updated, ``most``: an upper bound on any rank's count of such rows."""

    param: nn.Parameter
    rows: torch.Tensor
    most: int


@torch.no_grad()
def share_updated_rows(
    owned: list[Owned], optimizers: list[torch.optim.Optimizer], ctx: Context
) -> None:
    """After the optimizers' step: send the rows each rank updated (weights and optimizer
    state, e.g. FTRL's packed ``[weight | accum | linear]`` rows) to every other rank,
    in one all-gather, so that all ranks hold the same tables again."""
    if not owned:
        return
    layouts, sizes = [], []  # per table: a block [count | rows | values], one size on all ranks
    for o in owned:
        opt = next(
            opt
            for opt in optimizers
            for g in opt.param_groups
            if any(q is o.param for q in g["params"])  # ``in`` would compare tensors by value
        )
        tensors = optim.row_tensors(opt, o.param)
        widths = [math.prod(t.shape[1:]) for t in tensors]
        like = tensors[0].new_empty(0, sum(widths))  # the shape of a block's value rows
        layouts.append((o, tensors, widths, like))
        sizes.append(-(-(8 + _nbytes(o.param, o.most, like)) // 8) * 8)  # 8-byte aligned
    send = torch.empty(sum(sizes), dtype=torch.uint8, device=owned[0].rows.device)
    for block, (o, tensors, _, like) in zip(send.split(sizes), layouts):
        n, row_dtype = len(o.rows), _row_dtype(o.param)
        block[:8].view(torch.int64).fill_(n)
        block[8 : 8 + n * row_dtype.itemsize].view(row_dtype).copy_(o.rows)
        values = block[8 + n * row_dtype.itemsize : 8 + _nbytes(o.param, n, like)]
        values = values.view(like.dtype).view(n, -1)
        if len(tensors) == 1:  # FTRL's packed table: gathered straight into the buffer
            torch.index_select(tensors[0], 0, o.rows, out=values)
        else:
            values.copy_(torch.cat([t.index_select(0, o.rows).view(n, -1) for t in tensors], 1))
    everything = gather_rows(send, ctx, [sum(sizes)] * ctx.world)
    for src, buf in enumerate(everything.split(sum(sizes))):
        if src == ctx.rank:
            continue
        for block, (o, tensors, widths, like) in zip(buf.split(sizes), layouts):
            n = int(block[:8].view(torch.int64))
            rows, values = _unpack(o.param, block[8:], n, like)
            for t, cols in zip(tensors, values.split(widths, dim=1)):
                t.index_copy_(0, rows, cols.reshape(n, *t.shape[1:]))


def _split_by_owner(
    rows: torch.Tensor, values: torch.Tensor, world: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(rows, values)`` split by owning rank (``row % world``), each part still sorted."""
    if rows.device.type != "cpu":
        owner = rows % world
        return [(rows[owner == d], values[owner == d]) for d in range(world)]
    r, v = rows.numpy(), values.numpy()
    # NumPy: 3x faster than torch's boolean indexing; a bit mask for 2, 4, 8... ranks
    owner = r & (world - 1) if world & (world - 1) == 0 else r % world
    if world > 8:  # one stable sort of 16-bit keys (a radix sort) beats a pass per rank
        order = np.argsort(owner.astype(np.uint16), kind="stable")
        ends = np.cumsum(np.bincount(owner, minlength=world))[:-1]
        parts = np.split(order, ends)
    else:
        parts = [np.flatnonzero(owner == d) for d in range(world)]
    return [(torch.from_numpy(r[i]), torch.from_numpy(v[i])) for i in parts]


def _touched_rows(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted row indices (int64) with a non-zero gradient and their gradient rows."""
    grad = p.grad
    if grad is None:
        return torch.zeros(0, dtype=torch.long, device=p.device), p.new_zeros((0, *p.shape[1:]))
    if grad.is_sparse:
        return unique_rows(grad)
    # untouched rows have exactly zero gradient: skipping them (and touched rows whose
    # gradient happens to be zero) changes no sum
    rows = _nonzero_rows(grad.reshape(grad.shape[0], -1))
    return rows, grad.index_select(0, rows)


def _nonzero_rows(grad: torch.Tensor) -> torch.Tensor:
    """Indices of the rows of a 2-D tensor holding any non-zero bit pattern.

    OR-ing the rows' 8-byte words is ~2x faster than ``ne(0).any(1)`` (a 3.2 MB table:
    0.6 vs 1.6 ms); a -0.0 counts as non-zero, which only sends a zero along.
    """
    if grad.shape[1] * grad.element_size() % 8 or not grad.is_contiguous():
        return grad.ne(0).any(1).nonzero().squeeze(1)
    words = grad.view(torch.int64)
    acc = words[:, 0].clone()
    for j in range(1, words.shape[1]):
        acc.bitwise_or_(words[:, j])
    return acc.nonzero().squeeze(1)


# One byte buffer carries every table's rows and values: rows as int32 where the table
# allows (under 2^31 rows), halving what int64 indices would send.


def _row_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.int32 if p.shape[0] < 2**31 else torch.int64


def _nbytes(p: torch.Tensor, n: int, like: torch.Tensor | None = None) -> int:
    """Bytes of ``n`` rows of table ``p`` with values shaped as rows of ``like`` (or ``p``)."""
    like = p if like is None else like
    return n * (_row_dtype(p).itemsize + math.prod(like.shape[1:]) * like.element_size())


def _pack(p: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    rows = rows.to(_row_dtype(p))
    return torch.cat([rows.view(torch.uint8), values.contiguous().view(-1).view(torch.uint8)])


def _unpack(
    p: torch.Tensor, buf: torch.Tensor, n: int, like: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    like = p if like is None else like
    dtype = _row_dtype(p)
    split = n * dtype.itemsize
    values = _view(buf[split : _nbytes(p, n, like)], like.dtype)
    return _view(buf[:split], dtype).long(), values.reshape(n, *like.shape[1:])


def _view(buf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bytes as ``dtype``: a view when aligned (the usual float32 case), else a copy."""
    if buf.storage_offset() % dtype.itemsize:
        buf = buf.clone()
    return buf.view(dtype)


def in_lockstep(batches: Iterator[Batch], ctx: Context, stop: Any = None) -> Iterator[Batch]:
    """Stop every rank at the first step where any rank has no batch left; and raise
    KeyboardInterrupt on every rank at the same step once any rank's ``stop.requested``
    (a Ctrl-C or SIGTERM), so that the ranks stop after the same whole step."""
    if not ctx.distributed:
        yield from batches
        return
    flag = torch.zeros(1, dtype=torch.int32, device=ctx.device)
    for batch in batches:
        flag.fill_(1 if stop is not None and stop.requested else 2)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag.item()) == 0:
            return
        if int(flag.item()) == 1:
            raise KeyboardInterrupt
        yield batch
    flag.fill_(0)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)


def row_counts(n: int, ctx: Context, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n``, in rank order."""
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def gather_rows(t: torch.Tensor, ctx: Context, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's rows of ``t``, concatenated in rank order (shapes may differ in rows);
    ``sizes``: every rank's row count when already known (:func:`row_counts`)."""
    if not ctx.distributed:
        return t
    if sizes is None:
        sizes = row_counts(t.shape[0], ctx, t.device)
    longest = max(sizes)
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def broadcast_json(obj, ctx: Context):
    """Rank 0's JSON-able value on every rank (e.g. a fitted feature spec's state)."""
    if not ctx.distributed:
        return obj
    data = json.dumps(obj).encode() if ctx.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.long, device=ctx.device)
    dist.broadcast(size, 0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=ctx.device)
    if ctx.is_main:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, 0)
    return json.loads(bytes(buf.cpu().numpy()).decode())


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
