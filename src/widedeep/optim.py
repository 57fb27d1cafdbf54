"""FTRL-Proximal for the wide part, and the reference estimator's default learning rates.

`Ftrl` reproduces TensorFlow's ``tf.compat.v1.train.FtrlOptimizer`` / Keras ``Ftrl``
(without the ``l2_shrinkage`` and ``beta`` extras) on dense and sparse (COO)
gradients. A sparse step reads and writes only the rows it touches, so its cost does
not depend on the size of the table.
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .sparse import unique_rows

# Defaults of tensorflow_estimator/python/estimator/canned/dnn_linear_combined.py
# (DNNLinearCombinedClassifier, the wide & deep estimator), where they are described
# as "a historical artifact of the initial implementation".
LINEAR_LEARNING_RATE = 0.005
"""Upper bound of the wide part's FTRL learning rate (canned ``_LINEAR_LEARNING_RATE``)."""

DNN_LEARNING_RATE = 0.001
"""Adagrad learning rate of the deep part (canned ``_DNN_LEARNING_RATE``,
tensorflow_estimator canned/dnn_linear_combined.py; Adagrad's accumulators start at 0.1)."""

# The single-tower canned estimators use other defaults: LinearClassifier (canned/linear.py)
# FTRL at min(0.2, 1/sqrt(n)); DNNClassifier (canned/dnn.py) Adagrad at 0.05.
LINEAR_ONLY_LEARNING_RATE_CAP = 0.2
"""Upper bound of FTRL's rate in the linear-only ``LinearClassifier`` (canned/linear.py)."""

DNN_ONLY_LEARNING_RATE = 0.05
"""Adagrad learning rate of the deep-only ``DNNClassifier`` (canned/dnn.py)."""


def linear_learning_rate(num_linear_feature_columns: int) -> float:
    """Default FTRL learning rate of the wide part: ``min(0.005, 1 / sqrt(n))``.

    ``n`` is the number of linear (wide) feature columns, as in
    ``_linear_learning_rate`` of tensorflow_estimator canned/dnn_linear_combined.py.
    """
    n = int(num_linear_feature_columns)
    if n < 1:
        raise ValueError(
            f"num_linear_feature_columns must be >= 1, got {num_linear_feature_columns!r}"
        )
    return min(LINEAR_LEARNING_RATE, 1.0 / math.sqrt(n))


