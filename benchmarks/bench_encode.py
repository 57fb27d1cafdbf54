"""Encoding speed of the census reference spec, on one thread.

- bulk: ``spec.transform`` of an in-memory Arrow table of ``--rows`` census rows (the
  bundled training file repeated), best of ``--repeat`` runs, in rows/s;
- serving: ``spec.transform`` of one row dict (no label), p50 / p99 over ``--calls``
  calls cycling through distinct test rows, in microseconds;
- small batches: lists of ``--batch`` row dicts, p50 in microseconds.

Usage::

    python benchmarks/bench_encode.py                 # prints the figures as JSON
    python benchmarks/bench_encode.py --rows 100000 --out encode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import pyarrow as pa
import torch

from widedeep.datasets.census import LABEL_COLUMN, census_spec, load_census


def percentiles(times: list[float]) -> dict[str, float]:
    us = np.asarray(times) * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99))}


def measure(rows: int, repeat: int = 3, calls: int = 2000, batch: int = 32) -> dict:
    """Bulk rows/s (best of ``repeat``), single-row and small-batch latency, one thread."""
    torch.set_num_threads(1)
    train, test = load_census()
    spec = census_spec().fit(train)

    copies = -(-rows // train.num_rows)
    table = pa.concat_tables([train] * copies).slice(0, rows).combine_chunks()
    spec.transform(table.slice(0, 1000))  # warm up
    bulk = []
    for _ in range(repeat):
        start = time.perf_counter()
        encoded = spec.transform(table)
        bulk.append(time.perf_counter() - start)
    assert len(encoded) == rows

    test_rows = test.drop_columns([LABEL_COLUMN]).to_pylist()
    for row in test_rows[:200]:  # warm the per-value caches, as a serving process would be
        spec.transform(row)
    single = []
    for i in range(calls):
        row = test_rows[i % len(test_rows)]
        start = time.perf_counter()
        spec.transform(row)
        single.append(time.perf_counter() - start)

    small = []
    for i in range(max(calls // 10, 10)):
        chunk = test_rows[(i * batch) % (len(test_rows) - batch) :][:batch]
        start = time.perf_counter()
        spec.transform(chunk)
        small.append(time.perf_counter() - start)

    return {
        "benchmark": "encode census reference spec",
        "threads": torch.get_num_threads(),
        "rows": rows,
        "bulk_best_s": min(bulk),
        "bulk_rows_per_s": rows / min(bulk),
        "bulk_runs_s": bulk,
        "single_row": {"calls": calls, **percentiles(single)},
        "small_batch": {"rows": batch, "calls": len(small), **percentiles(small)},
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "machine": platform.machine(),
    }


def run(quick: bool = False) -> dict:
    """For ``python -m benchmarks``: 1,000,000 rows (quick: 2,000), with a table and checks."""
    r = measure(rows=2000, repeat=1, calls=50) if quick else measure(rows=1_000_000)
    small = r["small_batch"]
    r["tables"] = [
        {
            "title": "Encoding the census reference spec (`spec.transform`), 1 thread",
            "columns": ["input", "rows/s", "p50 µs", "p99 µs"],
            "rows": [
                [
                    f"Arrow table of {r['rows']:,} rows (best of {len(r['bulk_runs_s'])})",
                    round(r["bulk_rows_per_s"]),
                    "",
                    "",
                ],
                [
                    "one row dict (no label)",
                    "",
                    r["single_row"]["p50_us"],
                    r["single_row"]["p99_us"],
                ],
                [f"list of {small['rows']} row dicts", "", small["p50_us"], small["p99_us"]],
            ],
        }
    ]
    r["checks"] = [
        {
            "what": f"encoding rows/s ({r['rows']:,} census rows, Arrow)",
            "measured": round(r["bulk_rows_per_s"]),
            "target": ">= 1,000,000",
            "ok": r["bulk_rows_per_s"] >= 1_000_000,
        }
    ]
    return r


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the bulk table")
    parser.add_argument("--repeat", type=int, default=3, help="bulk runs; the best is kept")
    parser.add_argument("--calls", type=int, default=2000, help="single-row calls")
    parser.add_argument("--batch", type=int, default=32, help="rows per small batch")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)

    result = measure(args.rows, args.repeat, args.calls, args.batch)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
