"""Hit, miss, TTL, refresh, invalidation, limits and references, on the local backend and on real Redis."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time

import numpy as np
import pytest

from effopt.cache import (
    CacheReferenceError,
    ComputationCache,
    LocalBackend,
    RedisBackend,
    SingleFlightTimeout,
    is_cache_reference,
)
from tests.cache.conftest import entry_count
from tests.cache.workers import SECRET


class Counter:
    """Counts how many times a cached body really ran."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args) -> int:
        self.calls.append(args)
        return len(self.calls)


def test_miss_then_hit_runs_the_body_once(cache):
    ran = Counter()

    @cache.cached
    def scale(x: np.ndarray, factor: float = 2.0) -> np.ndarray:
        ran(factor)
        return x * factor

    data = np.arange(1000, dtype=np.float64)
    first = scale(data)
    second = scale(data)
    third = scale(data, factor=2.0)
    assert len(ran.calls) == 1
    np.testing.assert_array_equal(first, data * 2)
    np.testing.assert_array_equal(second, data * 2)
    np.testing.assert_array_equal(third, data * 2)
    assert not second.flags.writeable  # a hit is a read-only view of the entry, not a copy
    scale(data, factor=3.0)
    assert len(ran.calls) == 2

    stats = cache.stats()[f"{__name__}.test_miss_then_hit_runs_the_body_once.<locals>.scale"]
    assert stats["hits"] == 2
    assert stats["misses"] == 2
    assert stats["rejected"] == 0 and stats["errors"] == 0
    assert stats["bytes"] > 2 * data.nbytes
    assert stats["compute_s"] > 0 and stats["saved_s"] > 0


def test_call_result_reports_hit_key_and_seconds(cache):
    @cache.cached
    def slow(n: int) -> list[int]:
        time.sleep(0.05)
        return list(range(n))

    miss = slow.call((5,))
    hit = slow.call((5,))
    assert (miss.hit, hit.hit) == (False, True)
    assert miss.stored and miss.nbytes > 0 and miss.compute_s > 0
    assert hit.key == miss.key == slow.key(5)
    assert hit.value == [0, 1, 2, 3, 4]
    assert hit.saved_s == pytest.approx(miss.compute_s, abs=1e-5)
    assert hit.error is None and miss.error is None


def test_ttl_expires_entries(cache):
    ran = Counter()

    @cache.cached(ttl=1.0)
    def f(x):
        return (x, ran())

    assert f(1) == (1, 1)
    assert f(1) == (1, 1)
    assert f.call((2,), ttl=60).value == (2, 2)  # a per-call TTL overrides the function's
    time.sleep(1.3)
    assert f(1) == (1, 3)  # expired: computed again
    assert f(2) == (2, 2)  # still cached
    assert len(ran.calls) == 3


def test_refresh_recomputes_and_overwrites(cache):
    ran = Counter()

    @cache.cached
    def f(x):
        return (x, ran())

    assert f(1) == (1, 1)
    assert f.refresh(1) == (1, 2)
    assert f(1) == (1, 2)  # the refreshed value replaced the old one
    assert f.call((1,), refresh=True).value == (1, 3)
    assert f(1) == (1, 3)


def test_invalidate_by_function_covers_every_version(cache):
    def model(x):
        return x + 1

    v1 = cache.cached(version=1)(model)
    v2 = cache.cached(version=2)(model)

    @cache.cached
    def other(x):
        return x

    v1(1), v2(1), v2(2), other(1)
    assert v1.key(1) != v2.key(1)
    assert entry_count(cache.backend) == 4
    assert cache.invalidate(function=v1) == 3
    assert entry_count(cache.backend) == 1
    assert other.call((1,)).hit
    assert not v2.call((1,)).hit


def test_invalidate_by_namespace_leaves_other_namespaces(backend):
    a = ComputationCache(backend, SECRET, namespace="team-a")
    b = ComputationCache(backend, SECRET, namespace="team-b")

    def f(x):
        return x * 2

    fa, fb = a.cached(f), b.cached(f)
    fa(1), fa(2), fb(1)
    assert a.invalidate(namespace="team-a") == 2
    assert not fa.call((1,)).hit
    assert fb.call((1,)).hit


