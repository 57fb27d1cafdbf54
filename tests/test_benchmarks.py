"""The benchmark entry point runs end to end on tiny sizes (no timing is asserted anywhere)."""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import types

import pytest
import torch

from benchmarks import __main__ as entry
from benchmarks import bench_movielens, bench_quality, bench_tf, bench_train
from widedeep.datasets.census import census_spec, load_census
from widedeep.model import ModelConfig, WideDeep


def test_quick_run_writes_report(tmp_path):
    code = entry.main(["--quick", "--only", "train,encode", "--out-dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    train = report["suites"]["train"]
    assert [t["batch_size"] for t in train["throughput"]] == list(bench_train.BATCH_SIZES)
    for t in train["throughput"]:
        rates = t["examples_per_s"]
        assert min(rates.values()) > 0
        assert t["ratio_vs_floor_adagrad"] == pytest.approx(
            rates["widedeep"] / rates["floor_adagrad"], abs=2e-3
        )
    # quick mode scales 400 census rows by 1 and 2, each size encoded in full
    assert [s["rows"] for s in train["scaling"]] == [400, 800]
    assert train["scaling"][1]["encoded_mb"] >= train["scaling"][0]["encoded_mb"]
    assert 0 < train["reference_run"]["accuracy"] <= 1
    assert train["reference_run"]["peak_rss_mb"] > 0
    assert train["time_to_quality"]["epoch"] <= 2  # quick: at most two epochs
    # a suite whose script is absent, or has no run(quick), is skipped with the reason
    encode = report["suites"]["encode"]
    assert "skipped" in encode or "tables" in encode
    md = (tmp_path / "report.md").read_text()
    assert report["date"] in md and "| batch |" in md


def test_quick_run_of_the_other_suites(tmp_path):
    suites = "encode,predict,serve,scale,bad_rows,movielens,recommend,quality"
    assert entry.main(["--quick", "--only", suites, "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())["suites"]
    assert set(report) == set(suites.split(","))
    # recommend needs a trained MovieLens model: never in a smoke run
    assert "quick run" in report.pop("recommend")["skipped"]
    for name, result in report.items():
        assert result["tables"], name
        for t in result["tables"]:
            assert all(len(row) == len(t["columns"]) for row in t["rows"]), name
        for c in result.get("checks", []):
            assert set(c) == {"what", "measured", "target", "ok"} and isinstance(c["ok"], bool)
    assert report["encode"]["rows"] == 2000 and report["encode"]["bulk_rows_per_s"] > 0
    (encode_check,) = report["encode"]["checks"]
    assert encode_check["ok"] == (report["encode"]["bulk_rows_per_s"] >= 1_000_000)
    # serve: one row per predict request, k candidates scored per rank-k request
    for r in report["serve"]["results"]:
        per_request = 1 if r["run"].startswith("predict") else int(r["run"][5:].split(",")[0])
        assert r["scores_per_s"] == pytest.approx(r["requests_per_s"] * per_request)
    stream = report["scale"]["stream"]
    assert [s["mode"] for s in stream] == ["memory", "stream"]
    assert all(s["rows"] == 2000 for s in stream)
    bad = report["bad_rows"]
    assert bad["rows"] == 2000 and bad["bad"]["skipped"] == 20  # every 100th row damaged
    assert report["movielens"]["this_run"] is None  # quick: the committed figures only
    md = (tmp_path / "report.md").read_text()
    assert "#### Quality" in md and "#### Scale" in md
    assert "Not measured in this run: recommend" in md


def test_quality_suite_renders_the_committed_study():
    result = bench_quality.run(quick=True)
    study = json.loads(bench_quality.RESULTS_JSON.read_text())["systems"]
    best = [r["auc"] for r in study["widedeep --preset best"]["runs"]]
    row = next(r for r in result["tables"][0]["rows"] if r[0] == "widedeep --preset best")
    assert row[3] == f"{statistics.fmean(best):.4f} ± {statistics.stdev(best):.4f}"
    auc_check = result["checks"][0]
    assert auc_check["ok"] == (statistics.fmean(best) >= 0.928)
    assert result["fresh_best_seed0"] is None


def test_movielens_suite_without_the_data_reads_committed_figures(tmp_path):
    result = bench_movielens.run(quick=False, data_dir=tmp_path / "ml-100k")
    assert result["this_run"] is None and "is absent" in result["tables"][0]["note"]
    summary = json.loads(bench_movielens.RESULTS_JSON.read_text())["summary"]
    committed = next(row for row in summary if row["model"] == "wide_deep")
    hr, ndcg = result["checks"]
    assert hr["measured"] == f"{committed['hr@10'][0]:.3f}"
    assert ndcg["ok"] == (committed["ndcg@10"][0] >= 0.11)


def test_missing_or_broken_suite_does_not_stop_the_others(monkeypatch):
    assert "not present" in entry.run_suite("bench_no_such_script", quick=True)["skipped"]

    broken = types.ModuleType("benchmarks.bench_broken")

    def run(quick: bool) -> dict:
        raise RuntimeError("boom")

    broken.run = run
    monkeypatch.setitem(sys.modules, "benchmarks.bench_broken", broken)
    assert entry.run_suite("bench_broken", quick=True) == {"error": "RuntimeError: boom"}

    monkeypatch.setitem(sys.modules, "benchmarks.bench_old", types.ModuleType("bench_old"))
    assert "no run(quick)" in entry.run_suite("bench_old", quick=True)["skipped"]
    other = types.ModuleType("bench_other")
    other.run = lambda data, seed: {}  # a run() of another shape is not called
    monkeypatch.setitem(sys.modules, "benchmarks.bench_other", other)
    assert "no run(quick)" in entry.run_suite("bench_other", quick=True)["skipped"]


def test_update_readme_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{entry.BEGIN}\nold table\n{entry.END}\n\n## After\n")
    entry.update_readme("new table\n", readme)
    assert readme.read_text() == f"# Title\n\n{entry.BEGIN}\nnew table\n{entry.END}\n\n## After\n"


def test_floor_is_the_same_model_as_widedeep():
    """Given WideDeep's weights, the hand-written floor computes the same logits."""
    train_table, _ = load_census()
    spec = census_spec().fit(train_table.slice(0, 300))
    batch = spec.transform(train_table.slice(0, 300))
    config = ModelConfig.from_spec(spec, model_type="wide_deep")
    torch.manual_seed(0)
    model, floor = WideDeep(config), bench_train.Floor(config)
    with torch.no_grad():
        model.wide.weight.normal_()
        model.wide.weight[0] = 0
        model.wide_bias.fill_(0.3)
        floor.wide.weight.copy_(model.wide.weight)
        floor.bias.copy_(model.wide_bias)
        floor.embedding.weight.copy_(model.embeddings[0].weight)
        # first layer: WideDeep reads [embedding, dense] and adds indicator rows; the floor
        # reads [embedding, dense, one-hot indicators]
        first = torch.cat([model.first.weight, model.indicator.weight[1:].T], dim=1)
        linears = [m for m in floor.mlp if isinstance(m, torch.nn.Linear)]
        linears[0].weight.copy_(first)
        linears[0].bias.copy_(model.first.bias)
        theirs = [m for m in model.rest if isinstance(m, torch.nn.Linear)]
        for mine, their in zip(linears[1:], theirs, strict=True):
            mine.weight.copy_(their.weight)
            mine.bias.copy_(their.bias)
        *inputs, _ = bench_train.floor_tensors(batch)
        torch.testing.assert_close(floor(*inputs), model(batch))


def test_tf_input_is_cleaned_as_the_example_did(tmp_path):
    raw = tmp_path / "adult.test.gz"
    with gzip.open(raw, "wt") as f:
        f.write("|1x3 Cross validator\n25, Private, 226802, 11th, <=50K.\n\n38, ?, 89814, >50K.\n")
    out = tmp_path / "adult.test"
    bench_tf.clean_copy(raw, out)
    assert out.read_text() == "25,Private,226802,11th,<=50K\n38,?,89814,>50K\n"


def test_tf_comparison_needs_four_times_fewer_cpu_seconds():
    train = {
        "reference_run": {"wall_s": 40.0, "cpu_s": 50.0, "accuracy": 0.85, "auc": 0.9},
        "throughput": [{"batch_size": 40, "examples_per_s": {"widedeep": 30000}}],
    }
    tf_run = {
        "tensorflow": "2.15.1",
        "date": "2026-12-04",
        "final": {"accuracy": 0.85, "auc": 0.9},
        "total_s": 240.0,
        "cpu_s": 190.0,
        "train_examples_per_s": 7500,
    }
    (check,) = bench_tf.compare(tf_run, train)["checks"]
    assert not check["ok"] and check["measured"].startswith("3.8x")  # 190 / 50
    tf_run["cpu_s"] = 200.0
    assert bench_tf.compare(tf_run, train)["checks"][0]["ok"]


def test_tf_suite_is_skipped_without_results(tmp_path):
    assert "skipped" in bench_tf.run(quick=True, path=tmp_path / "tf.json")
