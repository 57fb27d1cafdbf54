"""Prediction speed of a saved census model: one raw row dict at a time, and raw Arrow batches.

    python benchmarks/bench_predict.py                  # untrained census model, 1 thread
    python benchmarks/bench_predict.py --model census_model --out predict.json

Everything goes through ``widedeep.load(path)``: the model is written to disk and
read back as a user would.  Single-row figures time ``predict_proba(row_dict)``
on different held-out rows in turn (encoding included); batch figures time
``predict_proba(table)`` on an Arrow table of raw rows (encoding included).
The weights' values do not change the speed, so without ``--model`` an
untrained model with the reference shapes is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import widedeep
from widedeep import artifact
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p999_ms": float(np.percentile(ms, 99.9)),
    }


def time_calls(fn, inputs: list, calls: int, warmup: int = 200) -> tuple[list, list]:
    """Wall-clock and CPU (this thread) seconds per call: on a shared machine the CPU time
    shows what an idle core would give, the wall time what a caller waited."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    wall, cpu = [], []
    for i in range(calls):
        x = inputs[i % len(inputs)]
        t, c = time.perf_counter(), time.thread_time()
        fn(x)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return wall, cpu


def measure(
    model_path: str | None = None, calls: int = 5000, repeats: int = 5, threads: int = 1
) -> dict:
    """Single-row latency and batch rows/s of ``widedeep.load(path)`` (default: an untrained
    census model with the reference shapes, written to a temporary directory)."""
    torch.set_num_threads(threads)
    train_table, test_table = load_census()
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path
        if path is None:
            spec = census_spec().fit(train_table)
            path = Path(tmp) / "model"
            artifact.write_model_dir(path, spec, WideDeep(ModelConfig.from_spec(spec)))
        model = widedeep.load(path)

    rows = test_table.slice(0, 1000).to_pylist()
    results: dict = {}
    for name, fn in (
        ("single_row", model.predict_proba),
        ("single_row_encoding_only", lambda r: model.spec.transform(r, label=False)),
    ):
        wall, cpu = time_calls(fn, rows, calls, warmup=min(200, calls))
        results[f"{name}_wall"] = percentiles(wall)
        results[f"{name}_cpu"] = percentiles(cpu)
    for size in (1000, test_table.num_rows):
        batches = [test_table.slice(i, size) for i in range(0, test_table.num_rows, size)]
        batches = [b for b in batches if b.num_rows == size]
        rows_per_pass = len(batches) * size

        def one_pass(_, batches=batches):
            for b in batches:
                model.predict_proba(b)

        wall, cpu = time_calls(one_pass, [None], repeats, warmup=1)
        results[f"batch_{size}_rows_per_s_wall"] = round(rows_per_pass / float(np.median(wall)))
        results[f"batch_{size}_rows_per_s_cpu"] = round(rows_per_pass / float(np.median(cpu)))

    results["setup"] = {
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other processes competing for the cores
        "model": str(model_path or "untrained census reference model"),
        "test_rows": test_table.num_rows,
    }
    return results


def run(quick: bool = False) -> dict:
    """For ``python -m benchmarks``: 5,000 single-row calls, 5 passes over adult.test (quick:
    50 calls, one pass), with a table and the issue's checks."""
    r = measure(calls=50, repeats=1) if quick else measure()
    n = r["setup"]["test_rows"]
    one, enc = r["single_row_wall"], r["single_row_encoding_only_wall"]
    cpu = r["single_row_cpu"]
    r["tables"] = [
        {
            "title": "Prediction from raw rows, `widedeep.load(path).predict_proba`, 1 thread",
            "columns": ["input", "rows/s (wall)", "rows/s (CPU)", "p50 ms", "p99 ms"],
            "rows": [
                ["one row dict", "", "", one["median_ms"], one["p99_ms"]],
                ["one row dict, encoding only", "", "", enc["median_ms"], enc["p99_ms"]],
                [
                    "Arrow tables of 1,000 rows",
                    r["batch_1000_rows_per_s_wall"],
                    r["batch_1000_rows_per_s_cpu"],
                    "",
                    "",
                ],
                [
                    f"Arrow table of {n:,} rows (adult.test)",
                    r[f"batch_{n}_rows_per_s_wall"],
                    r[f"batch_{n}_rows_per_s_cpu"],
                    "",
                    "",
                ],
            ],
            "note": "untrained census model with the reference shapes (weights do not change "
            f"the speed), saved and loaded; single-row CPU p50 {cpu['median_ms']:.3g} ms.",
        }
    ]
    batch = r[f"batch_{n}_rows_per_s_wall"]
    r["checks"] = [
        {
            "what": "batch prediction rows/s (adult.test, raw rows)",
            "measured": batch,
            "target": ">= 250,000",
            "ok": batch >= 250_000,
        },
        {
            "what": "single-row prediction p50",
            "measured": f"{one['median_ms']:.3f} ms",
            "target": "<= 0.25 ms",
            "ok": one["median_ms"] <= 0.25,
        },
    ]
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved census model (default: untrained, same shapes)")
    parser.add_argument("--calls", type=int, default=5000, help="single-row calls to time")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the batch data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = measure(args.model, args.calls, args.repeats, args.threads)
    print(f"{'measure':<40} {'value':>12}")
    for key, value in results.items():
        if key.startswith("single_row"):
            for stat, v in value.items():
                print(f"{key + ' ' + stat:<40} {v:>12.3f}")
    for key, v in results.items():
        if key.startswith("batch_"):
            print(f"{key:<40} {v:>12,}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