def test_invalidate_by_tag(cache):
    @cache.cached(tags=("features", "daily"))
    def features(x):
        return x

    @cache.cached(tags=("models",))
    def model(x):
        return x

    features(1), features(2), model(1)
    assert cache.invalidate(tag="daily") == 2
    assert not features.call((1,)).hit
    assert model.call((1,)).hit
    assert cache.invalidate(tag="models", function=features) == 0
    assert cache.invalidate(tag="models") == 1


def test_oversized_result_is_returned_but_not_cached(backend, caplog):
    cache = ComputationCache(backend, SECRET, namespace="tests", max_entry_bytes=10_000)
    ran = Counter()

    @cache.cached
    def big(n):
        ran()
        return np.ones(n)

    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        first = big(5000)
        second = big(5000)
    assert first.shape == second.shape == (5000,)
    assert len(ran.calls) == 2
    assert "over max_entry_bytes=10000: returned but not cached" in caplog.text
    assert big(10).sum() == 10 and big.call((10,)).hit  # small results are still cached


def test_unpicklable_result_is_returned_but_not_cached(cache, caplog):
    @cache.cached
    def make_lock(name):
        return threading.Lock()

    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        result = make_lock.call(("a",))
    assert result.value.acquire(blocking=False)
    assert not result.stored
    assert "cannot be serialised" in caplog.text


def test_exception_in_the_body_is_not_cached_and_releases_the_lock(cache):
    attempts = Counter()

    @cache.cached
    def flaky(x):
        if attempts() == 1:
            raise RuntimeError("first attempt fails")
        return x

    with pytest.raises(RuntimeError, match="first attempt fails"):
        flaky(1)
    assert flaky(1) == 1  # did not wait for a lock left behind
    assert flaky.call((1,)).hit


def test_large_compressible_results_are_compressed(backend):
    cache = ComputationCache(backend, SECRET, namespace="tests", compress_min_bytes=64 * 1024)

    @cache.cached
    def zeros(n):
        return np.zeros(n)

    @cache.cached
    def noise(n):
        return np.random.default_rng(n).standard_normal(n)  # incompressible on purpose

    z = zeros.call((1_000_000,))
    n = noise.call((1_000_000,))
    assert z.nbytes < 8_000_000 // 20
    assert n.nbytes >= 8_000_000
    np.testing.assert_array_equal(zeros(1_000_000), np.zeros(1_000_000))
    np.testing.assert_array_equal(noise(1_000_000), n.value)


def test_nested_values_round_trip(cache):
    @cache.cached
    def report(n):
        return {"weights": np.arange(n, dtype=np.float32), "meta": {"n": n, "names": ["a", "b"]}, "none": None}

    fresh = report(7)
    cached = report(7)
    np.testing.assert_array_equal(cached["weights"], fresh["weights"])
    assert cached["weights"].dtype == np.float32
    assert cached["meta"] == {"n": 7, "names": ["a", "b"]} and cached["none"] is None


def test_async_functions_are_cached_and_computed_once(cache):
    ran = Counter()

    @cache.cached
    async def fetch(x):
        ran()
        await asyncio.sleep(0.3)
        return x * 10

    assert inspect.iscoroutinefunction(fetch)

    async def main():
        return await asyncio.gather(*(fetch(4) for _ in range(5)))

    assert asyncio.run(main()) == [40] * 5
    assert len(ran.calls) == 1
    assert asyncio.run(fetch.call((4,))).hit
    assert asyncio.run(fetch.refresh(4)) == 40
    assert len(ran.calls) == 2


def test_waiting_longer_than_lock_timeout_raises_a_clear_error(backend):
    cache = ComputationCache(backend, SECRET, namespace="tests", lock_lease_s=30, lock_timeout_s=0.3)

    @cache.cached
    def busy(x):
        return x

    held = backend.try_lock(busy.key(1), 30)  # another worker is computing this key
    assert held is not None
    try:
        with pytest.raises(SingleFlightTimeout, match=r"waited 0.3 s for another worker computing .*busy"):
            busy(1)
    finally:
        held.release()
    assert busy(1) == 1


