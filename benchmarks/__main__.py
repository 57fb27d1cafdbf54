"""``python -m benchmarks``: every benchmark in one run, into report.json and report.md.

Each ``benchmarks/bench_*.py`` listed in ``SUITES`` that exists is imported when its
turn comes and its ``run(quick) -> dict`` called (convention: benchmarks/README.md); a
missing script or a missing optional dependency is skipped with the reason, an error in
one script is recorded and the others still run. TensorFlow's side of the comparison
comes from ``results/tf.json`` (written by ``bench_tf.py`` from its own virtualenv).

    python -m benchmarks                        # full run, a few minutes on 2 cores
    python -m benchmarks --quick --out-dir DIR  # smoke run on tiny sizes
    python -m benchmarks --only train,encode --update-readme
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .report import checks_table, render_tables

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"

# (name, module, heading) in the order they run and appear in the report
SUITES = [
    ("train", "bench_train", "Training"),
    ("encode", "bench_encode", "Encoding"),
    ("predict", "bench_predict", "Prediction"),
    ("serve", "bench_serve", "Serving"),
    ("scale", "bench_scale", "Scale"),
    ("bad_rows", "bench_bad_rows", "Reading CSV with bad-row checks"),
    ("movielens", "bench_movielens", "MovieLens"),
    ("recommend", "bench_recommend", "MovieLens recommendations"),
    ("quality", "bench_quality", "Quality"),
    ("tf", "bench_tf", "TensorFlow 2.15 estimator, side by side"),
]


def run_suite(module: str, quick: bool) -> dict[str, Any]:
    """One script's result, or {"skipped": why} / {"error": what} instead of raising."""
    qualified = f"benchmarks.{module}"
    try:
        mod = importlib.import_module(qualified)
    except ModuleNotFoundError as e:
        if e.name == qualified:
            return {"skipped": f"benchmarks/{module}.py is not present"}
        return {"skipped": f"needs the package {e.name!r}, which is not installed"}
    run = getattr(mod, "run", None)
    if not callable(run) or list(inspect.signature(run).parameters)[:1] != ["quick"]:
        return {"skipped": f"benchmarks/{module}.py has no run(quick) yet (benchmarks/README.md)"}
    t0 = time.perf_counter()
    try:
        result = run(quick=quick)
    except Exception as e:  # one broken script must not cost the others' results
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}
    return {**result, "seconds": round(time.perf_counter() - t0, 1)}


def machine_facts() -> dict[str, Any]:
    import torch

    import widedeep

    return {
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.is_available(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "widedeep": widedeep.__version__,
    }


def markdown(report: dict[str, Any]) -> str:
    """report.md: when, where and how it was measured, the targets, then each suite."""
    facts = report["facts"]
    lines = [
        f"Measured {report['date']} on {report['machine']} ({facts['platform']}, Python "
        f"{facts['python']}, torch {facts['torch']}), with `{report['command']}` "
        f"({report['total_s']:.0f} s in all).",
    ]
    if report["quick"]:
        lines += [
            "",
            "**Quick smoke run: the sizes are too small for these figures to mean much.**",
        ]
    checks = [c for r in report["suites"].values() for c in r.get("checks", [])]
    if checks:
        lines += ["", checks_table(checks)]
    skipped = []
    for name, _, heading in SUITES:
        result = report["suites"].get(name)
        if result is None:
            continue
        if "skipped" in result or "error" in result:
            skipped.append(f"{name}: {result.get('skipped') or 'error: ' + result['error']}")
            continue
        lines += ["", f"#### {heading}", "", render_tables({"tables": result.get("tables", [])})]
    if skipped:
        lines += ["", "Not measured in this run: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: Path = README) -> None:
    """Replace what lies between the README's benchmark markers with ``text``."""
    body = readme.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers to fill in")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _, _ in SUITES]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run on tiny sizes (seconds)")
    p.add_argument("--only", help=f"comma-separated suites among {','.join(names)}")
    p.add_argument(
        "--out-dir",
        help="where report.json and report.md go (default "
        "benchmarks/results, or benchmarks/results/quick with --quick)",
    )
    p.add_argument(
        "--machine",
        help="how the machine is described in the report (default: '<n> cores, no GPU')",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="also write report.md between the README's benchmark markers",
    )
    args = p.parse_args(argv)
    chosen = names if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"unknown suite(s) {', '.join(unknown)}; choose among {', '.join(names)}")
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS / ("quick" if args.quick else "")

    import torch

    torch.set_num_threads(1)  # every figure is single-threaded unless a script says otherwise
    facts = machine_facts()
    t0 = time.perf_counter()
    suites: dict[str, Any] = {}
    for name, module, _ in SUITES:
        if name in chosen:
            print(f"== {name}", file=sys.stderr, flush=True)
            suites[name] = run_suite(module, args.quick)
    if "tf" in suites and "train" in suites and "skipped" not in suites["tf"]:
        from . import bench_tf

        suites["tf"] = {**suites["tf"], **bench_tf.compare(suites["tf"], suites["train"])}
    gpu = "GPU" if facts["gpu"] else "no GPU"
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "-m", "benchmarks", *(argv or sys.argv[1:])]),
        "machine": args.machine or f"{facts['cpu_count']} cores, {gpu}",
        "quick": args.quick,
        "total_s": round(time.perf_counter() - t0, 1),
        "facts": facts,
        "suites": suites,
    }
    text = markdown(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "report.md").write_text(text)
    if args.update_readme:
        update_readme(text)
    print(text)
    print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}", file=sys.stderr)
    return 1 if any("error" in r for r in suites.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
