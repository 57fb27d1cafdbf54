"""TensorFlow's census reference run, for the side-by-side with widedeep (optional).

The run is TensorFlow's official ``wide_deep`` census example, rewritten for TF 2.15 from
its description: the census columns through ``tf.feature_column``, a
``tf.estimator.DNNLinearCombinedClassifier`` (FTRL + AdaGrad at the canned defaults,
summed loss, hidden units 100-75-50-25), a ``TextLineDataset`` + ``decode_csv`` input
function, 40 epochs at batch 40, evaluating on adult.test every 2 epochs, one thread.

TensorFlow is never a dependency of widedeep: run this script from its own virtualenv,
and ``python -m benchmarks`` folds the JSON it writes into the report::

    python3 -m venv .venv-tf
    .venv-tf/bin/pip install "tensorflow-cpu==2.15.*" "tensorflow-estimator==2.15.*"
    taskset -c 0 .venv-tf/bin/python benchmarks/bench_tf.py --out benchmarks/results/tf.json

(``--train_epochs 2`` checks the set-up in a few seconds.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results" / "tf.json"
BUNDLED = HERE.parent / "src" / "widedeep" / "datasets" / "data"

CSV_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "gender", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income_bracket",
]  # fmt: skip
CSV_DEFAULTS = [[0], [""], [0], [""], [0], [""], [""], [""], [""], [""], [0], [0], [0], [""], [""]]
TRAIN_EXAMPLES = 32561
TARGET_AUC = 0.90


# --------------------------------------------------------------------------- the TF program


def clean_copy(src_gz: Path, dst: Path) -> None:
    """The example's download cleaning: ", " -> ",", no header line, no label's trailing '.'."""
    with gzip.open(src_gz, "rt") as f, open(dst, "w") as out:
        for line in f:
            line = line.strip().replace(", ", ",")
            if not line or "," not in line:
                continue
            out.write((line[:-1] if line.endswith(".") else line) + "\n")


def build_model_columns(tf):
    """The example's wide and deep columns, as census_dataset.build_model_columns wrote them."""
    fc = tf.feature_column
    age = fc.numeric_column("age")
    education_num = fc.numeric_column("education_num")
    capital_gain = fc.numeric_column("capital_gain")
    capital_loss = fc.numeric_column("capital_loss")
    hours_per_week = fc.numeric_column("hours_per_week")
    education = fc.categorical_column_with_vocabulary_list(
        "education",
        ["Bachelors", "HS-grad", "11th", "Masters", "9th", "Some-college", "Assoc-acdm",
         "Assoc-voc", "7th-8th", "Doctorate", "Prof-school", "5th-6th", "10th", "1st-4th",
         "Preschool", "12th"],
    )  # fmt: skip
    marital_status = fc.categorical_column_with_vocabulary_list(
        "marital_status",
        ["Married-civ-spouse", "Divorced", "Married-spouse-absent", "Never-married",
         "Separated", "Married-AF-spouse", "Widowed"],
    )  # fmt: skip
    relationship = fc.categorical_column_with_vocabulary_list(
        "relationship",
        ["Husband", "Not-in-family", "Wife", "Own-child", "Unmarried", "Other-relative"],
    )
    workclass = fc.categorical_column_with_vocabulary_list(
        "workclass",
        ["Self-emp-not-inc", "Private", "State-gov", "Federal-gov", "Local-gov", "?",
         "Self-emp-inc", "Without-pay", "Never-worked"],
    )  # fmt: skip
    occupation = fc.categorical_column_with_hash_bucket("occupation", hash_bucket_size=1000)
    age_buckets = fc.bucketized_column(age, boundaries=[18, 25, 30, 35, 40, 45, 50, 55, 60, 65])
    base_columns = [education, marital_status, relationship, workclass, occupation, age_buckets]
    crossed_columns = [
        fc.crossed_column(["education", "occupation"], hash_bucket_size=1000),
        fc.crossed_column([age_buckets, "education", "occupation"], hash_bucket_size=1000),
    ]
    deep_columns = [
        age,
        education_num,
        capital_gain,
        capital_loss,
        hours_per_week,
        fc.indicator_column(workclass),
        fc.indicator_column(education),
        fc.indicator_column(marital_status),
        fc.indicator_column(relationship),
        fc.embedding_column(occupation, dimension=8),
    ]
    return base_columns + crossed_columns, deep_columns


def input_fn(tf, data_file: str, num_epochs: int, shuffle: bool, batch_size: int):
    """The example's input function: CSV lines parsed by decode_csv, shuffled, batched."""

    def parse_csv(value):
        columns = tf.io.decode_csv(value, record_defaults=CSV_DEFAULTS)
        features = dict(zip(CSV_COLUMNS, columns))
        labels = features.pop("income_bracket")
        return features, tf.equal(labels, ">50K")

    dataset = tf.data.TextLineDataset(data_file)
    if shuffle:
        dataset = dataset.shuffle(buffer_size=TRAIN_EXAMPLES)
    dataset = dataset.map(parse_csv, num_parallel_calls=5)
    return dataset.repeat(num_epochs).batch(batch_size)


