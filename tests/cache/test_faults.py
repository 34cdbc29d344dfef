"""Faults of a real redis-server told apart (issue 14, items 2, 3 and 5).

An outage (refused, reset, timeout) bypasses the cache until the server
answers again; a bad key, a corrupted statistics field or an out-of-memory
reply affects one operation and never switches caching off; readers survive
corrupted statistics; a hung server costs one timeout per call, and the calls
after the first are bypassed without waiting.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
import redis

from effopt.cache import ComputationCache, LocalBackend, RedisBackend
from effopt.cache.report import summarize
from effopt.cli import main
from tests.cache.workers import SECRET


def raw(server) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def make(server, prefix: str, **options) -> ComputationCache:
    options.setdefault("retry_after_s", 0.2)
    timeout = options.pop("timeout_s", 1.0)
    return ComputationCache(RedisBackend(server.url, prefix=prefix, timeout_s=timeout), SECRET, namespace="f",
                            **options)


def stats_key(prefix: str, fn) -> str:
    return f"{prefix}:s:f:{fn.__effopt_cache_spec__.name}"


def entry_key(prefix: str, fn, *args) -> str:
    return f"{prefix}:e:{fn.key(*args)}"


def wait_until_usable(cache, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cache._backend_usable():
        assert time.monotonic() < deadline, "the outage did not end after the server came back"
        time.sleep(0.02)


# -- wrong types and corrupted fields ------------------------------------------------------------


def test_entry_key_of_the_wrong_type_is_rejected_deleted_and_recomputed(redis_server, redis_prefix):
    cache = make(redis_server, redis_prefix)
    runs = []

    @cache.cached
    def square(x):
        runs.append(x)
        return x * x

    square(3)
    r = raw(redis_server)
    key = entry_key(redis_prefix, square, 3)
    r.delete(key)
    r.hset(key, "junk", "1")  # someone HSETs an entry key
    result = square.call((3,))
    assert (result.value, result.hit, result.rejected, result.error) == (9, False, 1, None)
    assert r.type(key) == b"string"  # deleted and replaced by the recomputed entry
    assert square.call((3,)).hit
    assert cache._backend_usable()  # not an outage
    assert runs == [3, 3]
    assert cache.stats()[square.__effopt_cache_spec__.name]["rejected"] == 1


def test_corrupted_statistics_field_does_not_switch_caching_off_or_double_counts(redis_server, redis_prefix, caplog):
    cache = make(redis_server, redis_prefix, stats_flush_s=0)

    @cache.cached
    def damaged(x):
        return x

    @cache.cached
    def other(x):
        return x + 1

    damaged(1)
    r = raw(redis_server)
    r.hset(stats_key(redis_prefix, damaged), "hits", "abc")
    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        results = [other.call((7,)) for _ in range(30)] + [damaged.call((1,)) for _ in range(30)]
    assert [r_.error for r_ in results] == [None] * 60
    assert sum(r_.hit for r_ in results[:30]) == 29  # caching went on for the other function
    assert all(r_.hit for r_ in results[30:])
    stats = cache.stats()
    other_stats = stats[other.__effopt_cache_spec__.name]
    assert (other_stats["hits"], other_stats["misses"]) == (29, 1)
    # The bad field was reset to 0 (its old value is unknowable) and then counted the 30 hits exactly once.
    damaged_stats = stats[damaged.__effopt_cache_spec__.name]
    assert (damaged_stats["hits"], damaged_stats["misses"]) == (30, 1)
    assert any("'hits'" in rec.getMessage() and "b'abc'" in rec.getMessage() and "reset to 0" in rec.getMessage()
               for rec in caplog.records)
    assert not any("calls compute without the cache" in rec.getMessage() for rec in caplog.records)


def repairs_logged(caplog) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if rec.levelno == logging.WARNING and ("reset to 0" in rec.getMessage() or "removed" in rec.getMessage()
                                                   or "rebuilt" in rec.getMessage())]


def test_readers_survive_corrupted_statistics(redis_server, redis_prefix, capsys, caplog):
    cache = make(redis_server, redis_prefix)

    @cache.cached
    def good(x):
        return x

    @cache.cached
    def bad_field(x):
        return x

    @cache.cached
    def bad_type(x):
        return x

    for fn in (good, bad_field, bad_type):
        fn(1), fn(1)
    cache.flush_stats()
    r = raw(redis_server)
    r.hset(stats_key(redis_prefix, bad_field), mapping={"hits": "abc", "saved_s": "nan", "misses": "-4"})
    r.delete(stats_key(redis_prefix, bad_type))
    r.set(stats_key(redis_prefix, bad_type), "garbage")
    r.sadd(f"{redis_prefix}:s", b"\xff\xfe", b"no-colon", b"f:has space")

    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        read = cache.stats()
    assert read[good.__effopt_cache_spec__.name]["hits"] == 1
    bad = read[bad_field.__effopt_cache_spec__.name]
    assert (bad["hits"], bad["misses"], bad["saved_s"]) == (0, 0, 0.0) and bad["bytes"] > 0  # the rest is kept
    assert read[bad_type.__effopt_cache_spec__.name]["hits"] == 0
    problems = repairs_logged(caplog)
    assert len(problems) == 7, problems  # 3 fields, 1 wrong type, 3 garbage members
    # Reported once: the fields were reset and the garbage members removed.
    again: list[str] = []
    cache.backend.read_stats(None, again)
    assert again == []
    assert r.hget(stats_key(redis_prefix, bad_field), "hits") == b"0"
    assert r.smembers(f"{redis_prefix}:s") == {f"f:{fn.__effopt_cache_spec__.name}".encode()
                                                for fn in (good, bad_field, bad_type)}
    assert r.type(stats_key(redis_prefix, bad_type)) == b"none"  # the garbage string is gone
    # Every reader: stats(), the report's summary, `effopt cache stats` (table and JSON).
    r.hset(stats_key(redis_prefix, good), "errors", "x" * 200)
    assert cache.stats()[good.__effopt_cache_spec__.name]["errors"] == 0
    r.hset(stats_key(redis_prefix, good), "errors", "junk")
    assert summarize(cache.backend.read_stats(None))["totals"]["hits"] == 1
    r.hset(stats_key(redis_prefix, good), "errors", "junk")
    args = ["cache", "stats", "--backend", "redis", "--url", redis_server.url, "--prefix", redis_prefix]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "warning: repaired corrupted cache statistics" in out.err and "'errors'" in out.err
    r.hset(stats_key(redis_prefix, good), "hits", "junk")
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["f"][good.__effopt_cache_spec__.name]["hits"] == 0


def test_statistics_index_of_the_wrong_type_is_rebuilt(redis_server, redis_prefix, caplog):
    cache = make(redis_server, redis_prefix)

    @cache.cached
    def f(x):
        return x

    f(1), f(1)
    cache.flush_stats()
    r = raw(redis_server)
    r.delete(f"{redis_prefix}:s")
    r.set(f"{redis_prefix}:s", "not a set")
    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        assert cache.stats()[f.__effopt_cache_spec__.name]["hits"] == 1
    assert any("rebuilt" in line for line in repairs_logged(caplog))
    r.delete(f"{redis_prefix}:s")
    r.set(f"{redis_prefix}:s", "not a set")
    f(2)  # a flush meets the broken index: repaired, nothing lost
    assert cache.stats()[f.__effopt_cache_spec__.name]["misses"] == 2


def test_lock_key_that_never_expires_does_not_block_callers(redis_server, redis_prefix, caplog):
    cache = make(redis_server, redis_prefix, lock_timeout_s=2.0)

    @cache.cached
    def f(x):
        return x * 10

    r = raw(redis_server)
    lock = f"{redis_prefix}:l:{f.key(1)}"
    r.set(lock, "left by hand")  # no lease: it would never expire
    with caplog.at_level(logging.WARNING, logger="effopt.cache"):
        result = f.call((1,))
    assert (result.value, result.stored, result.waited_s) == (10, True, 0.0)
    assert any("no lease or another type" in rec.getMessage() for rec in caplog.records)
    r.hset(f"{redis_prefix}:l:{f.key(2)}", "x", "1")  # a lock key of another type
    assert f.call((2,)).stored


def test_tag_index_of_the_wrong_type_is_replaced(redis_server, redis_prefix):
    cache = make(redis_server, redis_prefix)

    @cache.cached(tags=("nightly",))
    def f(x):
        return x

    r = raw(redis_server)
    r.set(f"{redis_prefix}:t:f:nightly", "junk")
    result = f.call((1,))
    assert result.stored and result.error is None
    assert cache.invalidate(tag="nightly") == 1
    r.set(f"{redis_prefix}:t:f:nightly", "junk")
    assert cache.invalidate(tag="nightly") == 0  # a broken tag index is dropped, not a crash


# -- out of memory ----------------------------------------------------------------------------------


def test_out_of_memory_write_returns_the_value_uncached_and_caching_continues(redis_instance, caplog):
    cache = make(redis_instance, "oom:cache")
    runs = []

    @cache.cached
    def f(x):
        runs.append(x)
        return [x] * 100

    f(1)
    r = raw(redis_instance)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        with caplog.at_level(logging.WARNING, logger="effopt.cache"):
            refused = f.call((2,))
            hit = f.call((1,))  # reads still work: not bypassed
            refused_again = f.call((2,))
    finally:
        r.config_set("maxmemory", 0)
    assert refused.value == [2] * 100 and not refused.stored and "maxmemory" in refused.error
    assert hit.hit and hit.error is None
    assert not refused_again.stored
    assert cache._backend_usable()
    stored = f.call((2,))
    assert stored.stored and f.call((2,)).hit
    assert runs == [1, 2, 2, 2]
    assert not any("calls compute without the cache" in rec.getMessage() for rec in caplog.records)
    assert sum("not an outage" in rec.getMessage() for rec in caplog.records) == 1  # one warning a minute
    stats = cache.stats()[f.__effopt_cache_spec__.name]
    # The statistics batches refused during the OOM were kept and added once memory was back.
    assert (stats["hits"], stats["misses"], stats["errors"]) == (2, 4, 2)


# -- outages and hangs ------------------------------------------------------------------------------


def test_hung_server_costs_one_timeout_per_call_not_two(redis_instance):
    timeout = 1.5
    cache = ComputationCache(RedisBackend(redis_instance.url, timeout_s=timeout), SECRET, retry_after_s=60)

    @cache.cached
    def f(x):
        return x + 1

    observer = raw(redis_instance)
    before = observer.info("stats")["total_connections_received"]
    os.kill(redis_instance.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        result = f.call((1,))
        elapsed = time.monotonic() - t0
    finally:
        os.kill(redis_instance.proc.pid, signal.SIGCONT)
    assert result.value == 2 and "Timeout" in result.error
    # One connection attempt (the server accepts the queued ones when it wakes): no retry after the timeout.
    observer.close()
    after = raw(redis_instance).info("stats")["total_connections_received"]
    assert after - before - 1 == 1  # minus the new observer's own connection
    assert elapsed < 1.6 * timeout  # a retry would have taken 2 x timeout


def test_calls_during_a_hang_are_bypassed_and_the_bypass_ends_when_the_server_answers(redis_instance, caplog):
    timeout = 1.0
    cache = ComputationCache(RedisBackend(redis_instance.url, timeout_s=timeout), SECRET, retry_after_s=0.3)

    @cache.cached
    def f(x):
        return -x

    f(1)
    os.kill(redis_instance.proc.pid, signal.SIGSTOP)
    durations = []
    try:
        with caplog.at_level(logging.WARNING, logger="effopt.cache"):
            end = time.monotonic() + 4 * timeout  # many retry_after_s periods
            while time.monotonic() < end:
                t0 = time.monotonic()
                assert f(1) == -1
                durations.append(time.monotonic() - t0)
                time.sleep(0.02)
    finally:
        os.kill(redis_instance.proc.pid, signal.SIGCONT)
    waited = [s for s in durations if s > timeout / 2]
    assert len(waited) == 1, waited  # the first call met the hang; the probe, not the callers, waited after that
    assert len(durations) > 20
    assert sum("calls compute without the cache" in rec.getMessage() for rec in caplog.records) == 1
    # The server answers again: within retry_after_s (+ one ping) caching resumes, without a call paying for it.
    wait_until_usable(cache, timeout=0.3 + timeout + 2.0)
    assert f.call((1,)).hit


def test_statistics_are_counted_once_when_a_flush_reply_is_lost(redis_instance):
    cache = make(redis_instance, "lost:cache", stats_flush_s=3600, timeout_s=0.5)

    @cache.cached
    def f(x):
        return x

    f(1), f(1), f(1), f(1)  # the miss is flushed at once, the 3 hits are pending
    os.kill(redis_instance.proc.pid, signal.SIGSTOP)
    try:
        assert cache.flush_stats() is False  # sent, then timed out: the server has it in its socket buffer
    finally:
        os.kill(redis_instance.proc.pid, signal.SIGCONT)
    wait_until_usable(cache)  # meanwhile the server woke up and applied the batch
    assert cache.flush_stats() is True  # the same batch again: recognised, not added twice
    assert cache.stats()[f.__effopt_cache_spec__.name]["hits"] == 3


def test_local_backend_statistics_are_checked_and_batches_added_once(tmp_path):
    backend = LocalBackend(tmp_path / "c")
    delta = {("ns", "fn"): {"hits": 2, "saved_s": 1.5}}
    assert backend.add_stats(delta, "batch-1") == []
    assert backend.add_stats(delta, "batch-1") == []  # retried after a lost reply: not added again
    assert backend.read_stats("ns")["ns"]["fn"]["hits"] == 2
    db = backend._db()
    db.execute("UPDATE stats SET hits = 'abc', saved_s = -1")
    problems: list[str] = []
    stats = backend.read_stats(None, problems)["ns"]["fn"]
    assert (stats["hits"], stats["saved_s"]) == (0, 0.0) and len(problems) == 2
    assert backend.add_stats(delta, "batch-2") == []
    assert backend.read_stats("ns")["ns"]["fn"]["hits"] == 2
    db.execute("UPDATE stats SET misses = 'x'")
    repairs = backend.add_stats({("ns", "fn"): {"misses": 1}}, "batch-3")
    assert len(repairs) == 1 and "'misses'" in repairs[0]
    assert backend.read_stats("ns")["ns"]["fn"]["misses"] == 1


@pytest.mark.parametrize("field,value", [("hits", b"12"), ("hits", b"-1"), ("hits", b"1.5"), ("hits", b"9" * 19),
                                         ("saved_s", b"1.25"), ("saved_s", b"inf"), ("saved_s", b"1e400"),
                                         ("saved_s", b"0x10")])
def test_parse_stat_accepts_only_counters(field, value):
    from effopt.cache.base import parse_stat

    expected = {b"12": 12, b"1.25": 1.25}.get(value)
    assert parse_stat(field, value) == expected


def test_read_only_replica_refuses_writes_without_an_outage(redis_instance):
    from tests.services import RedisServer

    primary = make(redis_instance, "ro:cache")

    @primary.cached
    def f(x):
        return x * 3

    f(1)
    replica_server = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(redis_instance.port))).start()
    try:
        deadline = time.monotonic() + 20
        while raw(replica_server).info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.1)
        while raw(replica_server).get(entry_key("ro:cache", f, 1)) is None:
            assert time.monotonic() < deadline, "the entry did not reach the replica"
            time.sleep(0.1)
        replica = make(replica_server, "ro:cache")
        g = replica.cached(f.__wrapped__)
        assert g.call((1,)).hit  # reads work
        refused = g.call((2,))
        assert refused.value == 6 and not refused.stored and "read only replica" in refused.error
        assert replica._backend_usable()  # not an outage
        assert g.call((1,)).hit
        replica.close()
    finally:
        replica_server.close()
        primary.close()
