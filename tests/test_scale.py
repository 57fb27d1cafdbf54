"""Scale: streamed input, streaming fit, huge sparse wide tables, multi-process (DDP) training."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from widedeep import distributed, stream
from widedeep import feature_column as fc
from widedeep.batch import Batch
from widedeep.model import ModelConfig, WideDeep
from widedeep.optim import Ftrl
from widedeep.sketch import fit_stream
from widedeep.train import TrainConfig, train
from widedeep.transform import FeatureSpec, Label


def make_table(n: int, seed: int, lists: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {
        "cat": [f"c{k}" for k in rng.zipf(1.6, n) % 40],
        "city": [f"city{k}" for k in rng.integers(0, 300, n)],
        "x": np.round(rng.exponential(3.0, n), 2),
        "y": rng.normal(5.0, 2.0, n),
        "label": rng.integers(0, 2, n),
    }
    if lists:
        cols["tags"] = [[f"t{t}" for t in rng.integers(0, 20, k)] for k in rng.integers(0, 4, n)]
    return pa.table(cols)


def make_spec(lists: bool = False) -> FeatureSpec:
    city = fc.categorical_column_with_hash_bucket("city", 1000)
    wide = [
        fc.categorical_column_with_vocabulary_from_data("cat", min_count=3),
        city,
        fc.crossed_column(["cat", "city"], 5000),
    ]
    deep = [
        fc.numeric_column("x", normalizer="quantile", num_quantiles=4),
        fc.numeric_column("y", normalizer="standard"),
        fc.embedding_column(fc.categorical_column_with_hash_bucket("city", 50), 4),
    ]
    if lists:
        tags = fc.categorical_column_with_hash_bucket("tags", 100)
        wide.append(tags)
        deep.append(fc.embedding_column(tags, 3))
    return FeatureSpec(wide, deep, label=Label("label"))


def rows_of(batch: Batch) -> list[tuple]:
    """Each row as a hashable tuple of its encoded values (padding stripped)."""
    out = []
    for i in range(len(batch)):
        row = [tuple(v for v in batch.wide_ids[i].tolist() if v)]
        row += [tuple(v for v in e[i].tolist() if v) for e in batch.embed_ids]
        row += [tuple(np.round(batch.dense[i].numpy(), 5)), float(batch.label[i])]
        out.append(tuple(row))
    return out


def assert_batches_equal(a: Batch, b: Batch) -> None:
    for name in ("wide_ids", "dense", "label", "indicator_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for x, y in zip(a.embed_ids + a.embed_weights, b.embed_ids + b.embed_weights):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three Parquet shards (two row groups each) and two CSV shards of the same schema."""
    d = tmp_path_factory.mktemp("shards")
    tables = [make_table(n, seed) for seed, n in enumerate([300, 257, 401, 150, 222])]
    (d / "parquet").mkdir()
    (d / "csv").mkdir()
    for i, t in enumerate(tables[:3]):
        pq.write_table(t, d / "parquet" / f"part-{i}.parquet", row_group_size=160)
    for i, t in enumerate(tables[3:]):
        pacsv.write_csv(t, d / "csv" / f"part-{i}.csv")
    return d, tables


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_stream_gives_the_rows_of_reading_everything_at_once(shards, kind):
    d, tables = shards
    tables = tables[:3] if kind == "parquet" else tables[3:]
    whole = pa.concat_tables(tables)
    spec = make_spec().fit(whole)
    expected = spec.transform(whole)
    source = stream.StreamSource(spec, d / kind, 64, shuffle=False, chunk_rows=50)
    got = Batch.concat(list(source.epoch(0)))
    assert_batches_equal(got, expected)
    assert [len(b) for b in source.epoch(0)][:-1] == [64] * (len(whole) // 64)


def test_stream_reads_globs_and_file_lists(shards):
    d, tables = shards
    files = stream.expand_paths([str(d / "parquet" / "part-[02].parquet"), d / "csv"])
    names = ["part-0.parquet", "part-2.parquet", "part-0.csv", "part-1.csv"]
    assert [f.name for f in files] == names
    with pytest.raises(FileNotFoundError, match="no file matches"):
        stream.expand_paths(str(d / "nothing-*.parquet"))


def test_stream_of_lists_matches_in_memory(tmp_path):
    tables = [make_table(200, s, lists=True) for s in range(3)]
    for i, t in enumerate(tables):
        pq.write_table(t, tmp_path / f"p{i}.parquet", row_group_size=90)
    whole = pa.concat_tables(tables)
    spec = make_spec(lists=True).fit(whole)
    got = Batch.concat(list(stream.StreamSource(spec, tmp_path, 50, shuffle=False).epoch(0)))
    assert rows_of(got) == rows_of(spec.transform(whole))


def test_shuffled_epochs_are_permutations_deterministic_and_resumable(shards):
    d, tables = shards
    whole = pa.concat_tables(tables[:3])
    spec = make_spec().fit(whole)
    source = stream.StreamSource(spec, d / "parquet", 32, seed=7, shuffle_buffer=100, chunk_rows=40)
    e0, e1 = list(source.epoch(0)), list(source.epoch(1))
    assert sorted(rows_of(Batch.concat(e0))) == sorted(rows_of(spec.transform(whole)))
    assert rows_of(Batch.concat(e0)) != rows_of(Batch.concat(e1))  # reshuffled every epoch
    again = list(source.epoch(1))
    assert rows_of(Batch.concat(again)) == rows_of(Batch.concat(e1))  # same seed, same order
    resumed = list(source.epoch(1, skip=5))
    assert rows_of(Batch.concat(resumed)) == rows_of(Batch.concat(e1[5:]))


def test_memory_is_bounded_by_the_shuffle_buffer(tmp_path):
    table = make_table(5000, 3)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=500)
    spec = make_spec().fit(table)
    buffer, chunk = 400, 100  # the data are 12x the buffer
    source = stream.StreamSource(
        spec, tmp_path, 64, shuffle_buffer=buffer, chunk_rows=chunk, prefetch=2
    )
    rows = rows_of(Batch.concat(list(source.epoch(0))))
    assert sorted(rows) == sorted(rows_of(spec.transform(table)))
    assert source.peak_rows <= buffer + chunk
    assert source.peak_rows >= buffer  # it did fill up: rows were mixed across chunks


