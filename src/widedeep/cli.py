"""The ``widedeep`` command line: thin flag parsing over the library.

``widedeep train`` with no flags reproduces TensorFlow's census reference run.
The old example's underscore flags (``--train_epochs``) are accepted beside
the dashed ones (``--train-epochs``).  A user error prints one line and exits
with status 2; an interrupted run exits with 130 after checkpointing.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__

PREDICT_SLICE = 1 << 16


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``--name_with_underscores`` and its ``--dashed-name`` spelling."""
    dashed = "--" + name.replace("_", "-")
    names = [f"--{name}"] if dashed == f"--{name}" else [dashed, f"--{name}"]
    parser.add_argument(*names, dest=name, **kwargs)


def _number_in(kind: type, low: float, high: float, what: str) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` number in [low, high], else one line naming it."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number_in(int, 1, math.inf, "a positive integer")
_count = _number_in(int, 0, math.inf, "a count (0 or more)")
_weight = _number_in(float, 0, 1, "a weight in [0, 1]")
_nonnegative = _number_in(float, 0, math.inf, "a number >= 0")


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
    _flag(
        p,
        "preset",
        default="reference",
        help="training recipe: reference (TensorFlow's census run, the default), best, or a "
        "preset file (.yaml); other flags override its settings",
    )
    data = p.add_argument_group("data")
    _flag(data, "dataset", default="census", choices=["census", "movielens"], help="data set")
    _flag(
        data, "data_dir", help="read the data set from this directory instead of the bundled copy"
    )
    _flag(data, "download", action="store_true", help="download the data set into --data_dir first")
    _flag(data, "spec", help="feature spec file (YAML/JSON) for your own data")
    _flag(
        data,
        "train",
        help="training data: a file (CSV, Parquet or JSON lines), a directory or a glob of shards",
    )
    _flag(data, "eval", help="evaluation data (file, directory or glob)")
    _flag(data, "encoding", default="utf-8", help="text encoding of CSV files (e.g. latin-1)")
    _flag(
        data,
        "skip_bad_rows",
        action="store_true",
        help="skip rows that cannot be used (and count them) instead of stopping at the first",
    )
    _flag(
        data,
        "max_bad_rows",
        type=_count,
        default=None,
        help="skip up to N bad rows, stop past that (implies --skip_bad_rows)",
    )
    _flag(
        data,
        "stream",
        default="auto",
        choices=["auto", "on", "off"],
        help="stream --train/--eval from disk (auto: when the files exceed 1 GiB)",
    )
    _flag(data, "shuffle_buffer", type=_positive_int, default=100_000, help="rows (streaming)")
    _flag(data, "loader_workers", type=int, default=0, help="encoding processes (0: a thread)")

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
    _flag(
        loop,
        "warm_start_from",
        help="initialise from a previous model (model_dir or export): weights copied by value",
    )
    _flag(loop, "clean", action="store_true", help="delete model_dir first and start over")
    _flag(
        loop,
        "threads",
        type=_positive_int,
        default=None,
        help="torch threads (default: 1 below batch 1024, else all cores)",
    )
    _flag(loop, "device", default="cpu", help="cpu, cuda, cuda:N or auto")
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
    from . import distributed
    from .model import ModelConfig
    from .train import TrainConfig, train

    # small batches gain nothing from intra-op threads, and on a busy machine spinning
    # OpenMP workers slow them down many times over: one thread unless asked otherwise
    torch.set_num_threads(
        args.threads or (1 if args.batch_size < 1024 else torch.get_num_threads())
    )
    if args.dataset == "movielens":
        return cmd_train_movielens(args)
    ctx = distributed.init_from_env(args.device)  # torchrun: join the process group
    if not ctx.is_main:
        args.quiet = True
    from .badrows import BadRows

    bad_rows = BadRows("skip" if args.skip_bad_rows else "error", args.max_bad_rows)
    spec, train_table, eval_table, source = _load_data(args, bad_rows)
    model_dir = Path(args.model_dir or "census_model")
    if args.clean and model_dir.exists() and ctx.is_main:
        _clean(model_dir)
    distributed.barrier(ctx)
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
    if isinstance(train_table, str):  # files: in memory or streamed (widedeep.stream)
        from .stream import prepare

        stream = {"auto": None, "on": True, "off": False}[args.stream]
        train_batch, eval_batch = prepare(
            spec, train_table, eval_table, batch_size=args.batch_size, seed=args.seed,
            stream=stream, shuffle_buffer=args.shuffle_buffer, workers=args.loader_workers,
            log=(lambda _: None) if args.quiet else print, bad_rows=bad_rows,
            encoding=args.encoding,
        )  # fmt: skip
    else:
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
    init_model = None
    if args.warm_start_from:
        from .warm_start import warm_start_from

        init_model = warm_start_from(args.warm_start_from, spec, log=say)
    if bad_rows.ignored_columns:
        say(f"ignoring column(s) the spec does not read: {', '.join(bad_rows.ignored_columns)}")
    if bad_rows.total:
        say(f"{bad_rows.summary()} (the first of each: {bad_rows.examples})")
    say(
        f"widedeep {__version__}: {model_config.model_type} on {source}: "
        f"{_rows(train_batch)} train / {_rows(eval_batch)} eval rows, "
        f"{'streamed' if hasattr(train_batch, 'epoch') else 'encoded'} "
        f"in {time.perf_counter() - t0:.2f}s; model_dir {model_dir}"
        + (f"; {ctx.world} processes" if ctx.distributed else "")
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
        init_model=init_model,
        settings={**_data_settings(args, source), "preset": args.preset},
        run_info={"bad_rows": bad_rows.to_dict()} if bad_rows.skip else None,
    )
    elapsed = time.perf_counter() - t0
    if not ctx.is_main:  # rank 0 alone exports and reports
        return 0
    if args.export_dir:
        path = export(result.checkpoint, args.export_dir)
        say(f"exported to {path}")
    _print_table(result.metrics)
    if bad_rows.skip:
        print(bad_rows.summary())
    print(f"done in {elapsed:.1f}s; model in {result.checkpoint or model_dir}")
    return 0


# --------------------------------------------------------------------------- movielens


def add_movielens_flags(p: argparse.ArgumentParser) -> None:
    rec = p.add_argument_group("movielens (--dataset movielens --data_dir DIR)")
    _flag(rec, "task", default="ranking", choices=["rating", "ranking"])
    _flag(rec, "negatives", type=int, default=4, help="sampled unrated movies per positive")
    _flag(rec, "low_negatives", type=_weight, nargs="?", const=1.0, default=0.1,
          help="ranking: example weight of low ratings as negatives (default 0.1; 0: only "
          "sampled unrated movies; the bare flag: 1)")
    _flag(rec, "recency", type=_nonnegative, default=2.0,
          help="rating: a user's later ratings weigh up to e^RECENCY times the first (0: off)")
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
        low_negatives=args.low_negatives,
        recency=args.recency,
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
    import json

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
        if len(candidates) == 0:
            message = f"--candidates {args.candidates} holds no movie ids; list them one a line"
            raise UsageError(message)
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


def _rows(data: Any) -> str:
    if data is None:
        return "0"
    n = getattr(data, "num_rows", None) if hasattr(data, "epoch") else len(data)
    return "?" if n is None else f"{n:,}"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "model", required=True, help="export base directory (newest export), or one export")
    _flag(p, "model_name", default="default", help="name in /v1/models/<name> (default: default)")
    _flag(p, "host", default="127.0.0.1", help="address to bind (default: loopback only)")
    _flag(p, "port", type=_port, default=8501, help="port (default 8501, as TensorFlow Serving)")
    _flag(p, "workers", type=_positive_int, default=None, help="processes (default: one per core)")
    _flag(p, "max_body_bytes", type=_positive_int, default=8 << 20, help="larger bodies get 413")
    _flag(p, "max_instances", type=_positive_int, default=10_000, help="per :predict request")
    _flag(p, "max_candidates", type=_positive_int, default=10_000, help="per :rank request")
    _flag(p, "rank_chunk", type=_positive_int, default=2048, help="candidates per ranking thread")
    _flag(p, "rank_threads", type=_positive_int, default=2, help="ranking threads per worker")
    _flag(
        p,
        "poll_seconds",
        type=float,
        default=2.0,
        help="look for a newer export this often (0: never)",
    )
    _flag(p, "http", default="httptools", choices=["httptools", "h11"], help="HTTP parser")
    _flag(p, "loop", default="uvloop", choices=["uvloop", "asyncio"], help="event loop")


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, serve

    config = ServeConfig(
        model=args.model,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        workers=args.workers or 0,
        max_body_bytes=args.max_body_bytes,
        max_instances=args.max_instances,
        max_candidates=args.max_candidates,
        rank_chunk=args.rank_chunk,
        rank_threads=args.rank_threads,
        poll_seconds=args.poll_seconds,
        http=args.http,
        loop=args.loop,
    )
    try:
        return serve(config, log=lambda m: print(m, flush=True))
    except (RuntimeError, OSError) as e:
        raise UsageError(str(e)) from None


def export(model_path: Path | str, export_dir: Path | str) -> Path:
    """Copy a trained model (without optimizer state) to ``export_dir/<timestamp>/``."""
    from .release import export as export_model

    return export_model(model_path, export_dir)[0]


def _data_settings(args: argparse.Namespace, source: str) -> dict[str, Any]:
    """Where the data came from, saved with the model: `export` and `evaluate` reuse its eval
    data by default."""
    if args.spec or args.train:
        return {"source": source, "eval": str(Path(args.eval).resolve()) if args.eval else None}
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    return {"source": source, "dataset": args.dataset, "data_dir": data_dir}


def _load_data(args: argparse.Namespace, bad_rows):
    """(unfitted spec, train table, eval table, description) for the chosen data.

    Rows that cannot be encoded stop the run or are skipped, as ``bad_rows`` says.
    """
    from .presets import load_preset

    preset = load_preset(args.preset)
    if args.spec or args.train:
        if not (args.spec and args.train):
            raise UsageError("--spec and --train go together (--eval is optional)")
        from .spec_file import load_spec_file

        spec = load_spec_file(args.spec)
        return spec, args.train, args.eval, args.train  # read by widedeep.stream.prepare
    from .datasets import census

    if args.download:
        if not args.data_dir:
            raise UsageError("--download needs --data_dir DIR to download into")
        census.download_census(args.data_dir)
    train_table, eval_table = census.load_census(args.data_dir, bad_rows=bad_rows)
    if preset.dataset not in (None, "census"):
        raise UsageError(
            f"preset {preset.name!r} is made for the {preset.dataset!r} data set, not census"
        )
    return preset.feature_spec(), train_table, eval_table, "census (UCI Adult)"


def _clean(model_dir: Path) -> None:
    import shutil

    from . import artifact

    if not (model_dir / artifact.POINTER).exists() and any(model_dir.iterdir()):
        raise UsageError(
            f"--clean: {model_dir} is not empty and holds no widedeep checkpoint; refusing to "
            "delete it (choose another --model_dir)"
        )
    shutil.rmtree(model_dir)


def _print_table(metrics: dict[str, Any], title: str = "final evaluation") -> None:
    if not metrics:
        return
    keys = [k for k in sorted(metrics) if isinstance(metrics[k], (int, float))]
    width = max(len(k) for k in keys)
    print(f"\n{title}")
    for k in keys:
        v = metrics[k]
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def cmd_synth(args: argparse.Namespace) -> int:
    import json

    from .datasets import synth

    summary = synth.write(
        args.out,
        args.rows,
        eval_rows=args.eval_rows,
        rows_per_shard=args.rows_per_shard,
        seed=args.seed,
        cross_buckets=args.cross_buckets,
    )
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- using a saved model


def cmd_predict(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from .io import read_table, write_table
    from .predict import load

    predictor = load(args.model)
    # rows the model cannot score stop with file:line (skipping would misalign the output)
    table = read_table(args.input, spec=predictor.spec, label=False)
    if args.id_column and args.id_column not in table.column_names:
        raise UsageError(
            f"--id_column {args.id_column!r} is not a column of {args.input}; it has "
            f"{table.column_names}"
        )
    # slice by slice: the encoded rows of a big file never sit in memory all at once
    slices = [table.slice(i, PREDICT_SLICE) for i in range(0, table.num_rows, PREDICT_SLICE)]
    scores = np.concatenate([predictor.predict_proba(t) for t in slices or [table]])
    columns = {args.id_column: table.column(args.id_column)} if args.id_column else {}
    classes = predictor.classes_
    if predictor.head == "binary":
        columns["probability"] = scores
    elif predictor.head == "multiclass":
        columns.update({f"probability_{c}": scores[:, j] for j, c in enumerate(classes)})
    else:
        columns["prediction"] = scores
    if predictor.head != "regression":
        ids = scores > 0.5 if predictor.head == "binary" else scores.argmax(1)
        columns["class"] = np.asarray(classes, dtype=object)[ids.astype(int)] if classes else ids
    out = pa.table(columns)
    if args.output:
        write_table(out, args.output)
        print(f"{out.num_rows:,} predictions written to {args.output}", file=sys.stderr)
    else:
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(out, sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .io import read_table
    from .predict import load
    from .release import default_eval_data

    predictor = load(args.model)
    data = read_table(args.data, spec=predictor.spec) if args.data else default_eval_data(predictor)
    _print_table(predictor.evaluate(data), f"evaluation of {predictor.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .io import read_table
    from .release import export as export_model

    eval_data = read_table(args.eval) if args.eval else None
    path, gate = export_model(
        args.model_dir,
        args.export_dir,
        compare_to=args.compare_to,
        eval_data=eval_data,
        max_drop=args.max_auc_drop,
        gate=args.compare_to is not None or args.eval is not None,
    )
    if gate is not None:
        against = "" if gate.previous is None else f" (previous model: {gate.previous:.4f})"
        print(f"release check passed: {gate.metric} {gate.new:.4f}{against}")
    print(f"exported to {path}")
    return 0


def build_parser(train_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The parser; ``train_defaults`` (a preset's settings) replace the train flags' defaults."""
    parser = argparse.ArgumentParser(prog="widedeep", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"widedeep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model (default: the census reference run)")
    add_train_flags(p)
    p.set_defaults(func=cmd_train, **(train_defaults or {}))
    ds = sub.add_parser("datasets", help="write data sets (synth: synthetic CTR data for scale)")
    datasets = ds.add_subparsers(dest="dataset_command", required=True)
    s = datasets.add_parser("synth", help="synthetic click-through Parquet shards + spec")
    _flag(s, "rows", type=_positive_int, required=True, help="training rows")
    _flag(s, "eval_rows", type=_positive_int, default=None, help="default rows/10")
    _flag(s, "out", required=True, help="output directory (train/, eval/, spec.yaml)")
    _flag(s, "rows_per_shard", type=_positive_int, default=1_000_000)
    _flag(s, "cross_buckets", type=_positive_int, default=1_000_000, help="hash size per cross")
    _flag(s, "seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("predict", help="score the rows of a file with a saved model")
    _flag(p, "model", required=True, help="model_dir, export directory or export base")
    _flag(p, "input", required=True, help="rows to score (CSV, Parquet or JSON lines)")
    _flag(p, "output", help="write here (.csv, .parquet or .jsonl); default: CSV on stdout")
    _flag(p, "id_column", help="copy this input column into the output")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="the reference metrics of a saved model on labelled rows")
    _flag(p, "model", required=True)
    _flag(p, "data", help="labelled rows (default: the eval data the model was trained with)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="copy a trained model to export_dir/<timestamp>/")
    _flag(p, "model_dir", required=True, help="training model_dir or model directory")
    _flag(p, "export_dir", required=True)
    _flag(p, "compare_to", help="previous export: refuse if the new model is worse than it")
    _flag(
        p,
        "max_auc_drop",
        type=float,
        default=0.005,
        help="largest allowed drop of AUC (accuracy for multi-class, rise of RMSE for "
        "regression) against --compare_to (default 0.005)",
    )
    _flag(p, "eval", help="evaluation rows for the check (default: the model's own eval data)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve exports over HTTP (TensorFlow Serving's REST API)")
    add_serve_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("recommend", help="top-K movies for a user from a MovieLens model")
    add_recommend_flags(p)
    p.set_defaults(func=cmd_recommend)
    return parser


def _preset_defaults(argv: list[str] | None) -> dict[str, Any]:
    """The settings of the preset named by ``--preset`` (if any), or of the MovieLens task's
    recipe with ``--dataset movielens``, as flag defaults, so that flags given explicitly
    still override them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--dataset")
    pre.add_argument("--task", default="ranking")
    known, _ = pre.parse_known_args(argv)
    if not known.preset:
        if known.dataset == "movielens":
            from .movielens_train import TASK_DEFAULTS

            return dict(TASK_DEFAULTS.get(known.task, {}))  # a bad --task: the parser says so
        return {}
    from .presets import load_preset

    preset = load_preset(known.preset)
    return {**preset.model, **preset.train}


def main(argv: list[str] | None = None) -> int:
    from .artifact import ModelFileError
    from .feature_column import FeatureColumnError
    from .presets import PresetError
    from .release import ReleaseRefused
    from .train import TrainingInterrupted
    from .transform import DataError

    try:
        parser = build_parser(_preset_defaults(argv))
    except PresetError as e:
        print(f"widedeep: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as e:
        again = shlex.join(["widedeep", *(sys.argv[1:] if argv is None else argv)])
        print(f"widedeep: {e}: {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("widedeep: interrupted", file=sys.stderr)
        return 130
    except ReleaseRefused as e:
        print(f"widedeep {args.command}: refused: {e}", file=sys.stderr)
        return 1
    except (
        UsageError,
        PresetError,
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
