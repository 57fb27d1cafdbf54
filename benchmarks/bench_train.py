"""Training benchmarks of the census reference model, one thread.

1. Throughput (examples/s) at batch 40, 256, 1024 and 4096 through widedeep's public
   path (``train.train`` on an in-memory ``Batch``), next to the *floor*: a minimal
   hand-written PyTorch loop over the same pre-encoded tensors with the same shapes (no
   data loader, slices of a tensor permuted once per epoch). Contenders alternate in one
   process, round after round, so machine noise hits them alike; the ratio
   widedeep/floor is what to read. Two floors: one fused AdaGrad over all parameters (the
   floor of DESIGN.md), and FTRL + AdaGrad, the optimizers widedeep runs.
2. Time to the reference quality: wall seconds from reading the data until the model
   first reaches AUC >= 0.90 on adult.test, evaluating after every epoch.
3. Peak RSS and wall time of the full reference run (``widedeep train`` in a child
   process), beside the RSS of a process that only imports widedeep and torch.
4. Scaling: encoding and one training epoch on 1x, 4x and 16x the census rows
   (replicated), each in a fresh process so its peak RSS is its own.

    python -m benchmarks.bench_train [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from widedeep import optim
from widedeep.batch import Batch
from widedeep.datasets import census
from widedeep.model import ModelConfig
from widedeep.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent  # children run `-m benchmarks...` from here
BATCH_SIZES = (40, 256, 1024, 4096)
TARGET_AUC = 0.90
SCALES = (1, 4, 16)
SCALE_BATCH_SIZE = 256


# --------------------------------------------------------------------------- the floor


class Floor(nn.Module):
    """The census model written by hand over plain tensors: the same parameters as WideDeep.

    The indicator columns become a one-hot block of the first layer's input, built per
    batch from the same ids widedeep reads (widedeep gathers first-layer rows instead);
    the product is the same.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        (emb,) = config.embeddings  # census: one embedding column (occupation, 8 dims)
        self.wide = nn.EmbeddingBag(config.wide_dim + 1, 1, mode="sum", padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(1))
        self.embedding = nn.Embedding(emb["num_embeddings"] + 1, emb["dimension"], padding_idx=0)
        self.indicator_dim = config.indicator_dim
        widths = [emb["dimension"] + config.dense_dim + config.indicator_dim, *config.hidden_units]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths, widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
        nn.init.zeros_(self.wide.weight)

    def forward(self, wide_ids, emb_ids, indicator_ids, dense) -> torch.Tensor:
        one_hot = torch.zeros(len(dense), self.indicator_dim + 1).scatter_(1, indicator_ids, 1.0)
        x = torch.cat([self.embedding(emb_ids), dense, one_hot[:, 1:]], dim=1)
        return self.wide(wide_ids) + self.bias + self.mlp(x)


def floor_tensors(batch: Batch) -> tuple[torch.Tensor, ...]:
    """(wide ids, embedding ids, indicator ids, dense, labels): what widedeep's Batch holds."""
    return (
        batch.wide_ids,
        batch.embed_ids[0][:, 0],
        batch.indicator_ids.long(),  # scatter_ wants int64 indices
        batch.dense,
        batch.label,
    )


def train_floor(
    tensors: tuple[torch.Tensor, ...],
    config: ModelConfig,
    batch_size: int,
    epochs: int,
    ftrl: bool,
    seed: int = 0,
) -> Floor:
    """The hand-written loop: permute once per epoch, slice, summed logistic loss, step."""
    torch.manual_seed(seed)
    model = Floor(config)
    if ftrl:
        wide = [model.wide.weight, model.bias]
        deep = [p for p in model.parameters() if all(p is not w for w in wide)]
        lr = optim.linear_learning_rate(8)
        opts = [optim.Ftrl(wide, lr=lr), _adagrad(deep)]
    else:
        opts = [_adagrad(list(model.parameters()))]
    n = len(tensors[0])
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        *inputs, y = (t.index_select(0, perm) for t in tensors)
        for s in range(0, n, batch_size):
            e = s + batch_size
            logits = model(*(t[s:e] for t in inputs))
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], y[s:e], reduction="sum")
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
    return model


