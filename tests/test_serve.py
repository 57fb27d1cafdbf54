"""``widedeep serve`` end to end: a real server (2 worker processes) on a free loopback port.

Expected scores come from the library's own ``Predictor`` on the same export, an
independent path from the HTTP one (JSON in, columns built by the server,
orjson out).  The hot-swap test runs last: it adds a newer export to the base.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("uvicorn")
pytest.importorskip("orjson")

from widedeep import artifact  # noqa: E402
from widedeep.cli import main  # noqa: E402
from widedeep.datasets import census  # noqa: E402
from widedeep.model import ModelConfig, WideDeep  # noqa: E402
from widedeep.predict import load  # noqa: E402

# rank_chunk 130: 300 candidates are scored on threads, in pieces of 130 and 40
LIMITS = {"max_body_bytes": 100_000, "max_instances": 50, "max_candidates": 400, "rank_chunk": 130}


def _export(base: Path, name: str, seed: int) -> Path:
    """A census export with random weights (serving does not care how they were learned)."""
    train, _ = census.load_census()
    spec = census.census_spec().fit(train.slice(0, 3000))
    torch.manual_seed(seed)
    model = WideDeep(ModelConfig.from_spec(spec, hidden_units=[16, 8]))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    artifact.write_model_dir(base / name, spec, model)
    return base / name


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    _, test = census.load_census()
    return test.slice(0, 400).drop(["income_bracket"]).to_pylist()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    _export(base, "1000", seed=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(base.parent / "server.log", "w")  # noqa: SIM115 - closed at teardown
    cmd = [sys.executable, "-m", "widedeep", "serve", "--model", str(base), "--port", str(port),
           "--workers", "2", "--poll_seconds", "0.2"]  # fmt: skip
    cmd += [f"--{k}={v}" for k, v in LIMITS.items()]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not _ready(port, workers=2):
        assert proc.poll() is None, (base.parent / "server.log").read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)
    yield {"port": port, "base": base, "proc": proc}
    proc.terminate()
    assert proc.wait(30) == 0
    log.close()


def _ready(port: int, workers: int) -> bool:
    try:
        status, text = _call(http.client.HTTPConnection("127.0.0.1", port), "GET", "/metrics")
    except OSError:
        return False
    return status == 200 and f"widedeep_workers {workers}\n" in text


def _call(conn, method: str, path: str, body=None) -> tuple[int, object]:
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    is_json = response.getheader("content-type") == "application/json"
    return response.status, json.loads(data) if is_json else data.decode()


@pytest.fixture
def conn(server):
    c = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    yield c
    c.close()


def test_predict_matches_the_library(server, conn, rows):
    expected = load(server["base"]).predict_proba(rows[:20])
    status, out = _call(conn, "POST", "/v1/models/default:predict", {"instances": rows[:20]})
    assert status == 200
    np.testing.assert_allclose(out["predictions"], expected, rtol=1e-5, atol=1e-7)
    status, out = _call(conn, "POST", "/v1/models/default:predict", {"instances": rows[3:4]})
    assert status == 200 and out["predictions"] == pytest.approx([expected[3]], rel=1e-5)


def test_model_status_metadata_and_health(server, conn):
    status, out = _call(conn, "GET", "/v1/models/default")
    assert status == 200
    assert out == {"model_version_status": [{"version": "1000", "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}}]}  # fmt: skip
    status, out = _call(conn, "GET", "/v1/models/default/versions/1000/metadata")
    assert status == 200 and out["model_spec"] == {"name": "default", "version": "1000"}
    assert out["metadata"]["inputs"] == census.census_spec().input_keys
    assert out["metadata"]["classes"] == ["<=50K", ">50K"]
    status, out = _call(conn, "GET", "/healthz")
    assert status == 200 and out["status"] == "ok" and out["model_version"] == "1000"


def _user_and_items(rows: list[dict], n: int) -> tuple[dict, list[dict]]:
    """A person as the context; occupations and educations as the candidates."""
    item_keys = ("occupation", "education", "education_num")
    context = {k: v for k, v in rows[0].items() if k not in item_keys}
    candidates = [{k: r[k] for k in item_keys} for r in rows[1 : n + 1]]
    return context, candidates


@pytest.mark.parametrize("n", [10, 100, 300])
def test_rank_returns_the_top_k_of_the_broadcast_rows(server, conn, rows, n):
    context, candidates = _user_and_items(rows, n)
    candidates[0]["age"] = 70  # a candidate's own value wins over the context's
    merged = [{**context, **c} for c in candidates]
    scores = load(server["base"]).predict_proba(merged)
    order = np.argsort(-scores, kind="stable")
    status, out = _call(conn, "POST", "/v1/models/default:rank",
                        {"context": context, "candidates": candidates, "k": 5})  # fmt: skip
    assert status == 200 and out["model_version"] == "1000"
    index = [r["index"] for r in out["ranking"]]
    got = np.array([r["score"] for r in out["ranking"]])
    # the five best scores, best first, each the score of the candidate named (candidates
    # repeat, so ties may come in either order)
    np.testing.assert_allclose(got, scores[order[:5]], rtol=1e-5)
    np.testing.assert_allclose(got, scores[index], rtol=1e-5)
    assert len(set(index)) == 5
    status, out = _call(conn, "POST", "/v1/models/default:rank",
                        {"context": context, "candidates": candidates, "k": 1000})  # fmt: skip
    assert status == 200 and sorted(r["index"] for r in out["ranking"]) == list(range(n))


def _bad_requests(rows: list[dict]) -> list[tuple[str, str, object, int, str]]:
    row = rows[0]
    predict, rank = "/v1/models/default:predict", "/v1/models/default:rank"
    context, candidates = _user_and_items(rows, 3)
    no_age = {k: v for k, v in row.items() if k != "age"}
    return [
        ("POST", predict, b'{"instances": [', 400, "not valid JSON"),
        ("POST", predict, b"", 400, "body is empty"),
        ("POST", predict, [row], 400, '{"instances"'),
        ("POST", predict, {"instances": row}, 400, "must be a list"),
        ("POST", predict, {"instances": []}, 400, "is empty"),
        ("POST", predict, {"instances": [row, no_age]}, 400, "instance 1 is missing"),
        ("POST", predict, {"instances": [{**row, "age": "old"}]}, 400, "'age'"),
        ("POST", predict, {"instances": [{**row, "age": [1, 2]}]}, 400, "'age'"),
        ("POST", predict, {"instances": [row, 7]}, 400, "instance 1 must be an object"),
        ("POST", predict, {"instances": [row] * 51}, 413, "limit of 50"),
        ("POST", predict, {"instances": [row] * 49 + ["x" * 100_000]}, 413, "--max_body_bytes"),
        ("POST", rank, {"candidates": candidates * 134, "context": context}, 413, "limit of 400"),
        ("POST", rank, {"candidates": [], "context": context}, 400, '"candidates" is empty'),
        ("POST", rank, {"candidates": candidates}, 400, "missing feature(s)"),
        ("POST", rank, {"candidates": candidates, "context": 3}, 400, '"context" must be'),
        ("POST", rank, {"candidates": candidates, "context": context, "k": 0}, 400, '"k"'),
        ("POST", rank, {"candidates": candidates, "context": context, "k": "2"}, 400, '"k"'),
        ("POST", "/v1/models/other:predict", {"instances": [row]}, 404, "'other' not found"),
        ("POST", "/v1/models/default/versions/9:predict", {"instances": [row]}, 404, "'9'"),
        ("POST", "/v1/models/default:explain", {"instances": [row]}, 404, "unknown method"),
        ("GET", "/v2/anything", None, 404, "no such path"),
        ("GET", predict, None, 405, "use POST"),
        ("POST", "/v1/models/default", b"{}", 405, "use GET"),
    ]  # fmt: skip


def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(server, conn, rows):
    expected = load(server["base"]).predict_proba(rows[:1])
    for method, path, body, code, message in _bad_requests(rows):
        status, out = _call(conn, method, path, body)
        assert status == code, (path, body if isinstance(body, bytes) else "", out)
        assert message in out["error"], out
        status, out = _call(conn, "POST", "/v1/models/default:predict", {"instances": rows[:1]})
        assert status == 200 and out["predictions"] == pytest.approx(expected, rel=1e-5)


def _metrics(conn) -> dict[str, float]:
    status, text = _call(conn, "GET", "/metrics")
    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) widedeep_\w+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_count_requests_errors_and_latency(server, conn, rows):
    before = _metrics(conn)
    for _ in range(3):
        _call(conn, "POST", "/v1/models/default:predict", {"instances": rows[:2]})
    _call(conn, "POST", "/v1/models/default:predict", b"{nope")
    after = _metrics(conn)

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta('widedeep_requests_total{endpoint="predict"}') == 4
    assert delta('widedeep_errors_total{kind="bad_json"}') == 1
    assert delta("widedeep_scores_total") == 6
    assert delta('widedeep_request_duration_seconds_count{endpoint="predict"}') == 4
    buckets = [v for k, v in after.items() if k.startswith(
        'widedeep_request_duration_seconds_bucket{endpoint="predict"')]  # fmt: skip
    assert buckets == sorted(buckets) and buckets[-1] == after[
        'widedeep_request_duration_seconds_count{endpoint="predict"}']  # fmt: skip
    assert after['widedeep_model_version{model="default",worker="0"}'] == 1000
    assert after['widedeep_model_version{model="default",worker="1"}'] == 1000
    assert after["widedeep_workers"] == 2


def test_keep_alive_connections_end_evenly_spread_over_the_workers(server):
    """The kernel hashes each connection to a worker, so 8 long-lived connections often
    split unevenly (5/3, 6/2, ...): a worker holding more than half closes a connection
    after answering on it, the client reconnects (http.client does so by itself) and the
    kernel hashes it again, until each worker holds 4 and the connections stay put."""

    def ask_each(conns: list) -> tuple[list[int], int]:
        pids, closed = [], 0
        for c in conns:
            c.request("GET", "/healthz")
            response = c.getresponse()
            pids.append(json.loads(response.read())["pid"])
            closed += response.will_close
        return pids, closed

    for _ in range(20):  # fresh connections until the hash splits them unevenly (3 in 4)
        conns = [http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
                 for _ in range(8)]  # fmt: skip
        for c in conns:
            c.connect()
        pids, closed = ask_each(conns)
        if sorted(Counter(pids).values()) != [4, 4]:
            break
        for c in conns:
            c.close()
    assert sorted(Counter(pids).values()) != [4, 4] and closed > 0  # uneven: it sheds some
    for _ in range(100):  # rounds: each connection asks once; bounded, normally a few
        pids, closed = ask_each(conns)
        if not closed:
            break
    assert closed == 0 and sorted(Counter(pids).values()) == [4, 4]
    for c, pid in zip(conns, pids):  # balanced: keep-alive stays on its worker
        assert _call(c, "GET", "/healthz")[1]["pid"] == pid
        c.close()
    text = _call(http.client.HTTPConnection("127.0.0.1", server["port"]), "GET", "/metrics")[1]
    assert re.search(r'widedeep_open_connections\{worker="0"\} \d+', text)


def test_refuses_a_bad_port_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--model", "x", "--port", "70000"])
    assert e.value.code == 2 and "port number" in capsys.readouterr().err


def test_refuses_a_missing_model_and_a_busy_port(server, tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--model", str(server["base"]), "--port", str(server["port"])]) == 2
    assert "already in use" in capsys.readouterr().err


def test_a_killed_worker_is_replaced(server, rows):
    port = server["port"]
    victim = _call(http.client.HTTPConnection("127.0.0.1", port), "GET", "/healthz")[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline, pids = time.monotonic() + 60, set()
    while len(pids - {victim}) < 2:  # new connections reach the survivor, then the new one
        assert time.monotonic() < deadline, f"no replacement worker; saw {pids}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status, out = _call(conn, "POST", "/v1/models/default:predict", {"instances": rows[:1]})
            assert status == 200
            pids.add(_call(conn, "GET", "/healthz")[1]["pid"])
        except ConnectionError:  # a connection queued on the killed worker's socket
            pass
        conn.close()
    assert server["proc"].poll() is None  # the supervisor itself carried on


def test_hot_swap_under_load_fails_no_request(server, rows):
    """Runs last: clients keep predicting while a newer export appears; every answer is
    a 200 carrying the old or the new model's scores, and the new model takes over."""
    port, base = server["port"], server["base"]
    instances = rows[:5]
    old = load(base / "1000").predict_proba(instances)
    stop, failures, answers = threading.Event(), [], []

    def client() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(5000):  # bounded; normally stopped much earlier
            if stop.is_set():
                break
            status, out = _call(c, "POST", "/v1/models/default:predict", {"instances": instances})
            if status != 200:
                failures.append(out)
            else:
                answers.append(out["predictions"])
        c.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    new = load(_export(base, "2000", seed=2)).predict_proba(instances)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + 60
    while any(_metrics(conn)[f'widedeep_model_version{{model="default",worker="{w}"}}'] != 2000
              for w in (0, 1)):  # fmt: skip
        assert time.monotonic() < deadline, "the new export was not picked up"
        time.sleep(0.1)
    time.sleep(0.3)  # some requests on the new model
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    matches_old = [np.allclose(a, old, rtol=1e-5) for a in answers]
    matches_new = [np.allclose(a, new, rtol=1e-5) for a in answers]
    assert all(o or n for o, n in zip(matches_old, matches_new))
    assert any(matches_old) and any(matches_new)
    assert _call(conn, "GET", "/v1/models/default")[1]["model_version_status"][0]["version"] == (
        "2000"
    )
    assert _metrics(conn)['widedeep_model_swaps_total{outcome="ok"}'] == 2  # one per worker
    conn.close()
    assert os.path.exists(base / "1000")  # the old export is untouched


