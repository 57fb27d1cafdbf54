"""The run loop: joint FTRL + AdaGrad training, periodic evaluation, checkpoints, resume.

As TensorFlow's ``wide_deep_run_loop``: train ``epochs_between_evals`` epochs,
evaluate, log the reference metrics, repeat for ``train_epochs``; stop early
once accuracy reaches ``stop_threshold``.  Unlike it: a checkpoint is written
atomically after every evaluation (every ``epochs_between_evals`` epochs even
without evaluation data, and on Ctrl-C / SIGTERM), a ``model_dir``
that holds one resumes exactly where it stopped (same optimizer state, same
data order), and one JSON line per evaluation goes to ``metrics.jsonl``.

The loop knows nothing of any data set: it reads batches from a *source*
(``epoch(e, skip)`` yields the batches of epoch ``e``), so in-memory tensors
and streamed files train through the same code.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from . import artifact, distributed, optim
from .batch import Batch
from .heads import evaluation_metrics, training_loss
from .model import ModelConfig, WideDeep
from .transform import FeatureSpec

OPTIMIZERS = ("ftrl", "adagrad", "adam", "adamw", "sgd", "rmsprop")
EVAL_CHUNK = 1 << 16


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM after writing a checkpoint."""


@dataclass
class TrainConfig:
    """How to train: the run loop's and the optimizers' settings (plain values)."""

    train_epochs: int = 40
    epochs_between_evals: int = 2
    batch_size: int = 40
    seed: int = 0
    stop_threshold: float | None = None
    linear_optimizer: str = "ftrl"
    linear_learning_rate: float | None = None  # None: the canned estimators' default
    linear_l1: float = 0.0
    linear_l2: float = 0.0
    dnn_optimizer: str = "adagrad"
    dnn_learning_rate: float | None = None
    weight_decay: float = 0.0
    loss_reduction: str = "sum"
    max_steps: int | None = None  # stop once global_step reaches it (TensorFlow's max_steps)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.train_epochs >= 1, f"train_epochs must be >= 1, got {self.train_epochs}")
        need(
            self.epochs_between_evals >= 1,
            f"epochs_between_evals must be >= 1, got {self.epochs_between_evals}",
        )
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(
            self.linear_optimizer in OPTIMIZERS and self.dnn_optimizer in OPTIMIZERS,
            f"optimizers must be among {OPTIMIZERS}, got {self.linear_optimizer!r} and "
            f"{self.dnn_optimizer!r}",
        )
        need(
            self.loss_reduction in ("sum", "mean"),
            f"loss_reduction must be 'sum' or 'mean', got {self.loss_reduction!r}",
        )
        need(
            self.stop_threshold is None or 0 < self.stop_threshold <= 1,
            f"stop_threshold must be in (0, 1], got {self.stop_threshold}",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- data sources


class Source(Protocol):
    """Anything that yields an epoch's training batches; ``skip`` resumes mid-epoch."""

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]: ...

    def batches_per_epoch(self) -> int | None: ...


class InMemory:
    """Encoded rows in memory, reshuffled every epoch from ``seed`` (the fast path).

    In a distributed run (``world`` > 1) every rank draws the same permutation and
    takes its share of each global batch of ``batch_size * world`` rows, so the
    ranks together see exactly the batches one process would at the global size.
    """

    def __init__(
        self,
        data: Batch,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world = rank, world

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data) / (self.batch_size * self.world))

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        data = self.data
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            data = data.index(torch.randperm(len(data), generator=g))  # one gather per epoch
        step = self.batch_size * self.world
        for start in range(skip * step, len(data), step):
            n = min(step, len(data) - start)
            lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
            yield data.index(slice(start + lo, start + hi))  # views: no copy


def as_source(data: Batch | Source, batch_size: int, seed: int, shuffle: bool = True) -> Source:
    if not isinstance(data, Batch):
        return data
    ctx = distributed.current()
    return InMemory(data, batch_size, seed, shuffle, ctx.rank, ctx.world)


# --------------------------------------------------------------------------- optimizers


def default_learning_rates(model_type: str, num_wide_columns: int) -> tuple[float, float]:
    """The canned estimators' defaults: (FTRL rate, AdaGrad rate) for this model type."""
    if model_type == "wide":  # LinearClassifier
        return min(optim.LINEAR_ONLY_LEARNING_RATE_CAP, 1 / math.sqrt(num_wide_columns)), 0.0
    if model_type == "deep":  # DNNClassifier
        return 0.0, optim.DNN_ONLY_LEARNING_RATE
    return optim.linear_learning_rate(num_wide_columns), optim.DNN_LEARNING_RATE


