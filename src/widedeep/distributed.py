"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node N -m widedeep train ...`` starts N processes with
``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` in their environment;
:func:`init_from_env` joins them into one process group (gloo on CPU, NCCL on
GPU).  What each piece does:

- the deep part is wrapped in ``DistributedDataParallel``, which all-reduces
  its dense gradients while the backward pass runs;
- a sparse wide table (``sparse_wide``) is left out of DDP (NCCL has no sparse
  all-reduce, and gloo's gathers the same data): :func:`sync_sparse_grads`
  all-gathers the touched rows' indices and values, so the cost follows the
  batch, not the table;
- with the reference's *summed* loss every rank scales its loss by the world
  size, so DDP's average equals the gradient of the global batch summed: N
  processes at batch b train exactly like one process at batch N·b;
- every rank then applies FTRL / AdaGrad to identical gradients, so weights and
  optimizer state stay identical without being broadcast;
- :func:`in_lockstep` ends an epoch for all ranks as soon as one runs out of
  batches (shards need not hold the same number of rows);
- evaluation gathers every rank's logits and labels, so metrics are exact over
  all rows, not averages of per-rank metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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
    """``model`` under DDP (sparse wide table excluded: see :func:`sync_sparse_grads`)."""
    if not ctx.distributed:
        return model
    ignored = [name for name in _sparse_parameters(model)]
    if len([p for n, p in model.named_parameters() if n not in ignored]) == 0:
        return model
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, gradient_as_bucket_view=True
    )


def _sparse_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        f"{name}.weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse
    }


def loss_scale(ctx: Context, reduction: str) -> float:
    """Factor on each rank's loss so that DDP's mean is the global batch's gradient."""
    return float(ctx.world) if reduction == "sum" else 1.0


def sync_sparse_grads(model: nn.Module, ctx: Context) -> None:
    """Average the sparse gradients over ranks (as DDP does for dense ones) by all-gathering."""
    if not ctx.distributed:
        return
    for p in _sparse_parameters(model).values():
        grad = p.grad
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.zeros(1, 0, dtype=torch.long, device=p.device),
                torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=p.device),
                p.shape,
            )
        rows, values = unique_rows(grad)
        sizes = row_counts(rows.shape[0], ctx, rows.device)  # once for both gathers
        rows, values = gather_rows(rows, ctx, sizes), gather_rows(values, ctx, sizes)
        # rows touched on several ranks arrive once per rank: summed here, with a fast
        # sort, so that the optimizer gets a deduplicated gradient
        rows, values = sum_rows(rows, values)
        p.grad = torch.sparse_coo_tensor(
            rows[None], values.div_(ctx.world), p.shape, is_coalesced=True, check_invariants=False
        )


def in_lockstep(batches: Iterator[Batch], ctx: Context) -> Iterator[Batch]:
    """Stop every rank at the first step where any rank has no batch left."""
    if not ctx.distributed:
        yield from batches
        return
    flag = torch.zeros(1, dtype=torch.int32, device=ctx.device)
    for batch in batches:
        flag.fill_(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag.item()) == 0:
            return
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