def test_reference_resolves_to_the_value(cache):
    @cache.cached
    def table(n):
        return np.arange(n)

    result = table.call((100,))
    ref = cache.reference(result.key, result.nbytes)
    assert is_cache_reference(ref)
    assert ref["backend"] == cache.backend.kind and ref["nbytes"] == result.nbytes
    np.testing.assert_array_equal(cache.resolve(ref), np.arange(100))
    cache.invalidate(function=table)
    with pytest.raises(CacheReferenceError, match="no longer exists"):
        cache.resolve(ref)
    other_kind = {**ref, "backend": "redis" if ref["backend"] == "local" else "local"}
    with pytest.raises(CacheReferenceError, match="points into a"):
        cache.resolve(other_kind)


def test_statistics_outlive_the_cache_object(backend):
    first = ComputationCache(backend, SECRET, namespace="stats")

    def f(x):
        return x

    cf = first.cached(f)
    cf(1), cf(1), cf(1)
    first.flush_stats()
    second = ComputationCache(backend, SECRET, namespace="stats")
    name = f"{__name__}.test_statistics_outlive_the_cache_object.<locals>.f"
    assert second.stats()[name]["hits"] == 2
    assert second.stats()[name]["misses"] == 1


def test_options_are_validated_with_the_argument_named(backend):
    with pytest.raises(ValueError, match="secret must be at least 16 bytes"):
        ComputationCache(backend, b"short")
    with pytest.raises(ValueError, match="namespace must be"):
        ComputationCache(backend, SECRET, namespace="a:b")
    cache = ComputationCache(backend, SECRET)

    def f(x, log=None):
        return x

    with pytest.raises(ValueError, match=r"ignore names 'logger', which is not a parameter"):
        cache.cached(ignore=("logger",))(f)
    with pytest.raises(TypeError, match=r"ignore must be a collection of strings such as \('log',\)"):
        cache.cached(ignore="log")(f)
    with pytest.raises(ValueError, match="ttl must be > 0"):
        cache.cached(ttl=-1)(f)
    with pytest.raises(ValueError, match="each tag must be"):
        cache.cached(tags=("a b",))(f)
    with pytest.raises(ValueError, match="needs function=, namespace= or tag="):
        cache.invalidate()


def test_redis_backend_takes_a_client(redis_server, redis_prefix):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    cache = ComputationCache(RedisBackend(client, prefix=redis_prefix), SECRET)

    @cache.cached
    def f(x):
        return x + 1

    assert f(1) == 2 and f.call((1,)).hit
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisBackend(redis.Redis.from_url(redis_server.url, decode_responses=True))
    with pytest.raises(TypeError, match="url_or_client must be"):
        RedisBackend(42)
    client.close()


def test_local_backend_evicts_least_recently_read_entries(tmp_path):
    backend = LocalBackend(tmp_path / "lru", max_bytes=3 * 1100)
    cache = ComputationCache(backend, SECRET)

    @cache.cached
    def block(i):
        return np.full(100, i, dtype=np.float64)  # about 1 KB per entry

    block(1), block(2), block(3)
    assert backend.entry_count() == 3
    block(1)  # read: now the most recently used
    block(4)  # over the bound: evicts the least recently read, block(2)
    assert backend.entry_count() == 3
    assert block.call((1,)).hit
    assert block.call((3,)).hit
    assert block.call((4,)).hit
    assert not block.call((2,)).hit


def test_cache_from_settings(tmp_path):
    from effopt.config import Settings

    settings = Settings.from_mapping(
        {"cache_secret": "s" * 20, "cache_max_entry_bytes": "4096", "cache_lock_timeout_s": "12"}, str(tmp_path)
    )
    backend = LocalBackend(settings.cache_dir, max_bytes=settings.cache_max_bytes, timeout_s=settings.cache_timeout_s)
    cache = ComputationCache.from_settings(settings, backend, namespace="cfg")
    assert (cache.max_entry_bytes, cache.lock_timeout_s, cache.namespace) == (4096, 12.0, "cfg")
    assert backend.path == tmp_path / "effopt-cache"
    with pytest.raises(ValueError, match=r"\[effopt\] cache_secret is not set"):
        ComputationCache.from_settings(Settings.from_mapping({}, str(tmp_path)), backend)