def reference_run(train_epochs: int, epochs_between_evals: int, batch_size: int) -> dict:
    """Train and evaluate as census_main.py did; wall times and the metrics of each eval."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    t_start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        train_file, test_file = Path(tmp, "adult.data"), Path(tmp, "adult.test")
        clean_copy(BUNDLED / "adult.data.gz", train_file)
        clean_copy(BUNDLED / "adult.test.gz", test_file)
        wide_columns, deep_columns = build_model_columns(tf)
        session = tf.compat.v1.ConfigProto(
            device_count={"GPU": 0}, inter_op_parallelism_threads=1, intra_op_parallelism_threads=1
        )
        model = tf.estimator.DNNLinearCombinedClassifier(
            model_dir=str(Path(tmp, "model")),
            linear_feature_columns=wide_columns,
            dnn_feature_columns=deep_columns,
            dnn_hidden_units=[100, 75, 50, 25],
            config=tf.estimator.RunConfig().replace(session_config=session),
            loss_reduction=tf.keras.losses.Reduction.SUM,
        )
        history, train_s, eval_s = [], 0.0, 0.0
        for n in range(train_epochs // epochs_between_evals):
            t0 = time.perf_counter()
            model.train(
                input_fn=lambda: input_fn(
                    tf, str(train_file), epochs_between_evals, True, batch_size
                )
            )
            t1 = time.perf_counter()
            results = model.evaluate(
                input_fn=lambda: input_fn(tf, str(test_file), 1, False, batch_size)
            )
            t2 = time.perf_counter()
            train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
            history.append(
                {
                    "epoch": (n + 1) * epochs_between_evals,
                    "wall_s": round(t2 - t_start, 2),
                    **{k: round(float(v), 4) for k, v in results.items()},
                }
            )
            print(json.dumps(history[-1]), file=sys.stderr, flush=True)
    total_s = time.perf_counter() - t_start
    steps = history[-1]["global_step"]
    reached = next((h for h in history if h["auc"] >= TARGET_AUC), None)
    return {
        "tensorflow": tf.__version__,
        "tensorflow_estimator": importlib.metadata.version("tensorflow-estimator"),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "threads": 1,
        "train_epochs": train_epochs,
        "epochs_between_evals": epochs_between_evals,
        "batch_size": batch_size,
        "total_s": round(total_s, 1),
        "cpu_s": round(time.process_time() - cpu_start, 1),  # all threads of this process
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "train_examples_per_s": round(steps * batch_size / train_s),
        "time_to_auc_s": reached["wall_s"] if reached else None,
        "final": history[-1],
        "history": history,
    }


# --------------------------------------------------------------------------- the report side


def run(quick: bool = False, path: Path = RESULTS_JSON) -> dict[str, Any]:
    """The saved TensorFlow run (this process has no TensorFlow); skipped when absent."""
    if not path.exists():
        shown = path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path
        return {
            "skipped": f"no {shown}; run benchmarks/bench_tf.py with TensorFlow 2.15 to make it"
        }
    return json.loads(path.read_text())


def compare(tf_run: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """Tables and checks setting the saved TensorFlow run beside this run's widedeep figures."""
    ref = train["reference_run"]
    batch40 = next(t for t in train["throughput"] if t["batch_size"] == 40)
    wd_rate = batch40["examples_per_s"]["widedeep"]
    final = tf_run["final"]
    wall_ratio = tf_run["total_s"] / ref["wall_s"]
    # CPU seconds: the two runs were not alternated, and on a shared machine wall time
    # depends on the neighbours of the moment; a one-thread run's CPU time much less so
    cpu_ratio = tf_run["cpu_s"] / ref["cpu_s"]
    table = {
        "title": "Census reference run (40 epochs, batch 40, eval every 2), 1 thread",
        "columns": [
            "system",
            "accuracy",
            "AUC",
            "whole run wall s",
            "whole run CPU s",
            "train examples/s (batch 40)",
        ],
        "rows": [
            [
                f"TensorFlow {tf_run['tensorflow']} DNNLinearCombinedClassifier "
                f"(measured {tf_run['date']})",
                final["accuracy"],
                final["auc"],
                tf_run["total_s"],
                tf_run["cpu_s"],
                tf_run["train_examples_per_s"],
            ],
            [
                "widedeep (this run)",
                ref.get("accuracy"),
                ref.get("auc"),
                ref["wall_s"],
                ref["cpu_s"],
                wd_rate,
            ],
            [
                "widedeep speed-up",
                "",
                "",
                f"{wall_ratio:.1f}x",
                f"{cpu_ratio:.1f}x",
                f"{wd_rate / tf_run['train_examples_per_s']:.1f}x",
            ],
        ],  # fmt: skip
        "note": "TensorFlow's figures come from results/tf.json (bench_tf.py in its own "
        "virtualenv, pinned to one core), measured apart from widedeep's; widedeep's whole "
        "run includes starting Python and importing torch, TensorFlow's starts after import; "
        "widedeep's reference preset standardises the deep numerics, TensorFlow's example "
        "feeds them raw.",
    }
    check = {
        "what": "reference run vs TensorFlow's estimator (CPU seconds)",
        "measured": f"{cpu_ratio:.1f}x faster (wall {wall_ratio:.1f}x)",
        "target": ">= 4x faster",
        "ok": cpu_ratio >= 4,
    }
    return {"tables": [table], "checks": [check]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train_epochs", type=int, default=40)
    p.add_argument("--epochs_between_evals", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=40)
    p.add_argument("--out", help="write the results as JSON here (e.g. benchmarks/results/tf.json)")
    args = p.parse_args(argv)
    try:
        import tensorflow  # noqa: F401
        import tensorflow_estimator  # noqa: F401
    except ImportError as e:
        print(f"bench_tf: TensorFlow 2.15 + tensorflow-estimator are needed ({e}); skipped.")
        return 0
    result = reference_run(args.train_epochs, args.epochs_between_evals, args.batch_size)
    result["command"] = " ".join(["python", *sys.argv])
    result["cpus_allowed"] = len(os.sched_getaffinity(0))  # 1 under taskset -c 0
    summary = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
