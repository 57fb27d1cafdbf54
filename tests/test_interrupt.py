"""Interrupted runs: kill -9, Ctrl-C and SIGTERM never lose a checkpoint, and resuming ends
with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from widedeep import artifact
from widedeep.cli import main
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep
from widedeep.train import TrainConfig, TrainingInterrupted, train

EPOCHS, ROWS, BATCH = 10, 2000, 5
STEPS = EPOCHS * ROWS // BATCH


@pytest.fixture(scope="module")
def census_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adult")
    data = resources.files("widedeep.datasets") / "data"
    for name, rows in (("adult.data", ROWS), ("adult.test", 300)):
        with gzip.open(data / f"{name}.gz", "rt") as f:
            (out / name).write_text("".join(next(f) for _ in range(rows)))
    return out


def command(census_dir: Path, model_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "widedeep", "train", "--data_dir", str(census_dir),
        "--train_epochs", str(EPOCHS), "--epochs_between_evals", "1", "--batch_size", str(BATCH),
        "--hidden_units", "16,8", "--dropout", "0.1", "--threads", "1",
        "--model_dir", str(model_dir),
    ]  # fmt: skip


def final_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Weights and optimizer state (FTRL and AdaGrad accumulators, RNG) of the last checkpoint."""
    ckpt = artifact.latest_checkpoint(model_dir)
    assert ckpt is not None and ckpt.name == f"ckpt-{STEPS:010d}"
    model = load_file(str(ckpt / "model.safetensors"))
    optimizer = load_file(str(ckpt / "optimizer.safetensors"))
    return {**{f"model.{k}": v for k, v in model.items()}, **optimizer}


def wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_kill_9_then_ctrl_c_then_resume_gives_the_uninterrupted_weights(census_dir, tmp_path):
    assert main(command(census_dir, tmp_path / "straight")[3:] + ["--quiet"]) == 0  # in-process
    expected = final_tensors(tmp_path / "straight")
    assert any(".accum" in k for k in expected) and "rng" in expected  # FTRL state is saved

    model_dir = tmp_path / "interrupted"
    cmd = command(census_dir, model_dir)
    # 1. SIGKILL as soon as the first checkpoint exists: no handler runs, nothing is cleaned
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: (model_dir / artifact.POINTER).exists(), proc, "the first checkpoint")
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = artifact.latest_checkpoint(model_dir)
    artifact.read_model_dir(ckpt)  # loadable
    killed_at = json.loads((ckpt / "trainer.json").read_text())["global_step"]
    assert 0 < killed_at < STEPS

    # 2. resume, then Ctrl-C part-way through an epoch
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not any(line.startswith("epoch") for line in lines):  # an evaluation after resuming
        line = proc.stdout.readline()
        assert line, f"the resumed run ended early: {lines} {proc.stderr.read()}"
        lines.append(line)
    assert any(f"step {killed_at})" in line and "resuming" in line for line in lines)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "checkpoint written to" in err
    assert "to resume, run the same command again: widedeep train --data_dir" in err
    stopped = json.loads((artifact.latest_checkpoint(model_dir) / "trainer.json").read_text())
    assert killed_at < stopped["global_step"] < STEPS

    # 3. resume to the end (in-process: the same command line, one process start less)
    assert main(cmd[3:] + ["--quiet"]) == 0
    got = final_tensors(model_dir)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    # the log holds one line per evaluation, none lost or doubled by the interruptions
    epochs = [
        json.loads(x)["epoch"] for x in (model_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == list(range(1, EPOCHS + 1))
    assert not [p.name for p in model_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def small():
    train_table, test_table = load_census()
    train_table, test_table = train_table.slice(0, 400), test_table.slice(0, 200)
    spec = census_spec().fit(train_table)
    return spec, spec.transform(train_table), spec.transform(test_table)


@pytest.mark.parametrize("during", ["data", "optimizer"])
def test_sigterm_checkpoints_whole_steps_and_resumes_exactly(small, tmp_path, monkeypatch, during):
    """SIGTERM while a batch is read, or between the wide part's optimizer step and the
    deep part's: the step in flight completes, the checkpoint holds whole steps, and the
    resumed run ends with the uninterrupted weights (a step half applied before the
    checkpoint would be applied twice)."""
    from widedeep import optim
    from widedeep.train import InMemory

    spec, train_batch, eval_batch = small
    model_config = ModelConfig.from_spec(spec, hidden_units=[8])
    config = TrainConfig(train_epochs=2, epochs_between_evals=1, batch_size=10)
    straight = train(
        spec, train_batch, eval_batch, model_config, config, tmp_path / "a", quiet=True
    )
    steps_per_epoch = -(-len(train_batch) // 10)
    at = steps_per_epoch + 13  # global step (from 0) in flight when the signal comes

    class TermAt:  # a source that delivers SIGTERM to this process as it hands out a batch
        def batches_per_epoch(self) -> int:
            return steps_per_epoch

        def epoch(self, e, skip=0):
            for i, batch in enumerate(InMemory(train_batch, 10, 0).epoch(e, skip), start=skip):
                if during == "data" and e * steps_per_epoch + i == at:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

    if during == "optimizer":  # after the FTRL step, before AdaGrad's
        ftrl_step, calls = optim.Ftrl.step, []

        def step(self, closure=None):
            out = ftrl_step(self, closure)
            calls.append(1)
            if len(calls) == at + 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        monkeypatch.setattr(optim.Ftrl, "step", step)
    with pytest.raises(TrainingInterrupted, match="to resume, run the same command again"):
        train(spec, TermAt(), eval_batch, model_config, config, tmp_path / "b", quiet=True)
    monkeypatch.undo()
    saved = json.loads((artifact.latest_checkpoint(tmp_path / "b") / "trainer.json").read_text())
    assert saved["global_step"] == at + 1  # the step in flight, completed
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 14)
    resumed = train(spec, train_batch, eval_batch, model_config, config, tmp_path / "b", quiet=True)
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are removed after
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


# --------------------------------------------------------------------------- kill while writing


def _die_at(monkeypatch, target: str) -> None:
    """Make ``artifact.<target>`` end the process on the spot, as SIGKILL would (no cleanup)."""
    monkeypatch.setattr(artifact, target, lambda *a, **k: os._exit(9))


@pytest.mark.parametrize(
    "cut, survivor, kept",
    [
        ("_sha256", "ckpt-0000000002", "ckpt-0000000002"),  # files half-written in a temp dir
        # new directory renamed in, pointer not yet updated: the complete ckpt-3 is kept
        ("write_json", "ckpt-0000000002", "ckpt-0000000003"),
        ("write_model_dir", "ckpt-0000000001", "ckpt-0000000001"),  # same step: old moved aside
    ],
)
def test_kill_while_writing_a_checkpoint_leaves_the_last_one(
    tmp_path, monkeypatch, cut, survivor, kept
):
    spec = census_spec().fit(load_census()[1].slice(0, 50))
    model = WideDeep(ModelConfig.from_spec(spec, hidden_units=[4]))
    for step in (1, 2):
        artifact.write_checkpoint(tmp_path, f"ckpt-{step:010d}", spec=spec, model=model)
    name = "ckpt-0000000002" if cut == "write_model_dir" else "ckpt-0000000003"
    pid = os.fork()
    if pid == 0:  # the child writes the next checkpoint and dies part-way
        try:
            _die_at(monkeypatch, cut)
            artifact.write_checkpoint(tmp_path, name, spec=spec, model=model)
        finally:
            os._exit(1)  # not reached when the cut works
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    monkeypatch.undo()
    ckpt = artifact.latest_checkpoint(tmp_path)
    assert ckpt.name == survivor
    _, loaded, _, _ = artifact.read_model_dir(ckpt)
    for p, q in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # the next checkpoint cleans what the dead process left behind
    artifact.write_checkpoint(tmp_path, "ckpt-0000000004", spec=spec, model=model)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint.json", kept, "ckpt-0000000004"]


def test_without_evaluation_data_checkpoints_still_come_every_few_epochs(small, tmp_path):
    spec, train_batch, _ = small
    config = TrainConfig(train_epochs=2, epochs_between_evals=1, batch_size=100)
    train(spec, train_batch, None, ModelConfig.from_spec(spec, hidden_units=[4]), config, tmp_path)
    steps = len(train_batch) // 100
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        f"ckpt-{steps:010d}",  # after epoch 1: what a kill -9 in epoch 2 resumes from
        f"ckpt-{2 * steps:010d}",
    ]