def make_optimizer(
    name: str, params: list, lr: float, config: TrainConfig
) -> torch.optim.Optimizer:
    """One of the supported optimizers, with TensorFlow's defaults where it had them."""
    if name == "ftrl":
        return optim.Ftrl(params, lr=lr, l1=config.linear_l1, l2=config.linear_l2)
    if name == "adagrad":  # Keras Adagrad: accumulators start at 0.1, epsilon 1e-7
        return torch.optim.Adagrad(  # fused: one kernel for all tensors, ~2x faster per step
            params,
            lr=lr,
            initial_accumulator_value=0.1,
            eps=1e-7,
            weight_decay=config.weight_decay,
            fused=True,
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=config.weight_decay, foreach=True)
    return torch.optim.SGD(params, lr=lr, weight_decay=config.weight_decay, foreach=True)


def make_optimizers(model: WideDeep, num_wide_columns: int, config: TrainConfig) -> dict:
    """{"linear": FTRL over the wide part, "dnn": AdaGrad over the deep part}, as present."""
    default_linear, default_dnn = default_learning_rates(model.config.model_type, num_wide_columns)
    out = {}
    if model.has_wide:
        lr = config.linear_learning_rate or default_linear
        out["linear"] = make_optimizer(config.linear_optimizer, model.wide_parameters(), lr, config)
    if model.has_deep:
        lr = config.dnn_learning_rate or default_dnn
        out["dnn"] = make_optimizer(config.dnn_optimizer, model.deep_parameters(), lr, config)
    return out


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(model: WideDeep, data: Batch) -> torch.Tensor:
    """Logits for every row of an encoded batch, in order, in chunks, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        chunks = [
            model(data.index(slice(i, i + EVAL_CHUNK))) for i in range(0, len(data), EVAL_CHUNK)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, model.config.n_outputs)
    finally:
        model.train(was_training)


def evaluate(
    model: WideDeep,
    data: Batch | Source,
    head: str,
    batch_size: int | None,
    output_range: tuple[float, float] | None = None,
) -> dict:
    """The reference metrics over all rows of ``data`` (exact, not averaged per batch).

    In a distributed run each rank scores its share (its rows of an in-memory
    batch, its files of a stream) and the logits and labels of all ranks are
    gathered, so every rank computes the metrics over all rows.
    """
    ctx = distributed.current()
    if isinstance(data, Batch):
        data = data.index(ctx.shard(len(data)))
        logits = predict_logits(model, data.to(ctx.device))
        label, weight = data.label, data.weight
    else:
        logits, label, weight = _stream_predictions(model, data, ctx.device)
    if label is None:
        raise ValueError("evaluation data has no label column")
    if ctx.distributed:
        logits = distributed.gather_rows(logits.to(ctx.device), ctx)
        label = distributed.gather_rows(label.to(ctx.device), ctx)
        weight = None if weight is None else distributed.gather_rows(weight.to(ctx.device), ctx)
    weight = None if weight is None else weight.cpu()
    return evaluation_metrics(logits.cpu(), label.cpu(), weight, head, batch_size, output_range)


@torch.no_grad()
def _stream_predictions(model: WideDeep, source: Source, device: str):
    """Logits, labels and weights of a streamed source; only those are kept in memory."""
    was_training = model.training
    model.eval()
    logits, labels, weights = [], [], []
    try:
        for batch in source.epoch(0):
            logits.append(model(batch.to(device) if device != "cpu" else batch).cpu())
            labels.append(batch.label)
            weights.append(batch.weight)
    finally:
        model.train(was_training)
    if not logits:
        return torch.zeros(0, model.config.n_outputs), torch.zeros(0), None
    if any(lab is None for lab in labels):
        return torch.cat(logits), None, None
    weight = None if weights[0] is None else torch.cat(weights)
    return torch.cat(logits), torch.cat(labels), weight


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """Where training is: saved in every checkpoint so that a resumed run continues exactly."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    model: WideDeep
    metrics: dict[str, Any]
    state: TrainState
    checkpoint: Path | None


