"""End-to-end latency and throughput of ``widedeep serve`` over loopback HTTP.

Starts the real server (``--workers`` processes) on a free 127.0.0.1 port and
drives it with a lean keep-alive HTTP/1.1 client (raw sockets; one epoll loop
for the concurrent runs), so the figures are the server's plus a minimal client's:

    predict-1     one client, one census row per request             p50 / p99
    rank-100      8 concurrent clients, 100 candidates per request   p50 / p99, scores/s
    rank-1000     8 concurrent clients, 1000 candidates (saturation) scores/s

Every run is bounded by a request count and by ``--seconds``.  The client runs on
the same machine, so it takes CPU from the server; a shared machine adds noise.

    python benchmarks/bench_serve.py [--model EXPORT_BASE] [--workers 2] [--out serve.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
ITEM_KEYS = ("occupation", "education", "education_num")


def census_export(workdir: Path, epochs: int = 2) -> Path:
    """A census model trained for ``epochs`` (a few seconds), exported under ``workdir/exp``."""
    from widedeep.cli import main

    with contextlib.redirect_stdout(sys.stderr):  # the training summary is not our output
        code = main(["train", "--train_epochs", str(epochs), "--quiet", "--threads", "1",
                     "--model_dir", str(workdir / "model"),
                     "--export_dir", str(workdir / "exp")])  # fmt: skip
    assert code == 0
    return workdir / "exp"


def request(path: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the server closes the connection) of a response
    head: a worker holding more than its share of connections closes one after answering,
    and the client reconnects, as HTTP clients do."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length"))
    return status, length, b"connection: close" in head.lower()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def blocking_run(port: int, data: bytes, n: int, seconds: float) -> list[float]:
    """One client on a blocking socket: the least client overhead per request."""
    sock = connect(port)
    times, buf, deadline = [], b"", time.perf_counter() + seconds
    while len(times) < n and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        sock.sendall(data)
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, buf = buf.split(b"\r\n\r\n", 1)
        status, length, close = parse_head(head)
        while len(buf) < length:
            buf += sock.recv(65536)
        buf = buf[length:]
        times.append(time.perf_counter() - t0)
        assert status == 200, status
        if close:
            sock.close()
            sock, buf = connect(port), b""
    sock.close()
    return times


class _Connection:
    """One keep-alive client connection of :func:`concurrent_run`."""

    def __init__(self, port: int, times: list[float]) -> None:
        self.port, self.times = port, times
        self.sock, self.buf, self.t0 = connect(port), b"", 0.0
        self.asked_pid = self.sampled = False  # the mid-run /healthz: in flight, done

    def send(self, payload: bytes) -> None:
        self.t0 = time.perf_counter()
        self.sock.sendall(payload)

    def response(self) -> tuple[int, bytes] | None:
        """Read what arrived; (status, body) once a whole response is in, else None."""
        self.buf += self.sock.recv(1 << 20)
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return None
        status, length, close = parse_head(head)
        if len(rest) < length:
            return None
        self.buf = rest[length:]
        if close:  # a worker over its share of connections: reconnect, as HTTP clients do
            self.sock.close()
            self.sock, self.buf = connect(self.port), b""
        return status, rest[:length]


def concurrent_run(
    port: int, data: bytes, clients: int, n: int, seconds: float
) -> tuple[list[float], float, list[int]]:
    """``clients`` keep-alive connections, each sending its next request when the last is
    answered, from one thread on an epoll loop (so the load generator takes as little of
    the shared cores as it can); returns latencies, wall time and the worker pid each
    connection was on mid-run.  Bounded by ``n`` requests per connection and ``seconds``."""
    health = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    start = time.perf_counter()
    deadline, halfway = start + seconds, start + seconds / 2
    per_client: list[list[float]] = [[] for _ in range(clients)]
    pids: list[int] = []
    selector = selectors.DefaultSelector()
    for times in per_client:
        c = _Connection(port, times)
        selector.register(c.sock, selectors.EVENT_READ, c)
        c.send(data)
    open_ = clients
    while open_:
        for key, _ in selector.select():
            c = key.data
            sock = c.sock
            answer = c.response()
            if answer is None:
                continue
            status, body = answer
            assert status == 200, (status, body)
            now = time.perf_counter()
            if c.asked_pid:  # the mid-run /healthz, not timed
                pids.append(json.loads(body)["pid"])
            else:
                c.times.append(now - c.t0)
            if c.sock is not sock:  # reconnected
                selector.unregister(sock)
                selector.register(c.sock, selectors.EVENT_READ, c)
            if len(c.times) >= n or now > deadline:
                selector.unregister(c.sock)
                c.sock.close()
                open_ -= 1
                continue
            c.asked_pid = not c.sampled and (len(c.times) >= n // 2 or now > halfway)
            c.sampled = c.sampled or c.asked_pid
            c.send(health if c.asked_pid else data)
    selector.close()
    return [t for times in per_client for t in times], time.perf_counter() - start, pids


def start_server(
    model: Path, workers: int, http: str = "httptools", loop: str = "uvloop"
) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "widedeep", "serve", "--model", str(model), "--port", str(port),
           "--workers", str(workers), "--poll_seconds", "0", "--http", http,
           "--loop", loop]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # printed once every worker listens
    if "widedeep serve:" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, port


def descendants(pid: int) -> list[int]:
    """The worker processes and the fork server that started them."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        children = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        found += children
        todo += children
    return found


