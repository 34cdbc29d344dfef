"""Fail-open: a cache backend that is down or hangs never fails a call."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time

import pytest

from effopt.cache import BackendError, ComputationCache, LocalBackend, RedisBackend
from tests.cache.workers import SECRET

OUTAGE = "calls compute without the cache"


def wait_until_usable(cache, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cache._backend_usable():
        assert time.monotonic() < deadline, "the outage did not end after the server came back"
        time.sleep(0.02)


def outage_warnings(caplog) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.WARNING and OUTAGE in r.getMessage())


def test_redis_stopped_between_calls(redis_instance, caplog):
    cache = ComputationCache(
        RedisBackend(redis_instance.url, timeout_s=0.5), SECRET, retry_after_s=0, stats_flush_s=0
    )
    runs: list[int] = []

    @cache.cached
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    assert square(3) == 9
    assert square.call((3,)).hit

    redis_instance.stop()
    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        down = [square.call((x,)) for x in (3, 4, 4)]
    assert [r.value for r in down] == [9, 16, 16]  # correct results, computed
    assert all(not r.hit and not r.stored and r.error for r in down)
    assert runs == [3, 3, 4, 4]
    assert outage_warnings(caplog) == 1  # one warning for the whole outage

    redis_instance.start()  # same port, empty (no persistence)
    assert square(5) == 25
    assert square.call((5,)).hit  # caching resumed
    assert runs == [3, 3, 4, 4, 5]
    stats = cache.stats()[square.__effopt_cache_spec__.name]
    # Counted during the outage, written once Redis was back.  (The counts written before the
    # outage went down with the restarted server's memory.)
    assert stats["errors"] == 3
    assert stats["misses"] == 4 and stats["hits"] == 1


def test_hanging_redis_times_out_and_is_bypassed(redis_instance, caplog):
    cache = ComputationCache(RedisBackend(redis_instance.url, timeout_s=0.3), SECRET, retry_after_s=60)
    runs: list[int] = []

    @cache.cached
    def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    assert double(1) == 2
    os.kill(redis_instance.proc.pid, signal.SIGSTOP)  # alive but not answering
    try:
        with caplog.at_level(logging.WARNING, logger="effopt.cache"):
            slow = double.call((1,))
            bypassed = double.call((2,))
    finally:
        os.kill(redis_instance.proc.pid, signal.SIGCONT)
    assert (slow.value, bypassed.value) == (2, 4)
    assert "Timeout" in slow.error
    # Within retry_after_s the backend is not even tried: no second timeout, no second warning.
    assert "bypassed" in bypassed.error
    assert outage_warnings(caplog) == 1
    assert runs == [1, 1, 2]
    assert cache.backend.get(double.key(2)) is None  # nothing was written while bypassed


def test_reports_are_not_fail_open(redis_instance):
    cache = ComputationCache(RedisBackend(redis_instance.url, timeout_s=0.5), SECRET)
    redis_instance.stop()
    with pytest.raises(BackendError, match="Connection refused"):
        cache.stats()
    with pytest.raises(BackendError):
        cache.invalidate(namespace="default")


def test_local_backend_failure_is_bypassed(tmp_path, caplog):
    path = tmp_path / "cache"
    cache = ComputationCache(LocalBackend(path), SECRET, retry_after_s=0)

    @cache.cached
    def inc(x: int) -> int:
        return x + 1

    assert inc(1) == 2
    shutil.rmtree(path)
    path.write_text("not a directory any more")
    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        result = inc.call((2,))
    assert result.value == 3 and result.error and not result.stored
    assert outage_warnings(caplog) == 1


def test_counts_are_kept_when_a_flush_fails(redis_instance):
    cache = ComputationCache(
        RedisBackend(redis_instance.url, timeout_s=0.5), SECRET, stats_flush_s=3600, retry_after_s=0.2
    )

    @cache.cached
    def f(x: int) -> int:
        return x

    f(1), f(1), f(1)  # the miss is written at once, the two hits wait for the next flush
    redis_instance.stop()
    assert cache.flush_stats() is False
    redis_instance.start()
    # The outage ends when the probe finds the server answering (every retry_after_s); until then a
    # flush does not touch the backend.
    wait_until_usable(cache)
    assert cache.flush_stats() is True
    stats = cache.stats()[f.__effopt_cache_spec__.name]
    assert stats["hits"] == 2  # kept in the process through the failed flush
    assert stats["misses"] == 0  # written before the outage: gone with the restarted server's memory