def test_ranks_read_disjoint_shares_that_cover_the_data(shards):
    d, tables = shards
    whole = pa.concat_tables(tables[:3])
    spec = make_spec().fit(whole)
    for world in (2, 7):  # 7 readers > 6 row groups: every unit is split by rows
        parts = []
        for rank in range(world):
            source = stream.StreamSource(spec, d / "parquet", 32, rank=rank, world=world)
            parts.append(rows_of(Batch.concat(list(source.epoch(3)))))
        assert sorted(r for p in parts for r in p) == sorted(rows_of(spec.transform(whole)))


def test_loader_processes_give_the_same_rows(shards):
    d, tables = shards
    whole = pa.concat_tables(tables[:3])
    spec = make_spec().fit(whole)
    source = stream.StreamSource(spec, d / "parquet", 32, seed=1, workers=2, shuffle_buffer=50)
    got = rows_of(Batch.concat(list(source.epoch(0))))
    assert sorted(got) == sorted(rows_of(spec.transform(whole)))
    assert got == rows_of(Batch.concat(list(source.epoch(0))))


# --------------------------------------------------------------------------- streaming fit


def test_fit_stream_equals_fit_when_exact(shards):
    _, tables = shards
    whole = pa.concat_tables(tables)
    expected = make_spec().fit(whole).state_
    got = fit_stream(make_spec(), (t.slice(i, 37) for t in tables for i in range(0, len(t), 37)))
    key = "numeric:y:standard"
    np.testing.assert_allclose(got.state_[key]["mean"], expected[key]["mean"], rtol=1e-12)
    np.testing.assert_allclose(got.state_[key]["std"], expected[key]["std"], rtol=1e-12)
    assert {k: v for k, v in got.state_.items() if k != key} == {
        k: v for k, v in expected.items() if k != key
    }


