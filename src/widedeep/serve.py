"""HTTP serving: TensorFlow Serving's REST predict API, candidate ranking and hot model swaps.

``widedeep serve --model EXPORT_BASE`` serves the newest export under the base
directory (or the one export, or training model_dir, it is given).  The API::

    POST /v1/models/<name>:predict   {"instances": [{raw features}, ...]} -> {"predictions": [...]}
    POST /v1/models/<name>:rank      {"context": {...}, "candidates": [{...}, ...], "k": 10}
                                     -> {"ranking": [{"index": i, "score": s}, ...]}
    GET  /v1/models/<name>           version and state, as TensorFlow Serving reports them
    GET  /v1/models/<name>/metadata  the raw features the model reads, its head and classes
    GET  /healthz, GET /metrics      liveness; Prometheus text

``/v1/models/<name>/versions/<v>...`` addresses a version explicitly (404 unless
it is the loaded one).

How it is fast: a supervisor spawns one worker process per core; each binds its
own ``SO_REUSEPORT`` socket on the same port, so the kernel spreads connections
over the workers by a hash of the address pair.  (A pre-fork server's single
shared socket tends to hand every long-lived keep-alive connection to the one
worker that happens to be awake.)  A hash splits a few connections unevenly, so
a worker holding more than an even share closes one after answering on it and
the client's reconnect is hashed again.  Each worker is a plain ASGI app on
uvicorn with httptools + uvloop and orjson, scoring inline on its event loop
with one torch (and BLAS) thread: for sub-millisecond work a hop to a thread
pool costs more than it saves.  A ranking request's context features are
encoded once for all its candidates (``FeatureSpec.transform_candidates``);
only candidate lists longer than ``rank_chunk`` are split across threads, as
the paper's serving system does.

Hot swap: a background thread per worker polls the base directory; when the
newest export changes it loads and checks it off the request path, scores one
recent request with it, then replaces one reference.  A request holds the
model it started with until it finishes, so none fails across a swap.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifact
from . import feature_column as fc
from .batch import Batch
from .heads import outputs_numpy
from .predict import Predictor
from .predict import load as load_predictor
from .serve_metrics import Metrics, shared_size
from .transform import FAST_PATH_MAX_ROWS

try:  # the ``serve`` extra; checked with a clear message in ``require_serve_extra``
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None


@dataclass(frozen=True)
class ServeConfig:
    """What ``widedeep serve`` was asked for; plain values, so it crosses into workers."""

    model: str
    model_name: str = "default"
    host: str = "127.0.0.1"
    port: int = 8501
    workers: int = 0  # 0: one per available core
    max_body_bytes: int = 8 << 20
    max_instances: int = 10_000
    max_candidates: int = 10_000
    rank_chunk: int = 2048  # longer candidate lists are scored in pieces on several threads
    rank_threads: int = 2
    poll_seconds: float = 2.0  # 0: never look for a newer export
    http: str = "httptools"  # uvicorn's HTTP parser: httptools (C) or h11 (pure Python)
    loop: str = "uvloop"  # event loop: uvloop (libuv) or asyncio

    def n_workers(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


class RequestError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.endpoint = "other"  # set once the route is known, for the metrics


def require_serve_extra() -> None:
    missing = []
    for name in ("uvicorn", "httptools", "uvloop", "orjson", "threadpoolctl"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RuntimeError(
            f"widedeep serve needs {', '.join(missing)}: pip install 'widedeep[serve]'"
        )


# --------------------------------------------------------------------------- the model slot


@dataclass(frozen=True)
class Loaded:
    """One loaded export: immutable, so a request can keep using it across a swap."""

    predictor: Predictor
    path: Path
    version: str
    input_keys: tuple[str, ...]
    loaded_at: float

    @classmethod
    def load(cls, path: Path) -> Loaded:
        predictor = load_predictor(path)
        predictor.small_batch = FAST_PATH_MAX_ROWS  # workers run BLAS on one thread
        _warm_up(predictor)
        return cls(
            predictor, Path(predictor.path), Path(predictor.path).name,
            tuple(predictor.spec.input_keys), time.time(),
        )  # fmt: skip


def _warm_up(predictor: Predictor) -> None:
    """Score one made-up row, so the first real request does not pay for lazy initialisation
    (hundreds of milliseconds in torch and Arrow's compute kernels)."""
    row: dict[str, Any] = {}
    for column in predictor.spec.columns:
        if isinstance(column, fc.NumericColumn):
            row[column.key] = 0.0 if column.dimension == 1 else [0.0] * column.dimension
        elif isinstance(column, fc.IdentityColumn):
            row[column.key] = 0
        elif isinstance(column, fc.WeightedCategoricalColumn):
            row[column.weight_feature_key] = 1.0
    row.update({k: "?" for k in predictor.spec.input_keys if k not in row})
    try:
        for _ in range(2):
            predictor.predict_proba([row])
    except Exception:  # noqa: BLE001 - only a warm-up; real rows still get scored or refused
        pass


class ModelSlot:
    """The model being served, replaced atomically when a newer export appears."""

    def __init__(self, source: str | Path, log: Callable[[str], None] = print) -> None:
        self.source = Path(source)
        self.log = log
        self.current = Loaded.load(artifact.resolve(self.source))
        self.sample: list[dict] | None = None  # a recent valid request, to warm a new model
        self.on_swap: Callable[[Loaded | None], None] = lambda loaded: None
        self._failed: tuple[Path, float] | None = None
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the newest model under the source if it is not the one served; True if swapped.

        Serves whatever is newest, like TensorFlow Serving's "latest" policy: deleting
        a bad export rolls back to the previous one.
        """
        try:
            newest = artifact.resolve(self.source)
        except artifact.ModelFileError:
            return False  # the base is being rewritten; keep serving what is loaded
        if newest == self.current.path:
            return False
        stamp = _mtime(newest)
        if self._failed == (newest, stamp):
            return False  # already reported; retry only once the directory changes
        try:
            loaded = Loaded.load(newest)
            if self.sample is not None and loaded.input_keys == self.current.input_keys:
                loaded.predictor.predict_proba(self.sample)  # warm it on real traffic
        except Exception as e:  # noqa: BLE001 - any failure keeps the old model serving
            self._failed = (newest, stamp)
            self.log(f"widedeep serve: not swapping to {newest}: {e}; still serving "
                     f"version {self.current.version}")  # fmt: skip
            self.on_swap(None)
            return False
        old, self.current = self.current, loaded
        self.log(f"widedeep serve: version {old.version} -> {loaded.version} ({newest})")
        self.on_swap(loaded)
        return True

    def poll(self, seconds: float) -> threading.Thread:
        def run() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - the poller must outlive any one failure
                    self.log("widedeep serve: model poller error:\n" + traceback.format_exc())

        thread = threading.Thread(target=run, name="widedeep-model-poller", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def _mtime(path: Path) -> float:
    try:
        return (path / "manifest.json").stat().st_mtime
    except OSError:
        return 0.0


# --------------------------------------------------------------------------- the ASGI app

_ROUTE = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([^/:]+))?(?:(/metadata)|:(\w+))?$")
_JSON = [(b"content-type", b"application/json")]
_CLOSE = [(b"content-type", b"application/json"), (b"connection", b"close")]
_TEXT = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class App:
    """The ASGI application of one worker process."""

    def __init__(
        self, config: ServeConfig, slot: ModelSlot, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.slot = slot
        self.metrics = metrics or Metrics()
        self.metrics.set_version(slot.current.version)
        self.pool = ThreadPoolExecutor(config.rank_threads, thread_name_prefix="widedeep-rank")
        # this worker's open connections (set by the worker once its server exists)
        self.connections: Callable[[], int] | None = None

        def swapped(loaded: Loaded | None) -> None:
            self.metrics.swapped(loaded is not None)
            if loaded is not None:
                self.metrics.set_version(loaded.version)

        slot.on_swap = swapped

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        endpoint, error = "other", None
        try:
            endpoint, status, headers, body = await self._handle(scope, receive)
        except RequestError as e:
            error, status = e.kind, e.status
            headers = _CLOSE if status == 413 else _JSON  # don't read an oversized body
            body = orjson.dumps({"error": e.message})
            endpoint = e.endpoint
        except Exception:  # noqa: BLE001 - a server fault answers 500 and the worker goes on
            traceback.print_exc(file=sys.stderr)
            error, status, headers = "internal", 500, _JSON
            body = orjson.dumps({"error": "internal server error; see the server log"})
        closing = headers is _CLOSE
        headers = [*headers, (b"content-length", str(len(body)).encode())]  # not chunked
        if not closing and self.connections and self.metrics.over_share(self.connections()):
            # the kernel spreads connections by a hash, so a few long-lived ones can pile up
            # on one worker while another idles: close one after its answer, and the
            # client's reconnect is spread again, until the workers hold even shares
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(endpoint, time.perf_counter() - start, error)

    async def _handle(self, scope: dict, receive: Callable) -> tuple[str, int, list, bytes]:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            _allow(method, "GET", "healthz")
            loaded = self.slot.current
            return "healthz", 200, _JSON, orjson.dumps(
                {"status": "ok", "model_version": loaded.version,
                 "worker": self.metrics.worker, "pid": os.getpid()}
            )  # fmt: skip
        if path == "/metrics":
            _allow(method, "GET", "metrics")
            text = self.metrics.render(self.config.model_name, self.slot.current.version)
            return "metrics", 200, _TEXT, text.encode()
        match = _ROUTE.match(path)
        if match is None:
            raise RequestError(404, "not_found", f"no such path {path!r}; see /v1/models/<name>")
        name, version, metadata, verb = match.groups()
        endpoint = {"predict": "predict", "rank": "rank", None: "status"}.get(verb, "other")
        if metadata:
            endpoint = "metadata"
        try:
            loaded = self._model(name, version)
            if verb is None:
                _allow(method, "GET", endpoint)
                return (
                    endpoint,
                    200,
                    _JSON,
                    orjson.dumps(self._metadata(loaded) if metadata else _status(loaded)),
                )
            if endpoint == "other":
                raise RequestError(
                    404, "not_found", f"unknown method {verb!r}; use :predict or :rank"
                )
            _allow(method, "POST", endpoint)
            payload = _json(await self._body(scope, receive))
            result = (
                self._predict(loaded, payload) if verb == "predict" else self._rank(loaded, payload)
            )
            return endpoint, 200, _JSON, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        except RequestError as e:
            e.endpoint = endpoint
            raise

    def _model(self, name: str, version: str | None) -> Loaded:
        loaded = self.slot.current  # held for the whole request: a swap cannot pull it away
        if name != self.config.model_name:
            raise RequestError(
                404, "not_found",
                f"model {name!r} not found; this server serves {self.config.model_name!r}",
            )  # fmt: skip
        if version is not None and version != loaded.version:
            raise RequestError(
                404, "not_found",
                f"version {version!r} of model {name!r} is not loaded; the loaded version is "
                f"{loaded.version!r}",
            )  # fmt: skip
        return loaded

    async def _body(self, scope: dict, receive: Callable) -> bytes:
        limit = self.config.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise _too_large_body(int(value), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "invalid_request", "the client closed the connection")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large_body(size, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # ----------------------------------------------------------------- predict

    def _predict(self, loaded: Loaded, payload: Any) -> dict:
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError(
                400, "invalid_request",
                'the body must be a JSON object {"instances": [{feature: value, ...}, ...]}',
            )  # fmt: skip
        instances = payload["instances"]
        _check_list(instances, "instances", self.config.max_instances,
                    "split the request (--max_instances)")  # fmt: skip
        _check_rows(instances, loaded.input_keys, "instance", ())
        spec = loaded.predictor.spec
        scores = _score(loaded.predictor, lambda rows: spec.transform(rows, label=False), instances)
        self.slot.sample = instances[:1]
        self.metrics.scored(len(instances))
        return {"predictions": scores}

    # ----------------------------------------------------------------- rank

    def _rank(self, loaded: Loaded, payload: Any) -> dict:
        if not isinstance(payload, dict) or "candidates" not in payload:
            raise RequestError(
                400, "invalid_request",
                'the body must be a JSON object {"context": {...}, "candidates": [{...}, ...], '
                '"k": 10}',
            )  # fmt: skip
        context = payload.get("context") or {}
        candidates = payload["candidates"]
        k = payload.get("k", 10)
        if not isinstance(context, dict):
            raise RequestError(
                400, "invalid_request", f'"context" must be an object, got {_type(context)}'
            )
        _check_list(candidates, "candidates", self.config.max_candidates,
                    "send fewer (--max_candidates)")  # fmt: skip
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RequestError(400, "invalid_request", f'"k" must be a positive integer, got {k!r}')
        if loaded.predictor.head == "multiclass":
            raise RequestError(
                400, "invalid_request",
                "ranking needs one score per candidate (a binary or regression model); this "
                "model is multi-class: use :predict",
            )  # fmt: skip
        _check_rows(candidates, loaded.input_keys, "candidate", context.keys())
        n, chunk = len(candidates), self.config.rank_chunk

        spec = loaded.predictor.spec

        def score(lo: int, hi: int) -> np.ndarray:  # candidates[lo:hi] with the context
            return _score(loaded.predictor, spec.transform_candidates, context, candidates[lo:hi])

        if n <= chunk:
            scores = score(0, n)
        else:  # the paper's serving: smaller batches on several threads cut latency
            starts = range(0, n, chunk)
            scores = np.concatenate(list(self.pool.map(lambda i: score(i, i + chunk), starts)))
        self.metrics.scored(n)
        k = min(k, n)
        top = np.argsort(-scores, kind="stable")[:k]  # ties: the earlier candidate first
        return {
            "ranking": [
                {"index": i, "score": s} for i, s in zip(top.tolist(), scores[top].tolist())
            ],
            "model_version": loaded.version,
        }

    def _metadata(self, loaded: Loaded) -> dict:
        p = loaded.predictor
        return {
            "model_spec": {"name": self.config.model_name, "version": loaded.version},
            "metadata": {
                "inputs": list(loaded.input_keys),
                "head": p.head,
                "classes": list(p.classes_) if p.classes_ else None,
                "output_range": list(p.output_range) if p.output_range else None,
                "model_type": p.model.config.model_type,
            },
        }


def _status(loaded: Loaded) -> dict:
    return {
        "model_version_status": [
            {
                "version": loaded.version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _allow(method: str, allowed: str, endpoint: str) -> None:
    if method != allowed:
        e = RequestError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}")
        e.endpoint = endpoint
        raise e


def _json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "bad_json", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(400, "bad_json", f"the body is not valid JSON: {e}") from None


def _too_large_body(size: int, limit: int) -> RequestError:
    return RequestError(
        413, "too_large",
        f"request body of {size:,} bytes is over this server's limit of {limit:,} bytes; "
        "send fewer rows per request (--max_body_bytes)",
    )  # fmt: skip


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), repr(value))


def _check_list(value: Any, name: str, limit: int, fix: str) -> None:
    """A request's list of row objects: a non-empty list within the server's limit."""
    if not isinstance(value, list):
        raise RequestError(
            400, "invalid_request", f'"{name}" must be a list of objects, got {_type(value)}'
        )
    if not value:
        raise RequestError(400, "invalid_request", f'"{name}" is empty; send at least one')
    if len(value) > limit:
        raise RequestError(
            413, "too_large", f"{len(value)} {name} is over this server's limit of {limit}; {fix}"
        )


def _check_rows(rows: list, keys: tuple[str, ...], what: str, given: Any) -> None:
    """Every row an object holding every feature the model reads (or the context gives)."""
    need = [k for k in keys if k not in given]
    need_set = set(need)
    try:  # the common case in one C-level pass; the loop below names the first bad row
        deque(map(itemgetter(*need) if need else dict.keys, rows), 0)
        return
    except (KeyError, TypeError):
        pass  # a row without a feature, or not an object
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(
                400, "invalid_input",
                f"{what} {i} must be an object of feature values, got {_type(row)}",
            )  # fmt: skip
        if not row.keys() >= need_set:
            missing = [k for k in need if k not in row]
            where = " (give it in the candidate or in the context)" if what == "candidate" else ""
            raise RequestError(
                400, "invalid_input",
                f"{what} {i} is missing feature(s) {', '.join(map(repr, missing))}{where}; "
                f"the model reads {list(keys)}",
            )  # fmt: skip


def _score(predictor: Predictor, encode: Callable[..., Batch], *rows: Any) -> np.ndarray:
    """Scores of ``encode(*rows)``; anything the encoder cannot read is the client's
    mistake (400)."""
    try:
        batch = encode(*rows)
    except Exception as e:  # noqa: BLE001 - the model is fixed and good: bad rows made this
        message = str(e) or type(e).__name__
        if not isinstance(e, ValueError):  # not the encoder's own DataError: log for the operator
            traceback.print_exc(file=sys.stderr)
        raise RequestError(400, "invalid_input", f"cannot encode the input: {message}") from None
    scores = outputs_numpy(predictor.forward(batch).numpy(), predictor.head, predictor.output_range)
    if not np.all(np.isfinite(scores)):
        raise RequestError(
            400, "invalid_input", "the input gives non-finite scores; check numeric features"
        )
    return scores


# --------------------------------------------------------------------------- processes


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit this: a response written in two parts must not wait
    # for the client's delayed ACK (40 ms) under Nagle's algorithm
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def _worker(config: ServeConfig, index: int, shared: Any, port: int, supervisor: int) -> None:
    """One worker process: load the newest model, listen on its own SO_REUSEPORT socket,
    serve until told to stop."""
    import threadpoolctl
    import uvicorn

    _exit_with(supervisor)
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)  # NumPy's BLAS too: one core per worker
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    slot = ModelSlot(config.model, log=log)
    app = App(config, slot, Metrics(shared, index, config.n_workers()))
    sock = _reuseport_socket(config.host, port)
    if config.poll_seconds > 0:
        slot.poll(config.poll_seconds)
    server = _server_class()(
        uvicorn.Config(
            app, loop=config.loop, http=config.http, lifespan="off", access_log=False,
            log_level="warning", timeout_keep_alive=30, proxy_headers=False,
        ),
        on_ready=app.metrics.set_ready,
    )  # fmt: skip
    app.connections = lambda: len(server.server_state.connections)
    gc.collect()
    gc.freeze()  # the loaded libraries' objects: full collections need not scan them again
    server.run(sockets=[sock])
    slot.stop()


def _server_class() -> type:
    import uvicorn  # the ``serve`` extra: imported only where a server runs

    class Server(uvicorn.Server):
        """uvicorn's server, told when it is listening, and deaf to Ctrl-C: the supervisor
        gets that too and stops the workers itself (with SIGTERM), instead of seeing them
        die and restarting them."""

        def __init__(self, config: Any, on_ready: Callable[[], None]) -> None:
            super().__init__(config)
            self.on_ready = on_ready

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                self.on_ready()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGINT:
                super().handle_exit(sig, frame)

    return Server


def _exit_with(supervisor: int) -> None:
    """SIGTERM this worker once the supervisor is gone, even killed by SIGKILL: workers are
    children of the fork server, which outlives it."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(supervisor)  # readable when the process ends (Linux >= 5.3)
            select.select([fd], [], [])
        except (AttributeError, OSError):
            while _alive(supervisor):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="widedeep-supervisor-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def serve(config: ServeConfig, log: Callable[[str], None] = print) -> int:
    """Run the server until SIGINT/SIGTERM: a supervisor process and its workers.

    The supervisor loads the model once to refuse a bad one with a clear message.
    Workers come from a fork server that has imported torch but never run an
    operator: forking the supervisor itself would hand the workers torch's thread
    pool in a state that fails in any new thread ("Invalid thread pool"), and
    spawning would import torch once more per worker.
    """
    import multiprocessing

    require_serve_extra()
    loaded = Loaded.load(artifact.resolve(config.model))  # fail here, before any worker starts
    if _in_use(config.host, config.port):
        raise OSError(
            errno.EADDRINUSE,
            f"{config.host}:{config.port} is already in use; stop that server or choose "
            "another --port",
        )
    holder = _reuseport_socket(config.host, config.port)  # holds the port; never listens
    port = holder.getsockname()[1]
    n = config.n_workers()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["widedeep.serve", "uvicorn", "uvloop", "httptools"])
    shared = ctx.RawArray("d", shared_size(n))
    metrics = Metrics(shared, 0, n)

    def start(i: int) -> Any:
        metrics.starting(i)
        process = ctx.Process(
            target=_worker, args=(config, i, shared, port, os.getpid()), daemon=True
        )
        process.start()
        return process

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs = [start(i) for i in range(n)]
    announced = False
    try:
        while not stop.wait(0.1):
            if not announced and metrics.ready().all():
                announced = True
                log(
                    f"widedeep serve: model {config.model_name!r} version {loaded.version} "
                    f"({loaded.path}) on http://{_url_host(config.host)}:{port} with {n} "
                    f"worker{'s' * (n > 1)}"
                )
            for i, p in enumerate(procs):
                if p.is_alive() or stop.is_set():
                    continue
                if not metrics.ready()[i]:
                    log(f"widedeep serve: worker {i} failed to start (exit code {p.exitcode})")
                    return 1
                log(f"widedeep serve: worker {i} exited ({p.exitcode}); restarting it")
                procs[i] = start(i)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
        holder.close()
    return 0


def _in_use(host: str, port: int) -> bool:
    if port == 0:
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
