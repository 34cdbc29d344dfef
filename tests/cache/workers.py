"""Code the cache tests run in other processes.

Functions live here, at module level, so every process computes the same
cache key for them (same ``module.qualname`` and code version).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import os
import time
from typing import Any

import numpy as np

from effopt.cache import ComputationCache, LocalBackend, RedisBackend, canonical_digest, code_version

SECRET = b"effopt-test-secret-0123456789"


def make_cache(spec: dict[str, Any], **options: Any) -> ComputationCache:
    if spec["kind"] == "local":
        backend: Any = LocalBackend(spec["path"])
    else:
        backend = RedisBackend(spec["url"], prefix=spec["prefix"])
    options.setdefault("lock_lease_s", 1.0)
    options.setdefault("lock_timeout_s", 30.0)
    return ComputationCache(backend, SECRET, namespace="tests", **options)


def compute(n: int, log: str, gate: str) -> np.ndarray:
    """Records each start and end in ``log``; holds while the file ``gate`` exists."""
    with open(log, "a") as f:
        f.write(f"start {os.getpid()}\n")
    deadline = time.monotonic() + 60
    while os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(log, "a") as f:
        f.write(f"done {os.getpid()}\n")
    return np.arange(n, dtype=np.int64) ** 2


def call_compute(
    spec: dict[str, Any], n: int, log: str, gate: str, barrier: Any, results: Any, ready: Any = None
) -> None:
    """Worker process: wait for the others, call ``compute`` through the cache, report the outcome.

    ``ready`` (an Event) is set just before the call, once the cache is built.
    """
    cache = make_cache(spec)
    cached = cache.cached(ignore=("log", "gate"))(compute)
    if barrier is not None:
        barrier.wait(30)
    if ready is not None:
        ready.set()
    result = cached.call((n, log, gate))
    results.put({"pid": os.getpid(), "hit": result.hit, "waited_s": result.waited_s, "value": result.value.tolist()})
    cache.close()  # flush this process's statistics (a forked child skips atexit)


@dataclasses.dataclass
class Point:
    x: float
    y: float
    labels: frozenset[str]


def keyed(a: Any, b: Any = None) -> Any:
    if a in {"alpha", "beta", "gamma"}:  # a frozenset constant: its order varies with PYTHONHASHSEED
        return b
    return a


def sample_inputs() -> dict[str, Any]:
    import pandas as pd

    return {
        "strings": {"alpha", "beta", "gamma", "delta", "epsilon"},
        "frozen": frozenset({"x", "yy", "zzz", ("t", 1)}),
        "nested": {"b": [1, 2.5, None, True, b"\x00\xff"], "a": {"k": {"s", "t"}}},
        "array": np.arange(24, dtype=np.float32).reshape(4, 6),
        "point": Point(1.0, -2.0, frozenset({"p", "q", "r"})),
        "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
        "money": decimal.Decimal("12.50"),
        "frame": pd.DataFrame({"name": ["a", "b", "c"], "value": [1.0, 2.0, 3.0]}, index=[10, 20, 30]),
    }


def key_report() -> dict[str, str]:
    """Digests and keys this interpreter computes for fixed inputs."""
    report = {name: canonical_digest(value).hex() for name, value in sample_inputs().items()}
    report["code_version"] = code_version(keyed)
    cache = ComputationCache(LocalBackend(os.environ["EFFOPT_TEST_CACHE_DIR"]), SECRET, namespace="tests")
    report["key"] = str(cache.key(keyed, ({"alpha", "beta"}, sample_inputs())))
    return report