def test_fit_stream_switches_to_sketches_beyond_the_exact_limit():
    pytest.importorskip("datasketches")
    rng = np.random.default_rng(0)
    n = 40_000
    values = rng.lognormal(0, 1, n)
    common = [f"v{k}" for k in range(20)]  # 20 values each seen >= 500 times
    cats = np.where(rng.random(n) < 0.5, rng.choice(common, n), [f"rare{k}" for k in range(n)])
    table = pa.table({"x": values, "cat": cats})
    spec = FeatureSpec(
        [fc.categorical_column_with_vocabulary_from_data("cat", min_count=100)],
        [fc.numeric_column("x", normalizer="quantile", num_quantiles=10)],
    )
    fit_stream(spec, (table.slice(i, 1000) for i in range(0, n, 1000)), exact_limit=2000)
    assert sorted(spec.state_["vocabulary_from_data:cat"]["vocabulary"]) == sorted(common)
    boundaries = spec.state_["numeric:x:quantile10"]["boundaries"][0]
    exact = np.quantile(values, np.arange(1, 10) / 10)
    ranks = np.searchsorted(np.sort(values), boundaries) / n  # KLL: rank error well under 2 %
    np.testing.assert_allclose(ranks, np.arange(1, 10) / 10, atol=0.02)
    assert len(boundaries) == len(exact)


# --------------------------------------------------------------------------- huge sparse tables


def test_sparse_ftrl_on_a_huge_table_changes_only_touched_rows():
    rows = 10_000_000
    model = WideDeep(ModelConfig(model_type="wide", wide_dim=rows, sparse_wide=True))
    opt = Ftrl(model.wide_parameters(), lr=0.1)
    ids = torch.tensor([[5, 77, 9_999_999], [77, 123_456, 0]])
    batch = Batch(ids, None, [], [], torch.zeros(2, 0, dtype=torch.long), None, torch.zeros(2, 0))
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(batch)[:, 0], torch.tensor([1.0, 0.0]), reduction="sum"
        )
        loss.backward()
        assert model.wide.weight.grad.is_sparse
        opt.step()
    w = model.wide.weight.detach()[:, 0]
    changed = torch.nonzero(w).flatten().tolist()
    assert changed == [5, 77, 123_456, 9_999_999]
    accum = opt.state[model.wide.weight]["accum"][:, 0]
    assert torch.nonzero(accum != 0.1).flatten().tolist() == changed


# --------------------------------------------------------------------------- distributed


@pytest.mark.parametrize("world", [2, 3, 9])  # bit mask, modulo, sort by owner
def test_rows_split_by_owning_rank_stay_sorted(world):
    rows = torch.tensor([0, 1, 2, 5, 9, 10, 17, 18, 26, 1000003])
    values = torch.arange(len(rows), dtype=torch.float32)[:, None] * 2
    parts = distributed._split_by_owner(rows, values, world)
    assert len(parts) == world
    for owner, (r, v) in enumerate(parts):
        expected = [int(x) for x in rows if int(x) % world == owner]
        assert r.tolist() == expected
        assert v[:, 0].tolist() == [2.0 * rows.tolist().index(x) for x in expected]


