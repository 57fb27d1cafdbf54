"""MovieLens report: rating RMSE/MAE and top-K ranking for popularity, wide, deep, wide & deep.

Reads a local MovieLens copy (never shipped: GroupLens licence), splits it per user by
time (last 10 % of each user's ratings are test), and trains each model for several
seeds.  ``--split valid`` cuts a validation slice the same way from the training part and
reports on it (for choosing settings); ``--split test`` is the final report.

    python benchmarks/bench_movielens.py --data_dir ../shared/datasets/ml-100k \
        --task ranking --seeds 0 1 2 --out ranking.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import torch

from widedeep.datasets import movielens as ml
from widedeep.movielens_train import MovieLensSettings, train_movielens
from widedeep.recommend import popularity_scorer, ranking_metrics
from widedeep.train import TrainConfig

# name -> (model_type, movielens_columns(...) flags)
VARIANTS = {
    "wide": ("wide", {}),
    "deep": ("deep", {}),
    "wide_deep": ("wide_deep", {}),
    "wide_deep-no_history": ("wide_deep", {"history": False}),
    "wide_deep-demographic_crosses_only": ("wide_deep", {"history": False, "id_wide": False}),
    "wide_deep-history_only": ("wide_deep", {"demographic_crosses": False, "id_wide": False}),
    "deep+liked_embedding": ("deep", {"history_embedding": True}),
    "wide_deep+liked_embedding": ("wide_deep", {"history_embedding": True}),
    "wide_deep-no_history+liked_embedding": (
        "wide_deep", {"history": False, "history_embedding": True}),
}


def splits(data: ml.MovieLens, split: str) -> tuple[pa.Table, pa.Table]:
    train_part, test = ml.temporal_split(data.ratings)
    if split == "valid":  # cut the same way from the training part; test is never read
        return ml.temporal_split(train_part)
    return train_part, test


def run(data: ml.MovieLens, variant: str, seed: int, args: argparse.Namespace) -> dict:
    model_type, flags = VARIANTS[variant]
    settings = MovieLensSettings(
        task=args.task,
        model_type=model_type,
        hidden_units=args.hidden,
        negatives=args.negatives,
        history_length=args.history,
        split=args.split,
        columns=flags,
    )
    config = TrainConfig(
        train_epochs=args.epochs,
        epochs_between_evals=1 if args.verbose else args.epochs,
        batch_size=args.batch_size,
        seed=seed,
        linear_optimizer=args.linear_optimizer,
        linear_learning_rate=args.linear_lr,
        linear_l1=args.linear_l1,
        linear_l2=args.linear_l2,
        dnn_optimizer=args.dnn_optimizer,
        dnn_learning_rate=args.dnn_lr,
        loss_reduction=args.loss_reduction,
    )
    t0 = time.perf_counter()
    out = train_movielens(data, settings, config, quiet=True, log=lambda _: None)
    key = "rmse" if args.task == "rating" else "auc"
    if args.verbose:
        print(f"  {key} by epoch", [round(m[key], 4) for m in out.result.state.history])
    metrics = out.metrics
    if args.task == "rating":
        metrics = {"rmse": metrics["rmse"], "mae": metrics["mae"]}
    return {**metrics, "seconds": time.perf_counter() - t0}


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, runs in results.items():
        row = {"model": name, "seeds": len(runs)}
        for key in runs[0]:
            values = np.array([r[key] for r in runs], dtype=np.float64)
            row[key] = (float(values.mean()), float(values.std()))
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("model", "seeds")]
    print(f"{'model':<36} " + " ".join(f"{k:>20}" for k in keys))
    for row in rows:
        cells = [f"{row[k][0]:.4f} ± {row[k][1]:.4f}" for k in keys]
        print(f"{row['model']:<36} " + " ".join(f"{c:>20}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", choices=["rating", "ranking"], default="ranking")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--models", nargs="+", default=["popularity", "wide", "deep", "wide_deep"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--hidden", type=lambda s: [int(x) for x in s.split(",")], default=[64, 32])
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--history", type=int, default=ml.HISTORY_LENGTH)
    p.add_argument("--linear_lr", type=float, default=0.05)
    p.add_argument("--linear_optimizer", default="ftrl")
    p.add_argument("--linear_l1", type=float, default=0.0)
    p.add_argument("--linear_l2", type=float, default=0.0)
    p.add_argument("--dnn_optimizer", default="adagrad")
    p.add_argument("--dnn_lr", type=float, default=0.01)
    p.add_argument("--loss_reduction", choices=["sum", "mean"], default="sum")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true", help="evaluate after every epoch")
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = ml.load_movielens(args.data_dir)
    train_part, test = splits(data, args.split)
    print(f"{data.name}: {train_part.num_rows:,} train / {test.num_rows:,} {args.split} ratings")
    results: dict[str, list[dict]] = {}
    for name in args.models:
        for seed in args.seeds:
            if name == "popularity":
                if args.task == "rating":
                    break
                items = data.movies.column("movie_id").to_numpy()
                score = popularity_scorer(train_part)
                metrics = ranking_metrics(score, items, train_part, test, seed=seed)
            else:
                metrics = run(data, name, seed, args)
            print(name, seed, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
            results.setdefault(name, []).append(metrics)
    rows = summarise(results)
    print_table(rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results, "summary": rows}, f, indent=1)


if __name__ == "__main__":
    main()
