"""Single-flight with real processes: one computation, and takeover when the holder is SIGKILLed."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time

import numpy as np

from effopt.cache import ComputationCache
from tests.cache.conftest import backend_spec, entry_count
from tests.cache.workers import SECRET, call_compute, compute

CTX = multiprocessing.get_context("fork")


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def no_more_results(results) -> bool:
    try:
        results.get(timeout=0.2)
    except queue.Empty:
        return True
    return False


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_concurrent_processes_compute_once(backend, tmp_path):
    n_procs = 8
    log, gate = tmp_path / "log", tmp_path / "gate"
    gate.touch()  # the first computation holds until every process is waiting
    barrier = CTX.Barrier(n_procs)
    results = CTX.Queue()
    procs = [
        CTX.Process(target=call_compute, args=(backend_spec(backend), 50, str(log), str(gate), barrier, results))
        for _ in range(n_procs)
    ]
    for p in procs:
        p.start()
    try:
        wait_for(lambda: "start" in lines(log), 30, "the first computation")
        time.sleep(0.5)  # the others are polling by now
        gate.unlink()
        outcomes = [results.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert [p.exitcode for p in procs] == [0] * n_procs
    assert lines(log).count("start") == 1
    assert lines(log).count("done") == 1
    expected = (np.arange(50) ** 2).tolist()
    assert all(o["value"] == expected for o in outcomes)
    assert sorted(o["hit"] for o in outcomes) == [False] + [True] * (n_procs - 1)

    stats = ComputationCache(backend, SECRET, namespace="tests").stats()["tests.cache.workers.compute"]
    assert stats["misses"] == 1 and stats["hits"] == n_procs - 1  # counted by every process, shared by the backend
    assert entry_count(backend) == 1


def test_waiter_takes_over_when_the_holder_is_killed(backend, tmp_path):
    log, gate = tmp_path / "log", tmp_path / "gate"
    gate.touch()
    results = CTX.Queue()
    spec = backend_spec(backend)
    holder = CTX.Process(target=call_compute, args=(spec, 20, str(log), str(gate), None, results))
    holder.start()
    wait_for(lambda: f"{holder.pid}" in log.read_text() if log.exists() else False, 30, "the holder to start")
    ready = CTX.Event()
    waiter = CTX.Process(target=call_compute, args=(spec, 20, str(log), str(gate), None, results, ready))
    waiter.start()
    try:
        assert ready.wait(30)
        time.sleep(0.3)  # the waiter finds the lock held and polls
        assert lines(log).count("start") == 1
        gate.unlink()  # the waiter's own computation will not hold
        os.kill(holder.pid, signal.SIGKILL)  # mid-computation: nothing stored, lock not released
        holder.join(10)
        outcome = results.get(timeout=30)
    finally:
        waiter.join(30)
        for p in (holder, waiter):
            if p.is_alive():
                p.kill()
    assert holder.exitcode == -signal.SIGKILL
    assert waiter.exitcode == 0
    assert outcome["pid"] == waiter.pid
    assert not outcome["hit"] and outcome["waited_s"] > 0  # it waited for the holder, then computed itself
    assert outcome["value"] == (np.arange(20) ** 2).tolist()
    with_pids = log.read_text().splitlines()
    assert with_pids == [f"start {holder.pid}", f"start {waiter.pid}", f"done {waiter.pid}"]
    assert entry_count(backend) == 1
    assert no_more_results(results)  # the killed holder never finished

    cache = ComputationCache(backend, SECRET, namespace="tests")
    again = cache.cached(ignore=("log", "gate"))(compute).call((20, str(log), str(gate)))
    assert again.hit and again.value.tolist() == outcome["value"]


def test_holder_renews_its_lease_through_a_long_computation(redis_server, redis_prefix, tmp_path):
    from effopt.cache import RedisBackend

    backend = RedisBackend(redis_server.url, prefix=redis_prefix)
    spec = backend_spec(backend)  # workers use lock_lease_s=1.0
    log, gate = tmp_path / "log", tmp_path / "gate"
    gate.touch()
    results = CTX.Queue()
    ready = CTX.Event()
    procs = [
        CTX.Process(target=call_compute, args=(spec, 9, str(log), str(gate), None, results, event))
        for event in (None, ready)
    ]
    procs[0].start()
    try:
        wait_for(lambda: "start" in lines(log), 30, "the holder to start")
        procs[1].start()
        assert ready.wait(30)
        time.sleep(2.5)  # 2.5 leases: without renewal the waiter would have taken the lock over
        gate.unlink()
        outcomes = [results.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert lines(log).count("start") == 1
    assert sorted(o["hit"] for o in outcomes) == [False, True]
    backend.close()