def test_touched_rows_of_a_dense_gradient_are_its_nonzero_rows():
    grad = torch.zeros(6, 4)
    grad[1, 3] = 1.5
    grad[4] = torch.tensor([0.0, -2.0, 0.0, 0.0])
    grad[5, 0] = -0.0  # a negative zero adds nothing; sending it along is harmless
    p = torch.nn.Parameter(torch.zeros(6, 4))
    p.grad = grad
    rows, values = distributed._touched_rows(p)
    assert rows.tolist() == [1, 4, 5]
    assert torch.equal(values, grad[[1, 4, 5]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, data: str, out: str, batch_size: int) -> None:
    """One process of a gloo job (or the single reference process): train, save weights."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        distributed.use(distributed.Context(rank, world))
    table = pq.read_table(data)
    spec = make_spec().fit(table)
    batch = spec.transform(table)
    config = ModelConfig.from_spec(spec, hidden_units=[8, 4], sparse_wide=True)
    result = train(
        spec,
        batch,
        batch,
        config,
        TrainConfig(train_epochs=2, epochs_between_evals=2, batch_size=batch_size, seed=3),
        None,
        quiet=True,
    )
    tensors = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    tensors["auc"] = torch.tensor([result.metrics["auc"], result.metrics["average_loss"]])
    save_file(tensors, os.path.join(out, f"rank{rank}-of-{world}.safetensors"))
    if world > 1:
        distributed.shutdown()


@pytest.mark.parametrize(
    "world, exchange_min_rows, pack_min_bytes",
    [
        (2, None, None),  # as configured: the deep embedding all-reduced by DDP
        # 3 ranks (no power of two): the embedding's touched rows exchanged instead, and
        # the wide table FTRL's packed [weight | accum | linear] table
        (3, 1, 1),
    ],
)
def test_gloo_processes_train_like_one_process_at_the_global_batch(
    tmp_path, monkeypatch, world, exchange_min_rows, pack_min_bytes
):
    from widedeep import optim

    if exchange_min_rows is not None:  # forked processes inherit the patched modules
        monkeypatch.setattr(distributed, "EXCHANGE_MIN_ROWS", exchange_min_rows)
        monkeypatch.setattr(optim, "PACK_MIN_BYTES", pack_min_bytes)
    data = tmp_path / "train.parquet"
    pq.write_table(make_table(700, 11), data)
    port = _free_port()
    mp.start_processes(
        _run, args=(world, port, str(data), str(tmp_path), 32), nprocs=world, start_method="fork"
    )
    _run(0, 1, 0, str(data), str(tmp_path), 32 * world)
    ranks = [load_file(tmp_path / f"rank{r}-of-{world}.safetensors") for r in range(world)]
    single = load_file(tmp_path / "rank0-of-1.safetensors")
    assert ranks[0].keys() == single.keys()
    for k in single:
        for other in ranks[1:]:
            torch.testing.assert_close(other[k], ranks[0][k], rtol=0, atol=0)  # ranks agree
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-5, atol=1e-5)
    assert float(ranks[0]["wide.weight"].abs().sum()) > 0  # the sparse wide table did train


def _run_interrupted(rank, world, port, data, model_dir, out, term_at) -> None:
    """A 2-rank gloo job whose rank 1 (only) gets SIGTERM while handing out batch
    ``term_at`` of epoch 1 (``None``: no signal); saves the weights, or notes the stop."""
    from widedeep.train import TrainingInterrupted, as_source

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    distributed.use(distributed.Context(rank, world))
    table = pq.read_table(data)
    spec = make_spec().fit(table)
    source = as_source(spec.transform(table), 32, seed=3)

    class TermAt:
        def batches_per_epoch(self):
            return source.batches_per_epoch()

        def epoch(self, e, skip=0):
            for i, batch in enumerate(source.epoch(e, skip), start=skip):
                if rank == 1 and e == 1 and i == term_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

    config = ModelConfig.from_spec(spec, hidden_units=[8, 4], sparse_wide=True)
    try:
        result = train(
            spec, TermAt(), None, config,
            TrainConfig(train_epochs=2, epochs_between_evals=2, batch_size=32, seed=3),
            model_dir, quiet=True,
        )  # fmt: skip
        tensors = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(tensors, os.path.join(out, f"{os.path.basename(model_dir)}-rank{rank}.st"))
    except TrainingInterrupted:
        Path(out, f"stopped-rank{rank}").write_text("")
    distributed.shutdown()


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step_and_resumes(tmp_path):
    """SIGTERM reaching one rank only: every rank stops after the same whole step, rank 0's
    checkpoint holds it, and resuming ends with the uninterrupted run's weights."""
    from widedeep import artifact

    data = tmp_path / "train.parquet"
    pq.write_table(make_table(640, 12), data)  # 10 steps per epoch and rank

    def launch(model_dir, term_at=None):
        args = (2, _free_port(), str(data), str(tmp_path / model_dir), str(tmp_path), term_at)
        mp.start_processes(_run_interrupted, args=args, nprocs=2, start_method="fork")

    launch("straight")
    launch("resumed", term_at=4)
    assert (tmp_path / "stopped-rank0").exists() and (tmp_path / "stopped-rank1").exists()
    checkpoint = artifact.latest_checkpoint(tmp_path / "resumed")
    saved = json.loads((checkpoint / "trainer.json").read_text())
    # all ranks agree to stop at the next step boundary: before training the batch read
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 4)
    launch("resumed")
    for r in range(2):
        straight = load_file(tmp_path / f"straight-rank{r}.st")
        resumed = load_file(tmp_path / f"resumed-rank{r}.st")
        for k in straight:
            torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)


