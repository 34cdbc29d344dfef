"""The effopt store on a real PostgreSQL server: what a scaled-out deployment runs (``[effopt] store_url``)."""

from __future__ import annotations

import multiprocessing
import uuid

from effopt.store import EffoptStore
from tests.test_store import _record, _write_many


def _fresh(postgres_server) -> str:
    name = f"effopt_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    return postgres_server.url(name)


def test_round_trip_and_upsert_of_a_retried_write(postgres_server):
    store = EffoptStore(_fresh(postgres_server))
    try:
        store.record_task_usage(_record(run_id="r1", hostname="worker-a", cpu_s=1.5))
        store.record_task_usage(_record(run_id="r1", hostname="worker-b", cpu_s=2.5))  # the same try again
        store.record_task_usage(_record(run_id="r1", try_number=2, hostname="worker-b"))
        rows = store.task_usage(run_id="r1")
    finally:
        store.dispose()
    assert [(r.try_number, r.hostname) for r in rows] == [(1, "worker-b"), (2, "worker-b")]
    assert rows[0].cpu_s == 2.5


def test_task_processes_on_many_workers_creating_the_schema_at_once(postgres_server):
    """Sixteen fresh processes write their first record to an empty database at the same moment: they race
    to create the tables (on Postgres a lost race is a duplicate-key error on pg_type); one creates them,
    the others find them, and every record lands."""
    url = _fresh(postgres_server)
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(url, w, errors)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [] and all(p.exitcode == 0 for p in procs)
    store = EffoptStore(url)
    try:
        assert len(store.task_usage()) == 16 * 10
    finally:
        store.dispose()


def test_gpu_leases_on_postgres_run_on_the_database_s_clock(postgres_server, monkeypatch):
    """Workers on several machines share the lease table: a worker whose clock runs an hour ahead must not
    stamp (or expire) leases by it."""
    import time

    from effopt.gpu.inventory import GpuDevice, Inventory, InventoryNode
    from effopt.gpu.leases import GpuLeaseManager, Holder, LeaseRequest, StoreLeaseBackend

    store = EffoptStore(_fresh(postgres_server))
    try:
        inventory = Inventory.of([InventoryNode("box", (GpuDevice(0, "T4"), GpuDevice(1, "T4")))], "static")
        manager = GpuLeaseManager(StoreLeaseBackend(store), inventory, ttl_s=60)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this process's clock, an hour fast
        lease = manager.acquire(LeaseRequest(1), Holder("d", "t", "r"))
        monkeypatch.undo()
        assert abs(lease.acquired_at - time.time()) < 30 and lease.expires_at - lease.acquired_at == 60
    finally:
        store.dispose()