def train(
    spec: FeatureSpec,
    train_data: Batch | Source,
    eval_data: Batch | Source | None,
    model_config: ModelConfig,
    config: TrainConfig,
    model_dir: str | Path | None = None,
    *,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    init_model: Callable[[WideDeep], None] | None = None,
    settings: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a Wide & Deep model jointly; resume from ``model_dir`` if it holds a checkpoint.

    ``run_info`` (JSON-able, e.g. the bad-row tally) is added to every metrics.jsonl line.
    Under torchrun (:func:`widedeep.distributed.init_from_env` called first) every
    rank runs this same function: the model trains under DDP, rank 0 alone logs
    and writes checkpoints.
    """
    ctx = distributed.current()
    if not ctx.is_main:
        quiet, log = True, (lambda _: None)
    torch.manual_seed(config.seed)
    model = WideDeep(model_config)
    if init_model is not None:  # warm start, before optimizer state exists
        init_model(model)
    model.to(ctx.device)
    optimizers = make_optimizers(model, len(spec.wide_columns), config)
    head = spec.label.head if spec.label else "binary"
    output_range = spec.label.output_range if spec.label else None
    state = TrainState()
    model_dir = Path(model_dir) if model_dir is not None else None
    settings = {"train": config.to_dict(), **(settings or {})}

    checkpoint = artifact.latest_checkpoint(model_dir) if model_dir else None
    if checkpoint is not None:
        state = _restore(checkpoint, spec, model, optimizers)
        log(f"resuming from {checkpoint} (epoch {state.epoch}, step {state.global_step})")
        # a kill between a checkpoint and its log line (or mid-line) must not leave the log
        # disagreeing with the checkpoint: the checkpoint's history is the truth
        if ctx.is_main:
            lines = "".join(json.dumps({**m, **(run_info or {})}) + "\n" for m in state.history)
            artifact.atomic_write(model_dir / "metrics.jsonl", lines.encode())

    source = as_source(train_data, config.batch_size, config.seed)
    eval_source = eval_data

    def save() -> Path | None:
        if model_dir is None or not ctx.is_main:
            return None
        extra_tensors, meta = {}, {}
        for name, opt in optimizers.items():
            tensors, meta[name] = artifact.optimizer_tensors(opt, name)
            extra_tensors.update(tensors)
        extra_tensors["rng"] = torch.get_rng_state()
        return artifact.write_checkpoint(
            model_dir,
            f"ckpt-{state.global_step:010d}",
            spec=spec,
            model=model,
            settings=settings,
            metrics=state.history[-1] if state.history else None,
            extra_tensors={"optimizer.safetensors": extra_tensors},
            extra_json={"trainer.json": {**asdict(state), "optimizers": meta}},
        )

    model.train()
    trainee = distributed.wrap(model, ctx)  # DDP in a distributed run, else the model
    scale = distributed.loss_scale(ctx, config.loss_reduction)
    opts = list(optimizers.values())
    params = [p for opt in opts for group in opt.param_groups for p in group["params"]]
    metrics: dict[str, Any] = state.history[-1] if state.history else {}
    steps_per_epoch = source.batches_per_epoch()
    start_epoch = state.epoch
    try:
        with _interrupts_between_steps() as stop:
            for epoch in range(start_epoch, config.train_epochs):
                if metrics.get("accuracy", 0) >= (config.stop_threshold or 2):
                    break
                if config.max_steps is not None and state.global_step >= config.max_steps:
                    break
                t0 = time.perf_counter()
                examples = 0
                bar = tqdm(  # counts examples so the rate reads as examples/s
                    total=steps_per_epoch * config.batch_size if steps_per_epoch else None,
                    initial=state.step_in_epoch * config.batch_size,
                    desc=f"epoch {epoch + 1}/{config.train_epochs}",
                    disable=quiet or not sys.stderr.isatty(),
                    leave=False,
                    unit="ex",
                    unit_scale=True,
                )
                running = torch.zeros((), device=ctx.device)
                batches = source.epoch(epoch, skip=state.step_in_epoch)
                for batch in distributed.in_lockstep(batches, ctx, stop):
                    if ctx.device != "cpu":
                        batch = batch.to(ctx.device)
                    logits = trainee(batch)
                    loss = training_loss(
                        logits, batch.label, batch.weight, head, config.loss_reduction, output_range
                    )
                    for p in params:  # zero_grad(set_to_none) by hand: no module walk per step
                        p.grad = None
                    (loss * scale if ctx.distributed else loss).backward()
                    owned = distributed.sync_sparse_grads(model, ctx)
                    for opt in opts:
                        opt.step()
                    distributed.share_updated_rows(owned, opts, ctx)
                    state.step_in_epoch += 1
                    state.global_step += 1
                    if stop.requested and not ctx.distributed:  # (DDP: in_lockstep's)
                        raise KeyboardInterrupt
                    examples += len(batch)
                    if not bar.disable:  # the running loss only feeds the progress bar
                        running += loss.detach()
                    if state.step_in_epoch % 200 == 0 and not bar.disable:
                        bar.set_postfix(loss=f"{running.item() / 200:.4g}", refresh=False)
                        running.zero_()
                        bar.update(200 * config.batch_size)
                    if state.global_step == config.max_steps:
                        break
                bar.close()
                dt = time.perf_counter() - t0
                state.elapsed_s += dt
                reached = state.global_step == config.max_steps
                if not reached:
                    state.epoch += 1
                    state.step_in_epoch = 0
                done = state.epoch == config.train_epochs or reached
                if eval_source is not None and (
                    state.epoch % config.epochs_between_evals == 0 or done
                ):
                    t1 = time.perf_counter()
                    metrics = evaluate(model, eval_source, head, config.batch_size, output_range)
                    metrics = {
                        **metrics,
                        "global_step": state.global_step,
                        "epoch": state.epoch,
                        "elapsed_s": round(state.elapsed_s, 3),
                        "eval_s": round(time.perf_counter() - t1, 3),
                        "train_examples_per_s": round(examples / dt) if dt > 0 else None,
                    }
                    state.history.append(metrics)
                    log(_format_eval(metrics))
                    if model_dir is not None:
                        save()
                        if ctx.is_main:
                            with open(model_dir / "metrics.jsonl", "a") as f:
                                f.write(json.dumps({**metrics, **(run_info or {})}) + "\n")
                        distributed.barrier(ctx)  # rank 0's checkpoint exists for everyone
                elif model_dir is not None and (
                    state.epoch % config.epochs_between_evals == 0 or done
                ):  # no evaluation data: still checkpoint as often, or a kill -9 loses it all
                    save()
                    distributed.barrier(ctx)
                if reached:
                    break
    except KeyboardInterrupt:
        path = save()
        where = f" to {path}" if path else ""
        raise TrainingInterrupted(
            f"interrupted at epoch {state.epoch + 1}, step {state.global_step}; "
            + (
                f"checkpoint written{where}; to resume, run the same command again"
                if model_dir
                else "no model_dir was given, so nothing was saved"
            )
        ) from None
    model.eval()
    return TrainResult(
        model, metrics, state, artifact.latest_checkpoint(model_dir) if model_dir else None
    )


def _restore(checkpoint: Path, spec: FeatureSpec, model: WideDeep, optimizers: dict) -> TrainState:
    saved_spec, saved_model, _, _ = artifact.read_model_dir(checkpoint)
    if saved_spec.to_dict() != spec.to_dict() or saved_model.config != model.config:
        raise ValueError(
            f"{checkpoint.parent} holds a checkpoint of a different model (other columns, data "
            "or shapes); pass --clean to start over or choose another --model_dir"
        )
    model.load_state_dict(saved_model.state_dict())
    trainer = artifact._read_json(checkpoint / "trainer.json")
    tensors = artifact.read_tensors(checkpoint / "optimizer.safetensors")
    try:
        for name, opt in optimizers.items():
            artifact.load_optimizer(opt, name, tensors, trainer["optimizers"][name])
        torch.set_rng_state(tensors["rng"])
        trainer.pop("optimizers")
        return TrainState(**trainer)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise artifact.ModelFileError(
            f"{checkpoint}: trainer.json or optimizer.safetensors does not hold this run's "
            f"training state ({type(e).__name__}: {e}); delete that checkpoint directory to "
            "resume from the one before, or pass --clean to start over"
        ) from None


class _Stop:
    """Set by the first Ctrl-C or SIGTERM of a training run."""

    requested = False


@contextmanager
def _interrupts_between_steps():
    """Ctrl-C and SIGTERM (e.g. a scheduler stopping the job) stop training between two
    steps: a checkpoint taken mid-step would hold an optimizer step half applied, and
    resuming would apply it again.  A second one interrupts at once."""
    stop = _Stop()

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield stop
        return
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


REPORT_KEYS = (
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
    "rmse",
    "mae",
)


def _format_eval(m: dict[str, Any]) -> str:
    shown = ", ".join(f"{k} = {m[k]:.4f}" for k in REPORT_KEYS if k in m)
    speed = m.get("train_examples_per_s")
    return f"epoch {m['epoch']:>3}  global_step = {m['global_step']}  {shown}" + (
        f"  ({speed:,} train examples/s, eval {m['eval_s']:.2f}s)" if speed else ""
    )
