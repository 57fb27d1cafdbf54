"""What the bad-row checks cost when reading a CSV with a spec.

Writes the bundled census training rows (repeated to ``--rows``) as a CSV with a header,
then reads it with ``read_table``: without a spec (no checks), with the census spec
(default policy: all rows good, every check runs), and with ``on_bad_rows="skip"`` on a
copy where ``--bad`` of the rows are damaged (a short row, a non-number, an unknown
label, in turn).  Best of ``--repeat`` runs, in rows/s.

Usage::

    python benchmarks/bench_bad_rows.py                  # prints a table
    python benchmarks/bench_bad_rows.py --rows 200000 --out bad_rows.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv

from widedeep.badrows import BadRows
from widedeep.datasets.census import census_spec, load_census
from widedeep.io import read_table


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--bad", type=float, default=0.01, help="fraction of damaged rows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args(argv)

    train, _ = load_census()
    reps = -(-args.rows // train.num_rows)
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean.csv"
        pacsv.write_csv(train, clean)
        lines = clean.read_text().splitlines(keepends=True)
        body = (lines[1:] * reps)[: args.rows]
        clean.write_text(lines[0] + "".join(body))
        step = max(1, int(1 / args.bad)) if args.bad > 0 else len(body) + 1
        damaged = list(body)
        for n, i in enumerate(range(0, len(body), step)):
            fields = body[i].rstrip("\n").split(",")
            if n % 3 == 0:
                damaged[i] = ",".join(fields[:3]) + "\n"
            elif n % 3 == 1:
                damaged[i] = ",".join(["forty"] + fields[1:]) + "\n"
            else:
                damaged[i] = ",".join(fields[:-1] + ['">50K?"']) + "\n"
        dirty = Path(tmp) / "dirty.csv"
        dirty.write_text(lines[0] + "".join(damaged))

        spec = census_spec()
        report = BadRows("skip")
        results = {
            "no spec (no checks)": best_of(args.repeat, lambda: read_table(clean)),
            "census spec, all rows good": best_of(
                args.repeat, lambda: read_table(clean, spec=spec)
            ),
            f"census spec, skip ({args.bad:.0%} bad)": best_of(
                args.repeat,
                lambda: read_table(dirty, spec=spec, bad_rows=BadRows("skip")),
            ),
        }
        read_table(dirty, spec=spec, bad_rows=report)

    rows_per_s = {k: round(args.rows / v) for k, v in results.items()}
    print(f"read_table on {args.rows:,} census rows ({platform.processor() or platform.machine()})")
    print(f"{'case':<36} {'seconds':>8} {'rows/s':>12}")
    for k, v in results.items():
        print(f"{k:<36} {v:8.3f} {rows_per_s[k]:>12,}")
    print(f"skipped in the dirty file: {report.summary()}")
    out = {"rows": args.rows, "seconds": results, "rows_per_s": rows_per_s, "bad": report.to_dict()}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


def run(quick: bool = False) -> dict:
    """For ``python -m benchmarks``: 300,000 rows, best of 3 (quick: 2,000 rows, once)."""
    argv = ["--rows", "2000", "--repeat", "1"] if quick else []
    with contextlib.redirect_stdout(sys.stderr):
        out = main(argv)
    base = out["seconds"]["no spec (no checks)"]
    out["tables"] = [
        {
            "title": f"`read_table` of a {out['rows']:,}-row census CSV: what the bad-row checks "
            "cost",
            "columns": ["case", "seconds", "rows/s", "time vs no spec"],
            "rows": [[case, round(sec, 3), out["rows_per_s"][case], round(sec / base, 2)]
                     for case, sec in out["seconds"].items()],  # fmt: skip
            "note": "best of the runs; damaged rows: a short row, a non-number, an unknown "
            "label, in turn.",
        }
    ]
    return out


if __name__ == "__main__":
    main()
