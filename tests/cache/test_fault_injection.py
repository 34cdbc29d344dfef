"""Fault injection (issue 14): 500 cached calls while a helper stops, freezes, restarts and corrupts Redis.

Protocol (seeded, so a failure replays): one caller makes ``CALLS`` cached
calls over ``KEYS`` distinct inputs, pausing 0-100 ms between calls.  A helper
thread meanwhile repeats, 0.2-0.8 s apart, one action drawn at random
(corruption as often as the three others together, its kinds in turn):

* ``stop``: SIGKILL the server, leave it down 0.2-1.5 s, start it again;
* ``freeze``: SIGSTOP it for 0.5-2.5 s (alive, not answering), then SIGCONT;
* ``restart``: SIGTERM and start it again at once;
* ``corrupt``: one of: an entry key turned into a hash; an entry's bytes
  overwritten; a statistics field set to ``abc``; a statistics hash turned
  into a string; garbage members added to the statistics index; a lock key
  without a lease; out of memory (``maxmemory 1``) for 0.5-2 s.

The server keeps its data across stops (append-only file, fsync always), so
the shared counters can be checked at the end: the corruptor records, in the
same atomic step, each counter value it destroys.

Asserted: every call returns the right value; no call spends more than
``TIMEOUT_S`` + ``SLACK_S`` outside its own computation (one backend timeout,
plus the few fast requests of a call and scheduling on a busy machine; a
retried timeout would take 2 x ``TIMEOUT_S``); and once the server is back,
the shared counters equal the calls: hits, misses, errors and rejected
entries as the calls reported them, less what the corruptor destroyed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time

import pytest
import redis

from effopt.cache import ComputationCache, RedisBackend
from effopt.cache.base import parse_stat
from tests.cache.workers import SECRET
from tests.services import RedisServer, ServiceUnavailable

pytestmark = pytest.mark.slow

SEED = 14
CALLS = 500
KEYS = 40
TIMEOUT_S = 1.0
SLACK_S = 0.5
PREFIX = "fi:cache"
COUNTERS = ("hits", "misses", "errors", "rejected")
CORRUPTIONS = ("entry_type", "stat_field", "lock", "oom", "entry_bytes", "index", "stat_type")

_STEAL_FIELD = """
local old = redis.call('hget', KEYS[1], ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], 'abc')
return old
"""
_STEAL_HASH = """
local old = {}
if redis.call('type', KEYS[1]).ok == 'hash' then old = redis.call('hgetall', KEYS[1]) end
redis.call('del', KEYS[1])
redis.call('set', KEYS[1], 'garbage')
return old
"""


def expected(x: int) -> tuple[int, int, str]:
    return x, x * x, "v" * (x % 5)


class Faults(threading.Thread):
    """The helper: injects one random fault after another until stopped."""

    def __init__(self, server: RedisServer, rng: random.Random, stats_key: str) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.server = server
        self.rng = rng
        self.stats_key = stats_key
        self.stop_event = threading.Event()
        self.done: collections.Counter[str] = collections.Counter()
        self.destroyed: collections.Counter[str] = collections.Counter()
        self.error: BaseException | None = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=10)

    def run(self) -> None:
        try:
            while not self.stop_event.wait(self.rng.uniform(0.2, 0.8)):  # ok: the documented protocol
                action = self.rng.choice(["stop", "freeze", "restart", "corrupt", "corrupt", "corrupt"])  # ok: seeded
                getattr(self, action)()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)
        time.sleep(self.rng.uniform(0.2, 1.5))  # ok: the documented protocol
        self.server.start()
        self.done["stop"] += 1

    def freeze(self) -> None:
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(self.rng.uniform(0.5, 2.5))  # ok: the documented protocol
        finally:
            os.kill(self.server.proc.pid, signal.SIGCONT)
        self.done["freeze"] += 1

    def restart(self) -> None:
        self.server.stop()
        self.server.start()
        self.done["restart"] += 1

    def corrupt(self) -> None:
        r = self.client()
        try:
            kind = CORRUPTIONS[sum(v for k, v in self.done.items() if k.startswith("corrupt:")) % len(CORRUPTIONS)]
            entries = sorted(r.scan_iter(match=f"{PREFIX}:e:*", count=1000))
            if kind in ("entry_type", "entry_bytes", "lock") and not entries:
                kind = "stat_field"
            if kind == "entry_type":
                key = self.rng.choice(entries)  # ok: the documented fault-injection protocol
                r.delete(key)
                r.hset(key, "junk", "1")
            elif kind == "entry_bytes":
                r.setrange(self.rng.choice(entries), 40, os.urandom(8))  # ok: the documented fault-injection protocol
            elif kind == "stat_field":
                field = self.rng.choice(COUNTERS)  # ok: the documented fault-injection protocol
                self._lost({field: r.eval(_STEAL_FIELD, 1, self.stats_key, field)})
            elif kind == "stat_type":
                old = r.eval(_STEAL_HASH, 1, self.stats_key)
                self._lost(dict(zip(old[::2], old[1::2], strict=True)))
            elif kind == "index":
                r.sadd(f"{PREFIX}:s", b"\xff\xfe", b"no-colon", b"ns:with space")
            elif kind == "lock":
                key = self.rng.choice(entries).decode().replace(f"{PREFIX}:e:", f"{PREFIX}:l:", 1)  # ok: seeded
                r.set(key, "left without a lease")
            else:
                r.config_set("maxmemory-policy", "noeviction")
                r.config_set("maxmemory", 1)
                try:
                    time.sleep(self.rng.uniform(0.5, 2.0))  # ok: the documented protocol
                finally:
                    r.config_set("maxmemory", 0)
            self.done[f"corrupt:{kind}"] += 1
        finally:
            r.close()

    def _lost(self, fields: dict) -> None:
        """Counter values the corruption destroyed (they cannot be in the shared counters afterwards)."""
        for raw_field, raw_value in fields.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            value = parse_stat(field, raw_value) if raw_value is not None else 0
            if field in COUNTERS and value:
                self.destroyed[field] += value


def test_500_calls_under_random_stops_freezes_restarts_and_corruption(tmp_path, capsys):
    try:
        server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")).start()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    rng_calls = random.Random(SEED)  # ok: the documented fault-injection protocol
    backend = RedisBackend(server.url, prefix=PREFIX, timeout_s=TIMEOUT_S)
    cache = ComputationCache(backend, SECRET, namespace="fi", retry_after_s=0.2, stats_flush_s=0.5,
                             lock_lease_s=2.0, lock_timeout_s=10.0)

    @cache.cached
    def compute(x: int) -> tuple[int, int, str]:
        return expected(x)

    name = compute.__effopt_cache_spec__.name
    faults = Faults(server, random.Random(SEED + 1), f"{PREFIX}:s:fi:{name}")  # ok: the documented protocol
    outcomes = collections.Counter()
    overheads: list[float] = []
    wrong: list[tuple[int, object]] = []
    started = time.monotonic()
    faults.start()
    try:
        for _ in range(CALLS):
            x = rng_calls.randrange(KEYS)  # ok: the documented fault-injection protocol
            t0 = time.monotonic()
            result = compute.call((x,))
            overheads.append(time.monotonic() - t0 - result.compute_s)
            if result.value != expected(x):
                wrong.append((x, result))
            outcomes["hits"] += result.hit
            outcomes["misses"] += not result.hit
            outcomes["errors"] += result.error is not None
            outcomes["rejected"] += result.rejected
            outcomes["stored"] += result.stored
            time.sleep(rng_calls.uniform(0.0, 0.1))  # ok: the documented protocol
    finally:
        faults.stop_event.set()
        faults.join(30)
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
    duration = time.monotonic() - started
    try:
        assert faults.error is None, faults.error
        assert wrong == [], wrong[:3]
        assert max(overheads) <= TIMEOUT_S + SLACK_S, sorted(overheads)[-5:]

        deadline = time.monotonic() + 20
        while not (cache._backend_usable() and cache.flush_stats(force=True)):
            assert time.monotonic() < deadline, "the counts were not flushed after the faults ended"
            time.sleep(0.1)
        assert cache.pending_stats() == {}
        shared = cache.stats()[name]
        expected_counts = {field: outcomes[field] - faults.destroyed[field] for field in COUNTERS}
        assert {field: shared[field] for field in COUNTERS} == expected_counts
        assert outcomes["hits"] + outcomes["misses"] == CALLS
        # The faults really happened, and caching worked in between.
        assert faults.done["stop"] and faults.done["freeze"] and faults.done["restart"]
        assert {f"corrupt:{kind}" for kind in CORRUPTIONS} <= set(faults.done)
        assert outcomes["hits"] > CALLS / 4 and outcomes["errors"] > 0 and outcomes["rejected"] > 0
    finally:
        cache.close()
        server.close()
    overheads.sort()
    report = {
        "calls": CALLS,
        "distinct_inputs": KEYS,
        "seconds": round(duration, 1),
        "faults": dict(sorted(faults.done.items())),
        "hits": outcomes["hits"],
        "misses": outcomes["misses"],
        "calls_with_backend_error": outcomes["errors"],
        "entries_rejected": outcomes["rejected"],
        "entries_stored": outcomes["stored"],
        "wrong_values": len(wrong),
        "overhead_s": {"median": round(overheads[len(overheads) // 2], 4),
                       "p99": round(overheads[int(len(overheads) * 0.99)], 3), "max": round(overheads[-1], 3),
                       "budget": TIMEOUT_S + SLACK_S},
        "counters_destroyed_by_corruption": dict(faults.destroyed),
        "shared_counters": {field: shared[field] for field in COUNTERS},
    }
    with capsys.disabled():
        print("\nfault injection:", json.dumps(report))