def _adagrad(params: list) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(
        params, lr=optim.DNN_LEARNING_RATE, initial_accumulator_value=0.1, fused=True
    )


# --------------------------------------------------------------------------- 1. throughput


def census_encoded(rows: int | None = None):
    """(fitted spec, encoded train Batch, encoded test Batch, model config)."""
    train_table, test_table = census.load_census()
    if rows is not None:
        train_table, test_table = train_table.slice(0, rows), test_table.slice(0, rows)
    spec = census.census_spec().fit(train_table)
    config = ModelConfig.from_spec(spec, model_type="wide_deep")
    return spec, spec.transform(train_table), spec.transform(test_table), config


def throughput(rounds: int, seconds: float, rows: int | None = None) -> list[dict[str, Any]]:
    """Examples/s of widedeep and both floors per batch size, medians over alternating rounds."""
    spec, batch, _, config = census_encoded(rows)
    tensors = floor_tensors(batch)
    n = len(batch)

    def widedeep(bs: int, epochs: int, seed: int) -> None:
        cfg = TrainConfig(train_epochs=epochs, batch_size=bs, seed=seed)
        train(spec, batch, None, config, cfg, None, quiet=True, log=lambda _: None)

    contenders = {
        "widedeep": widedeep,
        "floor_adagrad": lambda bs, ep, seed: train_floor(tensors, config, bs, ep, False, seed),
        "floor_ftrl": lambda bs, ep, seed: train_floor(tensors, config, bs, ep, True, seed),
    }
    out = []
    for bs in BATCH_SIZES:
        # calibrate: enough epochs that one measurement lasts about `seconds`
        t0 = time.perf_counter()
        contenders["floor_adagrad"](bs, 1, 0)
        epochs = max(1, round(seconds / max(time.perf_counter() - t0, 1e-6)))
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(rounds):
            for name in names[r % 3 :] + names[: r % 3]:  # rotate who goes first
                t0 = time.perf_counter()
                contenders[name](bs, epochs, r)
                rates[name].append(n * epochs / (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in rates.items()}
        out.append(
            {
                "batch_size": bs,
                "epochs_per_round": epochs,
                "rounds": rounds,
                "examples_per_s": {k: round(v) for k, v in med.items()},
                "ratio_vs_floor_adagrad": round(med["widedeep"] / med["floor_adagrad"], 3),
                "ratio_vs_floor_ftrl": round(med["widedeep"] / med["floor_ftrl"], 3),
                "all_rounds": {k: [round(x) for x in v] for k, v in rates.items()},
            }
        )
    return out


# --------------------------------------------------------------------------- 2. time to AUC


def time_to_quality(max_epochs: int, rows: int | None = None) -> dict[str, Any]:
    """Seconds from reading the data until AUC >= 0.90 first holds (evaluated every epoch).

    One run of ``max_epochs``; the time to each evaluation is read from its history
    (training time so far + every evaluation so far), so later epochs do not count.
    """
    t0 = time.perf_counter()
    spec, batch, test, config = census_encoded(rows)
    prepare_s = time.perf_counter() - t0
    cfg = TrainConfig(train_epochs=max_epochs, epochs_between_evals=1, batch_size=40)
    history = train(spec, batch, test, config, cfg, None, quiet=True, log=lambda _: None)
    history = history.state.history
    eval_s = 0.0
    for m in history:
        eval_s += m["eval_s"]
        if m["auc"] >= TARGET_AUC or m is history[-1]:
            break
    return {
        "target_auc": TARGET_AUC,
        "reached": m["auc"] >= TARGET_AUC,
        "epoch": m["epoch"],
        "auc": round(m["auc"], 4),
        "seconds": round(prepare_s + m["elapsed_s"] + eval_s, 2),
        "prepare_s": round(prepare_s, 3),
    }


# --------------------------------------------------------------------------- 3. peak RSS


def run_child(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` to completion: its wall and CPU seconds, peak RSS and stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout": text,
    }


def reference_run(train_epochs: int) -> dict[str, Any]:
    """``widedeep train`` (the census reference run) in a child process: wall time and RSS."""
    # torch.optim imports torch._dynamo at the first optimizer: ~100 MB any PyTorch run pays
    baseline = run_child([sys.executable, "-c", "import torch, torch._dynamo, widedeep.cli"])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "widedeep",
            "train",
            "--threads",
            "1",
            "--quiet",
            "--clean",
            "--model_dir",
            os.path.join(tmp, "model"),
            "--train_epochs",
            str(train_epochs),
        ]
        run = run_child(cmd)
    final = {}
    for line in run.pop("stdout").splitlines():  # the final evaluation table: "  name  value"
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("accuracy", "auc"):
            final[parts[0]] = float(parts[1])
    return {
        "command": "widedeep train --threads 1 --quiet --clean --model_dir TMP"
        + ("" if train_epochs == 40 else f" --train_epochs {train_epochs}"),
        "train_epochs": train_epochs,
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "import_only_rss_mb": baseline["peak_rss_mb"],
        **final,
    }


# --------------------------------------------------------------------------- 4. scaling


def scale_worker(times: int, batch_size: int, rows: int | None) -> dict[str, Any]:
    """In a fresh process: encode ``times`` x the census rows, train one epoch, report."""
    torch.set_num_threads(1)
    base, _ = census.load_census()
    if rows is not None:
        base = base.slice(0, rows)
    spec = census.census_spec().fit(base)
    config = ModelConfig.from_spec(spec, model_type="wide_deep")
    quiet = {"quiet": True, "log": lambda _: None}
    # warm up on a few rows: the first optimizer imports torch._dynamo (seconds, ~100 MB)
    train(
        spec,
        spec.transform(base.slice(0, 64)),
        None,
        config,
        TrainConfig(train_epochs=1),
        None,
        **quiet,
    )
    baseline_mb = _self_rss_mb()
    table = pa.concat_tables([base] * times).combine_chunks()
    t0 = time.perf_counter()
    batch = spec.transform(table, label=True)
    encode_s = time.perf_counter() - t0
    held = sum(t.nbytes for t in _tensors(batch))
    cfg = TrainConfig(train_epochs=1, batch_size=batch_size)
    t0 = time.perf_counter()
    train(spec, batch, None, config, cfg, None, **quiet)
    train_s = time.perf_counter() - t0
    peak_mb = _self_rss_mb()
    return {
        "times": times,
        "rows": table.num_rows,
        "encode_s": round(encode_s, 4),
        "encode_rows_per_s": round(table.num_rows / encode_s),
        "train_epoch_s": round(train_s, 3),
        "train_examples_per_s": round(table.num_rows / train_s),
        "table_mb": round(table.nbytes / 2**20, 1),
        "encoded_mb": round(held / 2**20, 1),
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": peak_mb,
        "rss_growth_mb": round(peak_mb - baseline_mb, 1),
    }


def scaling(scales: tuple[int, ...], batch_size: int, rows: int | None) -> list[dict[str, Any]]:
    out = []
    for times in scales:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_train",
            "--scale-worker",
            str(times),
            "--scale-batch-size",
            str(batch_size),
        ] + (["--rows", str(rows)] if rows else [])
        out.append(json.loads(run_child(cmd)["stdout"].strip().splitlines()[-1]))
    return out


def _tensors(batch: Batch) -> list[torch.Tensor]:
    items = [
        batch.wide_ids,
        batch.wide_weights,
        *batch.embed_ids,
        *batch.embed_weights,
        batch.indicator_ids,
        batch.indicator_weights,
        batch.dense,
        batch.label,
        batch.weight,
    ]
    return [t for t in items if t is not None]


def _self_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --------------------------------------------------------------------------- report


def run(quick: bool = False) -> dict[str, Any]:
    """All four measurements; ``quick`` is a smoke run on a few hundred rows (seconds)."""
    torch.set_num_threads(1)
    rows = 400 if quick else None
    result: dict[str, Any] = {
        "threads": 1,
        "throughput": throughput(
            rounds=1 if quick else 3, seconds=0.02 if quick else 1.0, rows=rows
        ),
        "time_to_quality": time_to_quality(max_epochs=2 if quick else 40, rows=rows),
        "reference_run": reference_run(train_epochs=1 if quick else 40),
        "scaling": scaling((1, 2) if quick else SCALES, SCALE_BATCH_SIZE, rows),
    }
    result["tables"] = tables(result)
    result["checks"] = checks(result)
    return result


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    tp = {
        "title": "Training throughput, census wide_deep, 1 thread (examples/s, median of "
        f"{r['throughput'][0]['rounds']} alternating rounds)",
        "columns": [
            "batch",
            "widedeep (FTRL + AdaGrad)",
            "floor: AdaGrad",
            "floor: FTRL + AdaGrad",
            "widedeep / floor AdaGrad",
            "widedeep / floor FTRL",
        ],
        "rows": [
            [
                t["batch_size"],
                t["examples_per_s"]["widedeep"],
                t["examples_per_s"]["floor_adagrad"],
                t["examples_per_s"]["floor_ftrl"],
                t["ratio_vs_floor_adagrad"],
                t["ratio_vs_floor_ftrl"],
            ]
            for t in r["throughput"]
        ],
        "note": "floor: hand-written loop over the same encoded tensors, same parameters, "
        "slices of the tensors permuted once per epoch, fused AdaGrad.",
    }
    q, ref = r["time_to_quality"], r["reference_run"]
    quality = {
        "title": "Census reference run, 1 thread",
        "columns": ["measure", "value"],
        "rows": [
            [
                f"time to AUC >= {q['target_auc']} (read + encode + train + eval every epoch)",
                f"{q['seconds']} s (epoch {q['epoch']}, AUC {q['auc']})"
                if q["reached"]
                else f"not reached in {q['epoch']} epochs (AUC {q['auc']})",
            ],
            [f"whole run, `{ref['command']}`", f"{ref['wall_s']} s ({ref['cpu_s']} s of CPU)"],
            ["final accuracy / AUC", f"{ref.get('accuracy')} / {ref.get('auc')}"],
            ["peak RSS of that run", f"{ref['peak_rss_mb']} MB"],
            [
                "peak RSS of a process that only imports torch, torch._dynamo, widedeep",
                f"{ref['import_only_rss_mb']} MB",
            ],
        ],
    }
    scale = {
        "title": f"Scaling: census rows replicated, encode + one epoch at batch {SCALE_BATCH_SIZE}",
        "columns": [
            "rows",
            "encode s",
            "encode rows/s",
            "train epoch s",
            "train examples/s",
            "Arrow table MB",
            "encoded MB",
            "peak RSS growth MB",
        ],
        "rows": [
            [
                s["rows"],
                s["encode_s"],
                s["encode_rows_per_s"],
                s["train_epoch_s"],
                s["train_examples_per_s"],
                s["table_mb"],
                s["encoded_mb"],
                s["rss_growth_mb"],
            ]
            for s in r["scaling"]
        ],
        "note": "each size in a fresh process; RSS growth = peak RSS minus the RSS after "
        f"imports and a warm-up ({r['scaling'][0]['baseline_rss_mb']} MB).",
    }
    return [tp, quality, scale]


def checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in r["throughput"]:
        target = 0.8 if t["batch_size"] < 1024 else 0.9
        if t["batch_size"] in (40, 1024, 4096):
            out.append(
                {
                    "what": f"training widedeep / floor at batch {t['batch_size']}",
                    "measured": t["ratio_vs_floor_adagrad"],
                    "target": f">= {target}",
                    "ok": t["ratio_vs_floor_adagrad"] >= target,
                }
            )
    q = r["time_to_quality"]
    out.append(
        {
            "what": f"reaches AUC >= {q['target_auc']} on adult.test",
            "measured": f"{q['seconds']} s" if q["reached"] else "no",
            "target": "yes",
            "ok": q["reached"],
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--scale-batch-size", type=int, default=SCALE_BATCH_SIZE, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker, args.scale_batch_size, args.rows)))
        return 0
    from benchmarks.report import render_tables

    result = run(args.quick)
    print(render_tables(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