def server_cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time (user + system) the server's worker processes have used so far: unlike
    wall-clock latency, barely affected by other jobs on a shared machine."""
    ticks = 0
    for pid in descendants(proc.pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def summary(
    name: str, times: list[float], wall: float, rows_per_request: int, cpu: float
) -> dict:
    ms = np.asarray(times) * 1e3
    return {
        "run": name,
        "server_cpu_ms_per_request": cpu / len(times) * 1e3,
        "requests": len(times),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "requests_per_s": len(times) / wall,
        "scores_per_s": len(times) * rows_per_request / wall,
        # what a core given wholly to the server would score: load-independent capacity
        "scores_per_server_cpu_s": len(times) * rows_per_request / cpu if cpu else None,
    }


def measure(
    model: Path | None,
    workers: int,
    clients: int = 8,
    requests: int = 3000,
    seconds: float = 15.0,
    stacks: bool = False,
    warmup: tuple[int, float] = (200, 5.0),
    train_epochs: int = 2,
) -> list[dict]:
    """The three runs (and with ``stacks`` the HTTP stacks alone) against a server started
    here; ``model`` None trains and exports a census model first. Each run is bounded by
    ``requests`` and ``seconds``, each warm-up by ``warmup`` (requests, seconds)."""

    from widedeep.datasets import census

    _, test = census.load_census()
    rows = test.slice(0, 1001).drop(["income_bracket"]).to_pylist()
    context = {k: v for k, v in rows[0].items() if k not in ITEM_KEYS}
    items = [{k: r[k] for k in ITEM_KEYS} for r in rows[1:]]

    with tempfile.TemporaryDirectory() as tmp:
        model = model if model else census_export(Path(tmp), train_epochs)
        predict = request("/v1/models/default:predict", {"instances": rows[:1]})
        status = f"GET /v1/models/default HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        rank = {k: request("/v1/models/default:rank",
                           {"context": context, "candidates": items[:k], "k": 10})
                for k in (100, 1000)}  # fmt: skip
        results = []

        def single(proc, port, data: bytes, name: str) -> None:
            blocking_run(port, data, *warmup)
            cpu = server_cpu_seconds(proc)
            times = blocking_run(port, data, requests, seconds)
            results.append(summary(name, times, sum(times), 1, server_cpu_seconds(proc) - cpu))

        proc, port = start_server(model, workers)
        try:
            single(proc, port, predict, "predict-1, 1 client")
            for k in (100, 1000):
                concurrent_run(port, rank[k], clients, *warmup)
                cpu = server_cpu_seconds(proc)
                times, wall, pids = concurrent_run(port, rank[k], clients, requests, seconds)
                cpu = server_cpu_seconds(proc) - cpu
                results.append(summary(f"rank-{k}, {clients} clients", times, wall, k, cpu))
                results[-1]["connections_per_worker"] = sorted(pids.count(p) for p in set(pids))
        finally:
            proc.terminate()
            proc.wait(30)
        if stacks:  # the HTTP stack alone (no model work), and the slower pure-Python one
            for http, loop in (("httptools", "uvloop"), ("h11", "asyncio")):
                proc, port = start_server(model, 1, http, loop)
                try:
                    single(proc, port, status, f"status, {http}+{loop}")
                    single(proc, port, predict, f"predict-1, {http}+{loop}")
                finally:
                    proc.terminate()
                    proc.wait(30)
    return results


def run(quick: bool = False) -> dict:
    """For ``python -m benchmarks``: each run bounded by 2,000 requests per client and 3 s
    (quick: 20 requests, 1 s, one worker), one worker per core, with issue 8's checks."""
    workers = 1 if quick else len(os.sched_getaffinity(0))
    bounds = {"requests": 20, "seconds": 1.0, "warmup": (5, 1.0), "train_epochs": 1}
    if not quick:
        bounds = {"requests": 2000, "seconds": 3.0, "warmup": (100, 1.0)}
    results = measure(None, workers, **bounds)
    by = {r["run"].split(",")[0]: r for r in results}
    one, r100, r1000 = by["predict-1"], by["rank-100"], by["rank-1000"]
    table = {
        "title": f"`widedeep serve`, census model, {workers} worker(s), loopback HTTP, "
        "keep-alive clients on the same machine",
        "columns": ["run", "requests", "p50 ms", "p99 ms", "requests/s", "scores/s",
                    "server CPU ms / request"],
        "rows": [[r["run"], r["requests"], r["p50_ms"], r["p99_ms"], round(r["requests_per_s"]),
                  round(r["scores_per_s"]), r["server_cpu_ms_per_request"]]
                 for r in results],
        "note": f"each run bounded by {bounds['requests']:,} requests per client and "
        f"{bounds['seconds']:g} s, after a warm-up; the clients run on the same cores as the "
        "server; rank-N scores N candidates and returns the top 10.",
    }  # fmt: skip

    def check(what: str, value: float, unit: str, target: float, at_most: bool = True) -> dict:
        shown = f"{value:,.0f}" if unit == "" else f"{value:.3g} {unit}"
        sign = "<=" if at_most else ">="
        return {
            "what": what,
            "measured": shown,
            "target": f"{sign} {target:,g}{' ' + unit if unit else ''}",
            "ok": value <= target if at_most else value >= target,
        }

    checks = [
        check("serve: predict one row p50 (1 client)", one["p50_ms"], "ms", 1),
        check("serve: predict one row p99 (1 client)", one["p99_ms"], "ms", 3),
        check("serve: rank 100 candidates p50 (8 clients)", r100["p50_ms"], "ms", 3),
        check("serve: rank 100 candidates p99 (8 clients)", r100["p99_ms"], "ms", 10),
        check("serve: candidate scores/s at saturation (rank-1000)", r1000["scores_per_s"], "",
              200_000, at_most=False),
    ]  # fmt: skip
    return {"workers": workers, "results": results, "tables": [table], "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="export base or export (default: train a census one)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000, help="per run (all clients)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per run, at most")
    parser.add_argument("--stacks", action="store_true", help="also compare HTTP stacks")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    model = Path(args.model) if args.model else None
    results = measure(model, args.workers, args.clients, args.requests, args.seconds, args.stacks)

    print(f"widedeep serve, census model, {args.workers} workers, loopback, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'run':<28}{'requests':>9}{'p50 ms':>8}{'p99 ms':>8}{'req/s':>8}{'scores/s':>10}"
          f"{'server CPU ms/req':>19}{'scores/CPU-s':>14}  connections/worker")  # fmt: skip
    for r in results:
        print(f"{r['run']:<28}{r['requests']:>9}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}"
              f"{r['requests_per_s']:>8.0f}{r['scores_per_s']:>10,.0f}"
              f"{r['server_cpu_ms_per_request']:>19.3f}"
              f"{r['scores_per_server_cpu_s'] or 0:>14,.0f}  "
              f"{r.get('connections_per_worker', '')}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"workers": args.workers, "results": results,
             "load_average": os.getloadavg()[0]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
