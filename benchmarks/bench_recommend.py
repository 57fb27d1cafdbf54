"""Latency of `recommend`: score every unseen movie for one user and take the top K, in-process.

Each request is a different user (nothing cached per user).  Reports the median and p90
of the broadcast scorer used by `widedeep recommend`, and of the general path that
encodes the broadcast rows with the feature spec (the same numbers, checked here).

    widedeep train --dataset movielens --data_dir ../shared/datasets/ml-100k \
        --model_dir /tmp/ml_model --train_epochs 1 --batch_size 256 --threads 1
    python benchmarks/bench_recommend.py --model /tmp/ml_model --users 300
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from widedeep.recommend import load_recommender


def measure(model: str, users: int = 300, k: int = 10) -> dict:
    """Per-request latency of both scoring paths, one different user per request."""
    t0 = time.perf_counter()
    recommender = load_recommender(model)
    load_s = time.perf_counter() - t0
    user_ids = recommender.data.users.column("user_id").to_numpy()[:users]
    results = {}
    for name, fast in (("broadcast scorer", True), ("general encoder", False)):
        times, candidates = [], []
        for user in user_ids.tolist():
            t = time.perf_counter()
            rows = recommender.candidate_rows(user)
            scores = recommender.score_rows(user, rows, fast=fast)
            top = rows[np.argsort(-scores)[:k]]
            times.append(time.perf_counter() - t)
            candidates.append(len(rows))
        del top
        ms = np.array(times) * 1000
        results[name] = {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "candidates_median": float(np.median(candidates)),
        }
    user = int(user_ids[0])
    rows = recommender.candidate_rows(user)
    gap = np.abs(recommender.score_rows(user, rows) - recommender.score_rows(user, rows, False))
    return {
        "items": len(recommender.item_ids),
        "users": len(user_ids),
        "load_s": load_s,
        "max_gap": float(gap.max()),
        "results": results,
    }


def run(quick: bool = False, data_dir: Path | None = None) -> dict:
    """For ``python -m benchmarks``: a model trained one epoch on ml-100k (seconds), then 300
    users; skipped when quick or when the data (never shipped) is absent."""
    from widedeep.cli import main as cli

    data_dir = data_dir or Path(__file__).resolve().parent.parent.parent / "shared/datasets/ml-100k"
    if quick or not (data_dir / "u.data").exists():
        why = "a quick run" if quick else f"{data_dir} is absent (GroupLens licence: not shipped)"
        return {"skipped": f"needs a MovieLens model trained on ml-100k; {why}"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        code = cli(["train", "--dataset", "movielens", "--data_dir", str(data_dir),
                    "--model_dir", tmp, "--train_epochs", "1", "--batch_size", "256",
                    "--threads", "1", "--quiet"])  # fmt: skip
        if code != 0:
            raise RuntimeError(f"widedeep train --dataset movielens exited {code}")
        torch.set_num_threads(1)
        out = measure(tmp)
    fast = out["results"]["broadcast scorer"]
    out["tables"] = [
        {
            "title": f"`recommend`: score every unseen movie for one user, top 10, in-process "
            f"({out['users']} users, {out['items']:,} items), 1 thread",
            "columns": ["path", "median ms", "p90 ms", "candidates (median)"],
            "rows": [[name, r["median_ms"], r["p90_ms"], round(r["candidates_median"])]
                     for name, r in out["results"].items()],  # fmt: skip
            "note": f"model trained one epoch on ml-100k, loaded in {out['load_s']:.2f} s; "
            f"max |broadcast - general| score {out['max_gap']:.1e}.",
        }
    ]
    out["checks"] = [
        {
            "what": "MovieLens: score all items for one user + top 10, median",
            "measured": f"{fast['median_ms']:.2f} ms",
            "target": "<= 2 ms",
            "ok": fast["median_ms"] <= 2,
        }
    ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    out = measure(args.model, args.users, args.k)
    results, load_s, gap = out["results"], out["load_s"], out["max_gap"]
    print(
        f"model {args.model}: {out['items']} items, loaded in {load_s:.2f}s; "
        f"{out['users']} users, one request each; max |fast - general| = {gap:.2e}"
    )
    print(f"{'path':<18} {'median ms':>10} {'p90 ms':>8} {'candidates':>11}")
    for name, r in results.items():
        print(f"{name:<18} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} "
              f"{r['candidates_median']:>11.0f}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "load_s": load_s, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
