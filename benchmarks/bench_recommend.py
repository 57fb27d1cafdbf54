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
import json
import time

import numpy as np
import torch

from widedeep.recommend import load_recommender


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    recommender = load_recommender(args.model)
    load_s = time.perf_counter() - t0
    users = recommender.data.users.column("user_id").to_numpy()[: args.users]
    results = {}
    for name, fast in (("broadcast scorer", True), ("general encoder", False)):
        times, candidates = [], []
        for user in users.tolist():
            t = time.perf_counter()
            rows = recommender.candidate_rows(user)
            scores = recommender.score_rows(user, rows, fast=fast)
            top = rows[np.argsort(-scores)[: args.k]]
            times.append(time.perf_counter() - t)
            candidates.append(len(rows))
        del top
        ms = np.array(times) * 1000
        results[name] = {
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
            "candidates_median": float(np.median(candidates)),
        }
    user = int(users[0])
    rows = recommender.candidate_rows(user)
    gap = np.abs(recommender.score_rows(user, rows) - recommender.score_rows(user, rows, False))
    print(
        f"model {args.model}: {len(recommender.item_ids)} items, loaded in {load_s:.2f}s; "
        f"{len(users)} users, one request each; max |fast - general| = {gap.max():.2e}"
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