class Ftrl(torch.optim.Optimizer):
    """FTRL-Proximal (McMahan et al., 2013) exactly as TensorFlow's FtrlOptimizer.

    Per coordinate, with gradient ``g``::

        accum_new = accum + g**2
        sigma     = (accum_new**(-lr_power) - accum**(-lr_power)) / lr
        linear   += g - sigma * w
        quadratic = accum_new**(-lr_power) / lr + 2 * l2
        w         = (sign(linear) * l1 - linear) / quadratic  if |linear| > l1 else 0
        accum     = accum_new

    Gradients may be dense or sparse COO (``nn.EmbeddingBag(..., sparse=True)``);
    duplicate sparse indices are summed. A sparse step gathers the touched rows of the
    weights and both state tensors, updates them and scatters them back: nothing else
    of the table is read or written.

    A coordinate whose gradient is exactly zero is left as it is (weight and state).
    Algebraically that is what the formula gives anyway whenever ``w`` equals the
    closed form of ``(linear, accum)`` -- which holds after every step and, thanks to
    the initialisation below, before the first -- so this only removes rounding noise
    and makes a dense gradient give bit-for-bit the result of the sparse gradient
    holding the same non-zero rows.

    State (``self.state[p]``), created at the first step that sees a gradient for ``p``:

    - ``accum``: starts at ``initial_accumulator_value``.
    - ``linear``: starts at ``-w * q0 - sign(w) * l1`` with
      ``q0 = initial_accumulator_value**(-lr_power) / lr + 2 * l2``: the one value for
      which the closed form above gives back the current weights. TensorFlow starts
      ``linear`` at 0, which maps every weight to 0 at its first update; for weights
      initialised at 0 (the usual wide part) both agree, but a warm-started model (the
      paper retrains each new model from the previous one) would otherwise lose its
      wide weights on the first step that touches them.

    Both are tensors of the parameter's shape, so ``state_dict()`` /
    ``load_state_dict()`` round-trip and can be written with safetensors. For a 2-D
    parameter of at least :data:`PACK_MIN_BYTES` trained by sparse gradients (a huge
    wide table) they are column slices of one ``[rows, 3 * width]`` table that also
    holds the parameter's data -- ``p.data`` becomes a slice of it at the first step --
    so that a step reads and writes each touched row in one place (see ``_pack_``).

    Args:
        params: parameters or parameter groups.
        lr: learning rate (> 0).
        lr_power: power of the per-coordinate rate, <= 0 (-0.5 is the usual
            ``1/sqrt(accum)`` and takes a ``sqrt`` fast path).
        initial_accumulator_value: starting value of ``accum`` (>= 0).
        l1: L1 regularisation strength (>= 0); drives small weights to exactly 0.
        l2: L2 regularisation strength (>= 0).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.005,
        lr_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        _check_hyperparameters(lr, lr_power, initial_accumulator_value, l1, l2)
        defaults = dict(
            lr=float(lr),
            lr_power=float(lr_power),
            initial_accumulator_value=float(initial_accumulator_value),
            l1=float(l1),
            l2=float(l2),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one FTRL update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, lr_power = group["lr"], group["lr_power"]
            l1, l2 = group["l1"], group["l2"]
            accum0 = group["initial_accumulator_value"]
            _check_hyperparameters(lr, lr_power, accum0, l1, l2)
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    pack = grad.is_sparse and _packable(p)
                    _init_state(state, p, lr, lr_power, accum0, l1, l2, pack)
                accum, linear = state["accum"], state["linear"]
                if grad.is_sparse:
                    table = _table_of(p, accum, linear)
                    if table is None and _packable(p):  # e.g. state loaded from a checkpoint
                        table = _pack_(p, state, accum, linear)
                        accum, linear = state["accum"], state["linear"]
                    _sparse_step(p, grad, accum, linear, table, lr, lr_power, l1, l2)
                else:
                    if grad.layout != torch.strided:
                        raise ValueError(
                            f"Ftrl supports dense and sparse COO gradients, got {grad.layout}"
                        )
                    _ftrl_update_(p, grad, accum, linear, lr, lr_power, l1, l2)
        return loss


def _check_hyperparameters(
    lr: float, lr_power: float, initial_accumulator_value: float, l1: float, l2: float
) -> None:
    if not lr > 0.0:
        raise ValueError(f"Ftrl: lr must be > 0, got {lr!r}")
    if not lr_power <= 0.0:
        raise ValueError(f"Ftrl: lr_power must be <= 0, got {lr_power!r}")
    if not initial_accumulator_value >= 0.0:
        raise ValueError(
            f"Ftrl: initial_accumulator_value must be >= 0, got {initial_accumulator_value!r}"
        )
    if not l1 >= 0.0:
        raise ValueError(f"Ftrl: l1 must be >= 0, got {l1!r}")
    if not l2 >= 0.0:
        raise ValueError(f"Ftrl: l2 must be >= 0, got {l2!r}")


def _init_state(
    state: dict[str, Any],
    p: torch.Tensor,
    lr: float,
    lr_power: float,
    accum0: float,
    l1: float,
    l2: float,
    pack: bool = False,
) -> None:
    q0 = accum0 ** (-lr_power) / lr + 2.0 * l2
    if q0 <= 0.0 and bool(torch.any(p != 0)):
        raise ValueError(
            "Ftrl: non-zero starting weights cannot be kept with initial_accumulator_value=0 "
            "and l2=0; use initial_accumulator_value > 0 (TensorFlow's default is 0.1)"
        )
    if pack:  # no separate full-size state tensors: straight into the packed table
        _pack_(p, state, accum0, None)
        linear = state["linear"].copy_(p.detach()).mul_(-q0)
    else:
        state["accum"] = torch.full_like(p, accum0, memory_format=torch.preserve_format)
        linear = p.detach().mul(-q0)
    # linear = -w*q0 - sign(w)*l1: makes the current weights a fixed point (see docstring).
    if l1 > 0.0:
        linear.sub_(p.detach().sign(), alpha=l1)
    state["linear"] = linear


def _ftrl_update_(
    w: torch.Tensor,
    g: torch.Tensor,
    accum: torch.Tensor,
    linear: torch.Tensor,
    lr: float,
    lr_power: float,
    l1: float,
    l2: float,
) -> None:
    """Apply the FTRL formula in place to ``w``, ``accum`` and ``linear`` (same shape)."""
    fast = lr_power == -0.5
    pow_old = accum.sqrt() if fast else accum.pow(-lr_power)
    accum.addcmul_(g, g)
    pow_new = accum.sqrt() if fast else accum.pow(-lr_power)
    # linear += g - sigma * w, with sigma = (pow_new - pow_old) / lr
    linear.add_(torch.addcmul(g, pow_new.sub(pow_old).div_(lr), w, value=-1.0))
    quadratic = pow_new.div_(lr)
    if l2 != 0.0:
        quadratic.add_(2.0 * l2)
    # clamp(linear, -l1, l1) - linear is sign(linear)*l1 - linear where |linear| > l1,
    # and exactly 0 elsewhere: the proximal (soft-threshold) step in two ops.
    new_w = linear.clamp(-l1, l1).sub_(linear).div_(quadratic)
    # Exactly-zero gradient: keep w as is (equal to new_w up to rounding; see class docstring).
    w.copy_(torch.where(g != 0, new_w, w))


def _sparse_step(
    p: torch.Tensor,
    grad: torch.Tensor,
    accum: torch.Tensor,
    linear: torch.Tensor,
    table: torch.Tensor | None,
    lr: float,
    lr_power: float,
    l1: float,
    l2: float,
) -> None:
    if grad.sparse_dim() != 1:
        raise ValueError(
            "Ftrl: sparse gradients must be sparse along the first dimension only "
            f"(as nn.Embedding / nn.EmbeddingBag give), got sparse_dim={grad.sparse_dim()}"
        )
    rows, values = unique_rows(grad)
    if rows.numel() == 0:
        return
    if table is not None:  # one gather and one scatter of [weight | accum | linear] rows
        block = table.index_select(0, rows)
        w_rows, accum_rows, linear_rows = block.split(p.shape[1], dim=1)
        _ftrl_update_(w_rows, values, accum_rows, linear_rows, lr, lr_power, l1, l2)
        table.index_copy_(0, rows, block)
        return
    w_rows = p.index_select(0, rows)
    accum_rows = accum.index_select(0, rows)
    linear_rows = linear.index_select(0, rows)
    _ftrl_update_(w_rows, values, accum_rows, linear_rows, lr, lr_power, l1, l2)
    p.index_copy_(0, rows, w_rows)
    accum.index_copy_(0, rows, accum_rows)
    linear.index_copy_(0, rows, linear_rows)


def row_tensors(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> list[torch.Tensor]:
    """The tensors holding ``p``'s rows and its per-row optimizer state (rows along dim 0):
    FTRL's packed ``[weight | accum | linear]`` table where ``p`` has one, else ``p`` and
    the state tensors of its shape.  Copying these rows from one process to another
    moves a row's whole training state (distributed training's sharded updates)."""
    state = optimizer.state.get(p, {})
    if isinstance(optimizer, Ftrl) and "accum" in state:
        table = _table_of(p, state["accum"], state["linear"])
        if table is not None:
            return [table]
    same = [v for v in state.values() if torch.is_tensor(v) and v.shape == p.shape]
    return [p.detach(), *same]


# --------------------------------------------------------------------------- the packed table
# A sparse step on a huge table waits on memory: each touched row is a cache (and TLB)
# miss in every array it reads.  Keeping a row's weight, accum and linear side by side
# in one [rows, 3 * width] table makes that one miss instead of three, and the forward
# pass's read of the weights brings in the optimizer's state with them.

PACK_MIN_BYTES = 1 << 20
"""Sparse-gradient parameters at least this large get the packed table (and huge pages)."""


def _table_of(p: torch.Tensor, accum: torch.Tensor, linear: torch.Tensor) -> torch.Tensor | None:
    """The packed [rows, 3 * width] table holding ``p``, ``accum`` and ``linear``, if any."""
    if p.dim() != 2 or p.stride() != (3 * p.shape[1], 1):
        return None
    width, base = p.shape[1], p.untyped_storage().data_ptr()
    offset = p.storage_offset()
    for k, t in enumerate((accum, linear), start=1):
        same_storage = t.untyped_storage().data_ptr() == base
        if not (same_storage and t.stride() == p.stride()) or (
            t.storage_offset() != offset + k * width
        ):
            return None
    return p.detach().as_strided((p.shape[0], 3 * width), (3 * width, 1), offset)


def _packable(p: torch.Tensor) -> bool:
    return p.dim() == 2 and p.numel() * p.element_size() >= PACK_MIN_BYTES


def _pack_(
    p: torch.Tensor,
    state: dict[str, Any],
    accum: torch.Tensor | float,
    linear: torch.Tensor | None,
) -> torch.Tensor:
    """Move a 2-D parameter and its FTRL state (tensors, or a fill value / None to leave
    it unset) into one packed table, and return the table.

    ``p`` keeps its identity (the module still holds it) but its data become a
    strided view of the table, as do ``state["accum"]`` and ``state["linear"]``;
    ``state_dict()`` still gives tensors of the parameter's shape (saved contiguous).
    """
    rows, width = p.shape
    table = torch.empty(rows, 3 * width, dtype=p.dtype, device=p.device)
    _advise_huge_pages(table)  # before the first touch, which the copies below are
    table[:, :width] = p.detach()
    p.data = table[:, :width]  # each old tensor is freed as soon as it is copied
    table[:, width : 2 * width] = accum
    state["accum"] = table[:, width : 2 * width]
    if linear is not None:
        table[:, 2 * width :] = linear
    state["linear"] = table[:, 2 * width :]
    return table


def _advise_huge_pages(t: torch.Tensor) -> None:
    """Ask Linux for transparent huge pages under ``t`` (best effort, CPU only).

    With 4 KiB pages a random row of a 1 GB table is also a TLB miss; with 2 MiB pages
    the page walks mostly go.  Systems that set THP to "madvise" (the default of many
    distributions) give them only on request; elsewhere this does nothing.
    """
    if t.device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        page = 1 << 21
        start = (t.data_ptr() + page - 1) // page * page
        end = (t.data_ptr() + t.numel() * t.element_size()) // page * page
        if end > start:
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 14)  # MADV_HUGEPAGE
    except (OSError, AttributeError):
        pass
