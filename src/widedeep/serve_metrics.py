"""Server counters shared by every worker process, rendered in Prometheus text format.

Each worker owns one row of a shared float64 array (``multiprocessing.RawArray``)
and only ever writes its own row, so no lock is needed; ``/metrics``, answered
by whichever worker the kernel picked, sums the rows.  A scrape therefore sees
the whole server, not one worker chosen at random.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

ENDPOINTS = ("predict", "rank", "status", "metadata", "healthz", "metrics", "other")
ERROR_KINDS = (
    "bad_json",  # the body is not JSON
    "invalid_request",  # JSON, but not the shape the endpoint takes
    "invalid_input",  # a feature is missing or cannot be encoded
    "too_large",  # body, instances or candidates over the limit (413)
    "not_found",  # unknown path, model name or version (404)
    "method_not_allowed",  # (405)
    "internal",  # a server fault (500)
)
# request latency buckets in seconds: fine below the paper's 10 ms budget, coarse above
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

_E, _K, _B = len(ENDPOINTS), len(ERROR_KINDS), len(BUCKETS) + 1
_REQUESTS = 0
_ERRORS = _REQUESTS + _E
_HIST = _ERRORS + _K  # [endpoint][bucket], not cumulative
_SUM = _HIST + _E * _B
_SCORES = _SUM + _E
_VERSION = _SCORES + 1
_SWAPS = _VERSION + 1
_SWAP_FAILURES = _SWAPS + 1
_READY = _SWAP_FAILURES + 1
_CONNECTIONS = _READY + 1
SLOT = _CONNECTIONS + 1  # floats per worker


def shared_size(workers: int) -> int:
    """Length of the shared array for ``workers`` worker processes."""
    return workers * SLOT


class Metrics:
    """One worker's view: writes to its own row, reads (and renders) all rows."""

    def __init__(self, buffer: Any = None, worker: int = 0, workers: int = 1) -> None:
        if buffer is None:
            buffer = np.zeros(shared_size(workers))
        self.table = np.frombuffer(buffer, dtype=np.float64).reshape(workers, SLOT)
        self.row = self.table[worker]
        self.worker = worker

    def observe(self, endpoint: str, seconds: float, error: str | None = None) -> None:
        e = ENDPOINTS.index(endpoint)
        row = self.row
        row[_REQUESTS + e] += 1
        if error is not None:
            row[_ERRORS + ERROR_KINDS.index(error)] += 1
        row[_HIST + e * _B + bisect.bisect_left(BUCKETS, seconds)] += 1
        row[_SUM + e] += seconds

    def scored(self, rows: int) -> None:
        self.row[_SCORES] += rows

    def set_version(self, version: str) -> None:
        self.row[_VERSION] = _as_number(version)

    def swapped(self, ok: bool) -> None:
        self.row[_SWAPS if ok else _SWAP_FAILURES] += 1

    def set_ready(self) -> None:
        self.row[_READY] = 1.0

    def starting(self, worker: int) -> None:
        """A (re)started worker is not ready until it says so, and holds no connections."""
        self.table[worker, _READY] = 0.0
        self.table[worker, _CONNECTIONS] = 0.0

    def over_share(self, connections: int) -> bool:
        """Record this worker's open connections; does it hold more than an even split of
        all the workers' connections (rounded up)?"""
        self.row[_CONNECTIONS] = connections
        total = self.table[:, _CONNECTIONS].sum()
        return connections > math.ceil(total / len(self.table))

    def ready(self) -> np.ndarray:
        """Per worker: has it loaded its model and started listening?"""
        return self.table[:, _READY] > 0

    def requests(self, endpoint: str) -> int:
        return int(self.table[:, _REQUESTS + ENDPOINTS.index(endpoint)].sum())

    def errors(self, kind: str) -> int:
        return int(self.table[:, _ERRORS + ERROR_KINDS.index(kind)].sum())

    def render(self, model_name: str, version: str) -> str:
        """Prometheus text exposition format 0.0.4, summed over the workers."""
        total = self.table.sum(0)
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("widedeep_requests_total", "counter", "HTTP requests answered, by endpoint.")
        for e, name in enumerate(ENDPOINTS):
            out.append(f'widedeep_requests_total{{endpoint="{name}"}} {total[_REQUESTS + e]:.0f}')
        family("widedeep_errors_total", "counter", "Requests answered with an error, by kind.")
        for k, name in enumerate(ERROR_KINDS):
            out.append(f'widedeep_errors_total{{kind="{name}"}} {total[_ERRORS + k]:.0f}')
        family(
            "widedeep_request_duration_seconds",
            "histogram",
            "Server time from request to response, by endpoint.",
        )
        for e, name in enumerate(ENDPOINTS):
            counts = np.cumsum(total[_HIST + e * _B : _HIST + (e + 1) * _B])
            for le, c in zip([*map(str, BUCKETS), "+Inf"], counts):
                out.append(
                    f'widedeep_request_duration_seconds_bucket{{endpoint="{name}",le="{le}"}} '
                    f"{c:.0f}"
                )
            out.append(
                f'widedeep_request_duration_seconds_sum{{endpoint="{name}"}} {total[_SUM + e]:.6f}'
            )
            out.append(
                f'widedeep_request_duration_seconds_count{{endpoint="{name}"}} {counts[-1]:.0f}'
            )
        family("widedeep_scores_total", "counter", "Rows scored (instances and candidates).")
        out.append(f"widedeep_scores_total {total[_SCORES]:.0f}")
        family("widedeep_model_swaps_total", "counter", "Hot model swaps, by outcome.")
        out.append(f'widedeep_model_swaps_total{{outcome="ok"}} {total[_SWAPS]:.0f}')
        out.append(f'widedeep_model_swaps_total{{outcome="failed"}} {total[_SWAP_FAILURES]:.0f}')
        family(
            "widedeep_model_version",
            "gauge",
            "Version (export directory name) each worker serves; NaN when not a number.",
        )
        for w, v in enumerate(self.table[:, _VERSION]):
            value = "NaN" if math.isnan(v) else f"{v:.0f}"
            out.append(f'widedeep_model_version{{model="{model_name}",worker="{w}"}} {value}')
        family("widedeep_model_info", "gauge", "The model version this worker serves, as a label.")
        out.append(
            f'widedeep_model_info{{model="{model_name}",version="{version}",'
            f'worker="{self.worker}"}} 1'
        )
        family("widedeep_open_connections", "gauge", "Open client connections, per worker.")
        for w, n in enumerate(self.table[:, _CONNECTIONS]):
            out.append(f'widedeep_open_connections{{worker="{w}"}} {n:.0f}')
        family("widedeep_workers", "gauge", "Worker processes listening.")
        out.append(f"widedeep_workers {int(self.ready().sum())}")
        return "\n".join(out) + "\n"


def _as_number(version: str) -> float:
    try:
        return float(int(version))
    except ValueError:
        return math.nan