def test_a_bounded_regression_serves_its_predicted_values(tmp_path, rows):
    """A regression with an output range answers :predict and :rank with the predicted value,
    inside the range, as the library's Predictor does (small requests take the NumPy path,
    large ones torch's)."""
    from widedeep.serve import App, Loaded, ModelSlot, ServeConfig
    from widedeep.transform import FeatureSpec, Label

    train, _ = census.load_census()
    wide, deep = census.build_model_columns()
    label = Label("hours_per_week", "regression", output_range=(1.0, 99.0))
    spec = FeatureSpec(wide, deep, label=label).fit(train.slice(0, 3000))
    torch.manual_seed(0)
    model = WideDeep(ModelConfig.from_spec(spec, hidden_units=[16, 8]))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # raw sums far outside (1, 99) for many rows
    artifact.write_model_dir(tmp_path / "1", spec, model)
    app = App(ServeConfig(str(tmp_path)), ModelSlot(tmp_path, log=lambda _: None))
    loaded = Loaded.load(tmp_path / "1")
    expected = load(tmp_path / "1").predict(rows)
    logits = load(tmp_path / "1").predict_logits(rows)[:, 0]
    assert ((logits < -5) | (logits > 5)).any() and ((expected > 1) & (expected < 99)).all()
    for n in (3, len(rows)):
        got = app._predict(loaded, {"instances": rows[:n]})["predictions"]
        np.testing.assert_allclose(got, expected[:n], rtol=1e-5)
    ranked = app._rank(loaded, {"context": {}, "candidates": rows[:20], "k": 3})["ranking"]
    best = np.argsort(-expected[:20], kind="stable")[:3]
    assert [r["index"] for r in ranked] == best.tolist()
    np.testing.assert_allclose([r["score"] for r in ranked], expected[best], rtol=1e-5)
    assert app._metadata(loaded)["metadata"]["output_range"] == [1.0, 99.0]