def _run_stream(rank, world, port, data, model_dir, epochs, out) -> None:
    """A gloo job training on streamed shards, each rank reading its own row groups."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    distributed.use(distributed.Context(rank, world))
    spec = make_spec()
    train_data, eval_data = stream.prepare(
        spec, os.path.join(data, "train"), os.path.join(data, "eval"), batch_size=40,
        stream=True, shuffle_buffer=100, log=lambda _: None,
    )  # fmt: skip
    config = ModelConfig.from_spec(spec, hidden_units=[8], sparse_wide=True)
    result = train(
        spec,
        train_data,
        eval_data,
        config,
        TrainConfig(train_epochs=epochs, epochs_between_evals=1, batch_size=40, seed=5),
        model_dir,
        quiet=True,
    )
    tensors = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    tensors["metrics"] = torch.tensor([result.metrics["auc"], result.metrics["average_loss"]])
    save_file(tensors, os.path.join(out, f"{os.path.basename(model_dir)}-rank{rank}.safetensors"))
    distributed.shutdown()


def test_streamed_ddp_run_checkpoints_once_resumes_and_evaluates_exactly(tmp_path):
    from widedeep import artifact
    from widedeep.train import evaluate

    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "eval").mkdir()
    for i in range(3):
        pq.write_table(make_table(300, 20 + i), data / "train" / f"{i}.parquet", row_group_size=100)
    pq.write_table(make_table(333, 30), data / "eval" / "0.parquet")  # one unit: split by rows

    def launch(model_dir, epochs):
        args = (2, _free_port(), str(data), str(tmp_path / model_dir), epochs, str(tmp_path))
        mp.start_processes(_run_stream, args=args, nprocs=2, start_method="fork")
        return [load_file(tmp_path / f"{model_dir}-rank{r}.safetensors") for r in range(2)]

    straight = launch("straight", 2)
    launch("resumed", 1)
    resumed = launch("resumed", 2)  # continues from the epoch-1 checkpoint
    for k in straight[0]:
        torch.testing.assert_close(straight[0][k], straight[1][k], rtol=0, atol=0)
        torch.testing.assert_close(resumed[0][k], straight[0][k], rtol=0, atol=0)
    checkpoints = sorted(p.name for p in (tmp_path / "straight").glob("ckpt-*"))
    assert len(checkpoints) == 2  # rank 0 alone wrote one per evaluation

    # metrics gathered over both ranks = one process scoring every eval row
    spec, model, _, _ = artifact.read_model_dir(tmp_path / "straight")
    eval_batch = spec.transform(pq.read_table(data / "eval" / "0.parquet"))
    single = evaluate(model, eval_batch, "binary", 40)
    np.testing.assert_allclose(
        straight[0]["metrics"].numpy(), [single["auc"], single["average_loss"]], rtol=1e-6
    )


def test_cli_synth_writes_deterministic_shards_and_trains_streamed(tmp_path):
    from widedeep.cli import main

    for name in ("a", "b"):
        argv = ["datasets", "synth", "--rows", "3000", "--eval-rows", "500"]
        assert main(argv + ["--rows-per-shard", "1000", "--out", str(tmp_path / name)]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    expected = ["eval/part-00000.parquet"] + [f"train/part-0000{i}.parquet" for i in range(3)]
    assert [str(f) for f in files] == expected
    for f in files:  # the same seed writes the same rows
        assert pq.read_table(tmp_path / "a" / f).equals(pq.read_table(tmp_path / "b" / f))
    table = pq.read_table(tmp_path / "a" / "train")
    assert table.num_rows == 3000 and len(table.column_names) == 13 + 26 + 2
    assert 0.05 < np.mean(table.column("clicked").to_numpy()) < 0.95

    d = tmp_path / "a"
    argv = ["train", "--spec", str(d / "spec.yaml"), "--train", str(d / "train"), "--eval"]
    argv += [str(d / "eval"), "--stream", "on", "--model-type", "deep", "--train-epochs", "1"]
    argv += ["--batch-size", "256", "--model-dir", str(tmp_path / "m"), "--quiet"]
    assert main(argv) == 0
    metrics = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").open()]
    assert metrics[-1]["global_step"] == 12  # ceil(3000 / 256) batches streamed
    # `evaluate` reuses the recorded eval data: here a directory of shards
    assert main(["evaluate", "--model", str(tmp_path / "m")]) == 0
