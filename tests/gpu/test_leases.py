"""GPU leases against a real redis-server and the embedded store: races of many processes, holders that die,
holders that ask twice, and requests that can never fit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from effopt.gpu.inventory import GpuDevice, Inventory, InventoryNode, MigSlice, RunningRequest
from effopt.gpu.leases import (
    GpuLeaseManager,
    Holder,
    Lease,
    LeaseCluster,
    LeaseRequest,
    LeaseRequestError,
    NoCapacity,
    RedisLeaseBackend,
    StoreLeaseBackend,
)
from effopt.store import EffoptStore

GIB = 1024


def mixed_inventory() -> Inventory:
    """8 GPUs of mixed sizes: 4 x A100 (40 GiB), 2 x A10 (24 GiB), 2 x T4 (16 GiB), on three nodes."""
    return Inventory.of([
        InventoryNode("a100", tuple(GpuDevice(i, "A100", f"GPU-a{i}", 40 * GIB) for i in range(4))),
        InventoryNode("a10", tuple(GpuDevice(i, "A10", f"GPU-b{i}", 24 * GIB) for i in range(2))),
        InventoryNode("t4", tuple(GpuDevice(i, "T4", f"GPU-t{i}", 16 * GIB) for i in range(2))),
    ], "static", "test")


#: What the racing processes ask, in turn (32 processes: each request four times).
RACE_REQUESTS = [LeaseRequest(1), LeaseRequest(1, 500), LeaseRequest(1, 250), LeaseRequest(2),
                 LeaseRequest(1, gpu_memory_mib=20 * GIB), LeaseRequest(1, 750), LeaseRequest(1, 300, models=("T4",)),
                 LeaseRequest(1, 400)]


def _backend(kind: str, where: str, prefix: str = ""):
    if kind == "redis":
        import redis

        return RedisLeaseBackend(redis.Redis.from_url(where), prefix=prefix)
    return StoreLeaseBackend(EffoptStore(where, connect_timeout_s=120))


def _race(kind: str, where: str, prefix: str, n: int, results, release_now) -> None:
    try:
        manager = GpuLeaseManager(_backend(kind, where, prefix), mixed_inventory(), ttl_s=120)
        got = manager.acquire(RACE_REQUESTS[n % len(RACE_REQUESTS)], Holder("race", f"p{n}", "run"))
        results.put((n, "lease", got.to_dict()) if isinstance(got, Lease) else (n, "none", got.reason))
        release_now.wait(120)
        if isinstance(got, Lease):
            manager.release(got)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put((n, "error", f"{type(exc).__name__}: {exc}"))


def _run_race(kind: str, where: str, prefix: str = "") -> tuple[dict[int, dict], dict[int, str], GpuLeaseManager]:
    ctx = multiprocessing.get_context("fork")
    results, release_now = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_race, args=(kind, where, prefix, n, results, release_now)) for n in range(32)]
    for p in procs:
        p.start()
    got = [results.get(timeout=180) for _ in procs]
    manager = GpuLeaseManager(_backend(kind, where, prefix), mixed_inventory())
    held = manager.list()  # every winner still holds its lease here
    release_now.set()
    for p in procs:
        p.join(timeout=120)
    errors = [r for r in got if r[1] == "error"]
    assert errors == [] and all(p.exitcode == 0 for p in procs)
    leases = {n: d for n, what, d in got if what == "lease"}
    none = {n: d for n, what, d in got if what == "none"}
    assert len(leases) + len(none) == 32
    assert sorted(x.lease_id for x in held) == sorted(d["lease_id"] for d in leases.values())
    return leases, none, manager


def _check_race(leases: dict[int, dict], none: dict[int, str]) -> None:
    # No GPU is ever over-committed: the winners held their leases all at once.
    used: dict[tuple[str, int], int] = {}
    for d in leases.values():
        for device in d["devices"]:
            used[(d["node"], device)] = used.get((d["node"], device), 0) + d["gpu_milli"]
    assert used and max(used.values()) <= 1000, used
    # Each lease is what was asked.
    models = {"a100": "A100", "a10": "A10", "t4": "T4"}
    for n, d in leases.items():
        req = RACE_REQUESTS[n % len(RACE_REQUESTS)]
        assert len(d["devices"]) == req.gpus and d["gpu_milli"] == req.milli
        assert d["model"] == models[d["node"]]
        if req.models:
            assert d["model"] in req.models
        if req.gpu_memory_mib:
            assert d["model"] in ("A100", "A10")
        assert len(set(d["devices"])) == len(d["devices"])
    # Every "no capacity" was true: with the winners' leases in place, that request fits nowhere.
    cluster = LeaseCluster(mixed_inventory())
    cluster.apply_leases(Lease.from_dict(d) for d in leases.values())
    assert cluster.state is not None
    for n, reason in none.items():
        req = RACE_REQUESTS[n % len(RACE_REQUESTS)]
        assert not cluster.state.feasible(cluster.gpu_request(req)).any(), (n, req, reason)
        assert reason.startswith("no node fits")
    # The cluster is full for some request, else nobody would have been refused.
    assert none


def test_32_processes_race_for_8_gpus_on_redis(redis_server):
    prefix = f"effopt-test:race:{time.time_ns()}"
    leases, none, _ = _run_race("redis", redis_server.url, prefix)
    _check_race(leases, none)


def test_32_processes_race_for_8_gpus_on_the_store(tmp_path):
    leases, none, _ = _run_race("store", f"sqlite:///{tmp_path / 'effopt.db'}")
    _check_race(leases, none)


# -- a holder that dies -------------------------------------------------------------------------------------
def _hold_and_renew(kind: str, where: str, prefix: str, ttl: float, started) -> None:
    manager = GpuLeaseManager(_backend(kind, where, prefix), one_gpu(), ttl_s=ttl)
    lease = manager.acquire(LeaseRequest(1), Holder("dag", "doomed", "run"))
    assert isinstance(lease, Lease)
    started.set()
    while True:  # a live task renews every third of the TTL, until it is killed
        time.sleep(ttl / 3)
        lease = manager.renew(lease) or lease


def one_gpu() -> Inventory:
    return Inventory.of([InventoryNode("box", (GpuDevice(0, "T4"),))], "static", "test")


def _sigkilled_holder(kind: str, where: str, prefix: str = "") -> None:
    ttl = 4.0
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_hold_and_renew, args=(kind, where, prefix, ttl, started))
    proc.start()
    assert started.wait(60)
    manager = GpuLeaseManager(_backend(kind, where, prefix), one_gpu(), ttl_s=ttl)
    held = manager.list()
    assert [x.holder_info.task_id for x in held] == ["doomed"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    refused = manager.acquire(LeaseRequest(1), Holder("dag", "next", "run"))
    got: Lease | NoCapacity = refused
    deadline = time.monotonic() + 60
    while not isinstance(got, Lease):
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.2)
        got = manager.acquire(LeaseRequest(1), Holder("dag", "next", "run"))
    assert isinstance(refused, NoCapacity)  # taken while its holder's lease was alive
    assert got.devices == (0,) and got.acquired_at >= held[0].expires_at
    assert [x.holder_info.task_id for x in manager.list()] == ["next"]


def test_a_sigkilled_holder_s_lease_expires_on_redis(redis_server):
    _sigkilled_holder("redis", redis_server.url, f"effopt-test:kill:{time.time_ns()}")


def test_a_sigkilled_holder_s_lease_expires_on_the_store(tmp_path):
    _sigkilled_holder("store", f"sqlite:///{tmp_path / 'effopt.db'}")


# -- the same holder twice, releases, bad requests ------------------------------------------------------------
@pytest.fixture(params=["redis", "store"])
def manager(request, tmp_path):
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        import redis

        backend = RedisLeaseBackend(redis.Redis.from_url(server.url), prefix=f"effopt-test:m:{time.time_ns()}")
    else:
        backend = StoreLeaseBackend(EffoptStore(f"sqlite:///{tmp_path / 'effopt.db'}"))
    return GpuLeaseManager(backend, mixed_inventory(), ttl_s=60)


def test_the_same_holder_asking_twice_gets_the_same_lease(manager):
    holder = Holder("dag", "train", "manual__1", map_index=3, try_number=2)
    first = manager.acquire(LeaseRequest(1, 500), holder)
    again = manager.acquire(LeaseRequest(1, 500), holder)
    assert isinstance(first, Lease) and isinstance(again, Lease)
    assert (again.lease_id, again.node, again.devices) == (first.lease_id, first.node, first.devices)
    assert again.expires_at >= first.expires_at  # renewed
    assert len(manager.list()) == 1
    # Another try of the same task instance is another holder.
    other = manager.acquire(LeaseRequest(1, 500), Holder("dag", "train", "manual__1", map_index=3, try_number=3))
    assert isinstance(other, Lease) and other.lease_id != first.lease_id


def test_release_frees_the_gpus_and_only_the_holder_releases(manager):
    big = manager.acquire(LeaseRequest(4), Holder("dag", "a", "r"))
    assert isinstance(big, Lease) and big.node == "a100" and big.devices == (0, 1, 2, 3)
    assert big.visible_devices() == "GPU-a0,GPU-a1,GPU-a2,GPU-a3"
    second = manager.acquire(LeaseRequest(4), Holder("dag", "b", "r"))
    assert isinstance(second, NoCapacity) and "4 fully free GPUs" in second.reason
    forged = Lease.from_dict({**big.to_dict(), "holder": "someone|else|r|-1|1"})
    assert manager.release(forged) is False
    assert manager.release(big) is True and manager.release(big) is False
    assert isinstance(manager.acquire(LeaseRequest(4), Holder("dag", "b", "r")), Lease)


def test_sharing_requests_pack_onto_one_gpu(manager):
    a = manager.acquire(LeaseRequest(1, 600, models=("T4",)), Holder("d", "a", "r"))
    b = manager.acquire(LeaseRequest(1, 400, models=("T4",)), Holder("d", "b", "r"))
    c = manager.acquire(LeaseRequest(1, 600, models=("T4",)), Holder("d", "c", "r"))
    assert (a.node, b.node, c.node) == ("t4", "t4", "t4")
    assert a.devices == b.devices and c.devices != a.devices  # 600 + 400 fill one GPU; the next 600 needs the other
    usage = {(g["node"], g["device"]): g["leased_milli"] for g in manager.usage()["gpus"]}
    assert usage[("t4", a.devices[0])] == 1000 and usage[("t4", c.devices[0])] == 600


@pytest.mark.parametrize(("request_", "message"), [
    (LeaseRequest(8), "8 GPUs asked, but no node has more than 4 GPUs of A10|A100|T4"),
    (LeaseRequest(1, models=("H100",)), "unknown GPU model 'H100': the inventory has A10, A100, T4"),
    (LeaseRequest(1, gpu_memory_mib=80 * GIB), "no GPU has 80 GiB of memory (the largest of A10, A100, T4 has 40 GiB)"),
    (LeaseRequest(2, models=("T4",), nodes=("a100",)), "no GPU of model T4 on a100"),
])
def test_a_request_that_can_never_fit_is_an_error_naming_why(manager, request_, message):
    with pytest.raises(LeaseRequestError) as err:
        manager.acquire(request_, Holder("d", "t", "r"))
    assert str(err.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gpus": 2, "gpu_milli": 1500}, "gpu_milli=1500 with gpus=2: gpu_milli is thousandths of ONE GPU (1..1000)"),
    ({"gpus": 1, "gpu_milli": 1500}, "gpu_milli=1500 is more than one GPU (1000): ask gpus=2 instead"),
    ({"gpus": 2, "gpu_milli": 500}, "gpu_milli=500 with gpus=2: only a one-GPU request can take part of a GPU"),
    ({"gpus": 0}, "gpus must be a whole number >= 1, got 0"),
])
def test_malformed_requests_are_named(kwargs, message):
    with pytest.raises(LeaseRequestError) as err:
        LeaseRequest(**kwargs)
    assert str(err.value).startswith(message)


def test_pool_slots_in_gpus_and_thousandths():
    assert LeaseRequest(1, 500).pool_slots("milli") == 500 and LeaseRequest(1, 500).pool_slots("gpu") == 1
    assert LeaseRequest(3).pool_slots("milli") == 3000 and LeaseRequest(3).pool_slots("gpu") == 3


def test_work_outside_effopt_holds_its_gpus_and_a_pod_under_a_lease_counts_once(tmp_path):
    inv = Inventory.of([InventoryNode("k", tuple(GpuDevice(i, "L4") for i in range(2)), running=(
        RunningRequest("ml/notebook", 1, 1000),  # on the first free GPU: Kubernetes does not say which
        RunningRequest("ml/leased-pod", 1, 1000, lease_id="an-expired-lease")))], "kubernetes", "test")
    manager = GpuLeaseManager(StoreLeaseBackend(EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")), inv)
    # Both pods hold a GPU while no effopt lease covers the second: nothing is free.
    assert isinstance(manager.acquire(LeaseRequest(1), Holder("d", "a", "r")), NoCapacity)
    # The same pods, the second now running under a live lease of effopt's: that lease is its only count.
    mine = Lease("lease-1", "d|pod|r|-1|1", "k", "k", "L4", (1,), (1,), ("",), 1000, LeaseRequest(1),
                 Holder("d", "pod", "r"))
    status, committed = manager.backend.commit(mine, [1000], 60)
    assert status == "ok"
    inv2 = Inventory.of([InventoryNode("k", inv.nodes[0].gpus, running=(
        RunningRequest("ml/notebook", 1, 1000), RunningRequest("ml/leased-pod", 1, 1000, lease_id="lease-1")))],
        "kubernetes", "test")
    usage = GpuLeaseManager(manager.backend, inv2).usage()
    assert [(g["device"], g["leased_milli"], g["other_milli"]) for g in usage["gpus"]] == [(0, 0, 1000), (1, 1000, 0)]


def test_mig_slices_are_leased_by_profile_and_never_for_a_plain_gpu_request(tmp_path):
    inv = Inventory.of([InventoryNode("m", (GpuDevice(0, "A100", "GPU-x", mig_enabled=True),),
                                      mig=tuple(MigSlice("3g.20gb", 0, f"MIG-{i}") for i in range(2)))],
                        "nvml", "test")
    manager = GpuLeaseManager(StoreLeaseBackend(EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")), inv)
    with pytest.raises(LeaseRequestError, match="MIG slices only here"):
        manager.acquire(LeaseRequest(1), Holder("d", "a", "r"))
    got = manager.acquire(LeaseRequest(1, models=("3g.20gb",)), Holder("d", "a", "r"))
    assert isinstance(got, Lease) and got.mig_profile == "3g.20gb" and got.visible_devices() == "MIG-0"


def test_fragmentation_figure_counts_what_the_recent_requests_cannot_use(tmp_path):
    inv = Inventory.of([InventoryNode("t4", tuple(GpuDevice(i, "T4") for i in range(2)))], "static", "test")
    manager = GpuLeaseManager(StoreLeaseBackend(EffoptStore(f"sqlite:///{tmp_path / 'e.db'}")), inv, policy="best-fit")
    for name in ("a", "b"):
        assert isinstance(manager.acquire(LeaseRequest(1, 600), Holder("d", name, "r")), Lease)
    frag = manager.usage()["fragmentation"]
    # Two GPUs with 400 free each; the only request seen asks 600: all 800 free thousandths are fragments.
    assert frag == {"free_milli": 800, "fragmented_milli": 800, "fragmented_pct": 100.0, "types": 1}
