"""The ``widedeep`` command line: thin flag parsing over the library.

``widedeep train`` with no flags reproduces TensorFlow's census reference run.
The old example's underscore flags (``--train_epochs``) are accepted beside
the dashed ones (``--train-epochs``).  A user error prints one line and exits
with status 2; an interrupted run exits with 130 after checkpointing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``--name_with_underscores`` and its ``--dashed-name`` spelling."""
    dashed = "--" + name.replace("_", "-")
    names = [f"--{name}"] if dashed == f"--{name}" else [dashed, f"--{name}"]
    parser.add_argument(*names, dest=name, **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _hidden_units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.replace(" ", "").split(",") if u]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 100,75,50,25, got {text!r}"
        ) from None
    if any(u < 1 for u in units):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return units


def add_train_flags(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    _flag(data, "dataset", default="census", choices=["census", "movielens"], help="data set")
    _flag(
        data, "data_dir", help="read the data set from this directory instead of the bundled copy"
    )
    _flag(data, "download", action="store_true", help="download the data set into --data_dir first")
    _flag(data, "spec", help="feature spec file (YAML/JSON) for your own data")
    _flag(data, "train", help="training data file (CSV, Parquet or JSON lines)")
    _flag(data, "eval", help="evaluation data file")

    model = p.add_argument_group("model")
    _flag(model, "model_type", default="wide_deep", choices=["wide", "deep", "wide_deep"])
    _flag(
        model,
        "hidden_units",
        type=_hidden_units,
        default=[100, 75, 50, 25],
        help="deep layer widths (default 100,75,50,25)",
    )
    _flag(model, "dropout", type=float, default=None)
    _flag(model, "batch_norm", action="store_true")
    _flag(
        model,
        "sparse_wide",
        action="store_true",
        help="sparse gradients for the wide table (huge hash spaces)",
    )

    loop = p.add_argument_group("run loop")
    _flag(loop, "train_epochs", type=_positive_int, default=40)
    _flag(loop, "epochs_between_evals", type=_positive_int, default=2)
    _flag(loop, "batch_size", type=_positive_int, default=40)
    _flag(loop, "stop_threshold", type=float, default=None)
    _flag(loop, "seed", type=int, default=0)
    _flag(loop, "model_dir", help="checkpoints; resumed if present (default <dataset>_model)")
    _flag(loop, "export_dir", help="write a serving export under this directory")
    _flag(loop, "clean", action="store_true", help="delete model_dir first and start over")
    _flag(
        loop,
        "threads",
        type=_positive_int,
        default=None,
        help="torch threads (default: 1 below batch 1024, else all cores)",
    )
    _flag(loop, "quiet", action="store_true", help="no progress bar or per-evaluation lines")

    opt = p.add_argument_group("optimizers")
    _flag(
        opt,
        "linear_optimizer",
        default="ftrl",
        choices=["ftrl", "adagrad", "adam", "adamw", "sgd", "rmsprop"],
    )
    _flag(opt, "linear_learning_rate", type=float, default=None)
    _flag(opt, "linear_l1", type=float, default=0.0)
    _flag(opt, "linear_l2", type=float, default=0.0)
    _flag(
        opt,
        "dnn_optimizer",
        default="adagrad",
        choices=["ftrl", "adagrad", "adam", "adamw", "sgd", "rmsprop"],
    )
    _flag(opt, "dnn_learning_rate", type=float, default=None)
    _flag(opt, "weight_decay", type=float, default=0.0)
    _flag(opt, "loss_reduction", default="sum", choices=["sum", "mean"])
    add_movielens_flags(p)


def cmd_train(args: argparse.Namespace) -> int:
    from .model import ModelConfig
    from .train import TrainConfig, train

    # small batches gain nothing from intra-op threads, and on a busy machine spinning
    # OpenMP workers slow them down many times over: one thread unless asked otherwise
    torch.set_num_threads(
        args.threads or (1 if args.batch_size < 1024 else torch.get_num_threads())
    )
    if args.dataset == "movielens":
        return cmd_train_movielens(args)
    spec, train_table, eval_table, source = _load_data(args)
    model_dir = Path(args.model_dir or "census_model")
    if args.clean and model_dir.exists():
        _clean(model_dir)
    config = TrainConfig(
        train_epochs=args.train_epochs,
        epochs_between_evals=args.epochs_between_evals,
        batch_size=args.batch_size,
        seed=args.seed,
        stop_threshold=args.stop_threshold,
        linear_optimizer=args.linear_optimizer,
        linear_learning_rate=args.linear_learning_rate,
        linear_l1=args.linear_l1,
        linear_l2=args.linear_l2,
        dnn_optimizer=args.dnn_optimizer,
        dnn_learning_rate=args.dnn_learning_rate,
        weight_decay=args.weight_decay,
        loss_reduction=args.loss_reduction,
    )
    t0 = time.perf_counter()
    spec.fit(train_table)
    train_batch = spec.transform(train_table, label=True)
    eval_batch = spec.transform(eval_table, label=True) if eval_table is not None else None
    model_config = ModelConfig.from_spec(
        spec,
        model_type=args.model_type,
        hidden_units=args.hidden_units,
        dropout=args.dropout,
        batch_norm=args.batch_norm,
        sparse_wide=args.sparse_wide,
    )
    say = (lambda _: None) if args.quiet else (lambda m: print(m, flush=True))
    say(
        f"widedeep {__version__}: {model_config.model_type} on {source}: "
        f"{len(train_batch):,} train / {len(eval_batch) if eval_batch else 0:,} eval rows, "
        f"encoded in {time.perf_counter() - t0:.2f}s; model_dir {model_dir}"
    )
    result = train(
        spec,
        train_batch,
        eval_batch,
        model_config,
        config,
        model_dir,
        quiet=args.quiet,
        log=say,
        settings={"source": source},
    )
    elapsed = time.perf_counter() - t0
    if args.export_dir:
        path = export(result.checkpoint, args.export_dir)
        say(f"exported to {path}")
    _print_table(result.metrics)
    print(f"done in {elapsed:.1f}s; model in {result.checkpoint or model_dir}")
    return 0


# --------------------------------------------------------------------------- movielens


def add_movielens_flags(p: argparse.ArgumentParser) -> None:
    rec = p.add_argument_group("movielens (--dataset movielens --data_dir DIR)")
    _flag(rec, "task", default="ranking", choices=["rating", "ranking"])
    _flag(rec, "negatives", type=int, default=4, help="sampled unrated movies per positive")
    _flag(rec, "history_length", type=_positive_int, default=50, help="liked movies kept")
    _flag(rec, "eval_split", default="test", choices=["test", "valid"], help="evaluate on")


def cmd_train_movielens(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .datasets import movielens as ml
    from .movielens_train import MovieLensSettings, train_movielens
    from .train import TrainConfig

    if args.spec or args.train:
        raise UsageError("--dataset movielens reads --data_dir; --spec/--train are for own data")
    if not args.data_dir:
        raise UsageError("--dataset movielens needs --data_dir DIR (a local copy, or --download)")
    model_dir = Path(args.model_dir or "movielens_model")
    folder = ml.download_movielens(args.data_dir) if args.download else args.data_dir
    if args.clean and model_dir.exists():
        _clean(model_dir)
    settings = MovieLensSettings(
        task=args.task,
        model_type=args.model_type,
        hidden_units=args.hidden_units,
        dropout=args.dropout,
        negatives=args.negatives,
        history_length=args.history_length,
        split=args.eval_split,
    )
    names = [f.name for f in fields(TrainConfig) if hasattr(args, f.name)]  # same flag names
    config = TrainConfig(**{name: getattr(args, name) for name in names})
    say = (lambda _: None) if args.quiet else (lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    data = ml.load_movielens(folder)
    say(f"widedeep {__version__}: {args.model_type} {args.task} on {data.name}; {model_dir}")
    out = train_movielens(data, settings, config, model_dir, quiet=args.quiet, log=say)
    if args.export_dir:
        say(f"exported to {export(out.result.checkpoint, args.export_dir)}")
    _print_table(out.metrics)
    print(f"done in {time.perf_counter() - t0:.1f}s; model in {model_dir}")
    return 0


def add_recommend_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "model", required=True, help="model_dir of `widedeep train --dataset movielens`")
    _flag(p, "user", type=int, required=True, help="user id")
    p.add_argument("-k", "--k", dest="k", type=_positive_int, default=10, help="how many")
    _flag(p, "candidates", help="file of candidate movie ids (one a line) instead of all movies")
    _flag(p, "exclude_seen", action=argparse.BooleanOptionalAction, default=True,
          help="leave out movies the user rated in training (default on)")  # fmt: skip
    _flag(p, "data_dir", help="read the MovieLens files from here instead of the model's copy")
    _flag(p, "json", action="store_true", help="one JSON object per line")
    _flag(p, "threads", type=_positive_int, default=None, help="torch threads (default 1)")


def cmd_recommend(args: argparse.Namespace) -> int:
    import numpy as np

    from .recommend import load_recommender

    torch.set_num_threads(args.threads or 1)  # one user's candidates: threads only cost
    candidates = None
    if args.candidates:
        try:
            text = Path(args.candidates).read_text().split()
            candidates = np.array([int(t) for t in text], dtype=np.int64)
        except (OSError, ValueError) as e:
            message = f"--candidates {args.candidates}: need movie ids, one a line ({e})"
            raise UsageError(message) from None
    recommender = load_recommender(args.model, args.data_dir)
    table = recommender.recommend(args.user, args.k, candidates, args.exclude_seen)
    if args.json:
        for row in table.to_pylist():
            print(json.dumps(row))
        return 0
    print(f"top {table.num_rows} for user {args.user}")
    for r in table.to_pylist():
        genres = "|".join(r["genres"] or [])
        print(f"{r['rank']:>3}  {r['score']:.4f}  {r['movie_id']:>6}  {r['title']}  ({genres})")
    return 0


def export(model_path: Path | str, export_dir: Path | str) -> Path:
    """Copy a trained model (without optimizer state) to ``export_dir/<timestamp>/``."""
    from . import artifact

    spec, model, config, resolved = artifact.read_model_dir(model_path)
    metrics_file = Path(resolved) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    base = Path(export_dir)
    base.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    while (base / str(stamp)).exists():
        stamp += 1
    target = base / str(stamp)
    artifact.write_model_dir(target, spec, model, config.get("settings"), metrics)
    return target


def _load_data(args: argparse.Namespace):
    """(unfitted spec, train table, eval table, description) for the chosen data."""
    if args.spec or args.train:
        if not (args.spec and args.train):
            raise UsageError("--spec and --train go together (--eval is optional)")
        from .io import read_table
        from .spec_file import load_spec_file

        spec = load_spec_file(args.spec)
        train_table = read_table(args.train)
        eval_table = read_table(args.eval) if args.eval else None
        return spec, train_table, eval_table, args.train
    from .datasets import census

    if args.download:
        if not args.data_dir:
            raise UsageError("--download needs --data_dir DIR to download into")
        census.download_census(args.data_dir)
    train_table, eval_table = census.load_census(args.data_dir)
    return census.census_spec(), train_table, eval_table, "census (UCI Adult)"


def _clean(model_dir: Path) -> None:
    import shutil

    from . import artifact

    if not (model_dir / artifact.POINTER).exists() and any(model_dir.iterdir()):
        raise UsageError(
            f"--clean: {model_dir} is not empty and holds no widedeep checkpoint; refusing to "
            "delete it (choose another --model_dir)"
        )
    shutil.rmtree(model_dir)


def _print_table(metrics: dict[str, Any]) -> None:
    if not metrics:
        return
    keys = [k for k in sorted(metrics) if isinstance(metrics[k], (int, float))]
    width = max(len(k) for k in keys)
    print("\nfinal evaluation")
    for k in keys:
        v = metrics[k]
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="widedeep", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"widedeep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model (default: the census reference run)")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("recommend", help="top-K movies for a user from a MovieLens model")
    add_recommend_flags(p)
    p.set_defaults(func=cmd_recommend)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .artifact import ModelFileError
    from .feature_column import FeatureColumnError
    from .train import TrainingInterrupted
    from .transform import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as e:
        print(f"widedeep: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("widedeep: interrupted", file=sys.stderr)
        return 130
    except (
        UsageError,
        DataError,
        FeatureColumnError,
        ModelFileError,
        FileNotFoundError,
        ValueError,
    ) as e:
        print(f"widedeep {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
