"""A bounded, open-model HTTP load engine: requests start at a constant rate, whatever the answers.

Why not locust: its users are a closed model (each waits for its answer before the next request),
so a slow server silently lowers the offered load and flatters p95; matching the k6 script's
``constant-arrival-rate`` needs an open model. Locust also brings gevent, which patches the
standard library of the process it runs in. This engine is httpx plus a thread pool: every request
is scheduled at ``start + i / rate``; when every worker is busy the request is counted as dropped
(k6's ``dropped_iterations``) instead of queued, since queueing would hide the overload in the
figures. It stops at ``duration`` or ``max_requests``, whichever comes first, and never exceeds
``concurrency`` requests in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class LoadPlan:
    """What to send: where, how fast, for how long, and the bounds."""

    base_url: str
    paths: Sequence[str]
    rate: float
    duration: float
    max_requests: int
    concurrency: int
    timeout: float


@dataclass
class LoadResult:
    """What happened: one latency per completed request, failures by reason."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    dropped: int = 0
    elapsed: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, seconds: float, outcome: str, failed: bool) -> None:
        """Count one finished request (thread-safe)."""
        with self._lock:
            self.latencies.append(seconds)
            self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
            if failed:
                self.errors += 1

    @property
    def requests(self) -> int:
        """Requests that finished (answered or failed)."""
        return len(self.latencies)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def run_load(plan: LoadPlan, *, client: httpx.Client, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> LoadResult:
    """Offer ``plan.rate`` requests per second to ``plan.base_url`` until a bound is reached."""
    result = LoadResult()
    total = min(plan.max_requests, max(1, int(plan.rate * plan.duration)))
    in_flight = threading.BoundedSemaphore(plan.concurrency)
    base = plan.base_url.rstrip("/")

    def one(path: str) -> None:
        started = clock()
        try:
            response = client.get(base + path, timeout=plan.timeout)
            outcome, failed = str(response.status_code), response.status_code >= 400
        except Exception as exc:  # any transport failure is a failed request, named by its kind
            outcome, failed = type(exc).__name__, True
        finally:
            in_flight.release()
        result.record(clock() - started, outcome, failed)

    start = clock()
    with ThreadPoolExecutor(max_workers=plan.concurrency, thread_name_prefix="load") as pool:
        for i in range(total):
            due = start + i / plan.rate
            now = clock()
            if now - start >= plan.duration:
                break
            if due > now:
                sleep(due - now)
            if not in_flight.acquire(blocking=False):
                result.dropped += 1
                continue
            pool.submit(one, plan.paths[i % len(plan.paths)])
    result.elapsed = clock() - start
    return result


def summarize(result: LoadResult, plan: LoadPlan) -> dict[str, Any]:
    """The summary ``gate`` reads (seconds and fractions; ``kind`` tells it apart from k6's)."""
    lat = result.latencies
    n = result.requests
    return {
        "kind": "stageflow-loadtest",
        "engine": "python",
        "url": plan.base_url,
        "paths": list(plan.paths),
        "rate": plan.rate,
        "duration_s": round(result.elapsed, 3),
        "requests": n,
        "errors": result.errors,
        "error_rate": round(result.errors / n, 6) if n else 1.0,
        "dropped": result.dropped,
        "throughput_rps": round(n / result.elapsed, 3) if result.elapsed > 0 else 0.0,
        "statuses": dict(sorted(result.statuses.items())),
        "latency": {
            "p50": round(percentile(lat, 50), 6),
            "p95": round(percentile(lat, 95), 6),
            "p99": round(percentile(lat, 99), 6),
            "max": round(max(lat), 6) if lat else 0.0,
            "mean": round(sum(lat) / n, 6) if n else 0.0,
        },
    }
