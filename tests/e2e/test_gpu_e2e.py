"""GPU pools and leases in a real Airflow standalone, on a static two-GPU inventory, triggered over REST.

The module starts its own small standalone (its DAG folder holds only the GPU DAGs and the graph DAGs) with
``[effopt] gpu_inventory = static``, a file of one node with two T4s, pools in thousandths
(``gpu_pool_unit = milli``), two tenant quotas, and leases in the session's real redis-server (database 7).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.airflow_harness import AirflowServer
from tests.browser import artifact

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TWO_T4 = "nodes:\n  - {name: gpu-box, gpus: 2, model: T4, gpu_memory_mib: 15360}\n"
ONE_T4 = "nodes:\n  - {name: gpu-box, gpus: 1, model: T4, gpu_memory_mib: 15360}\n"
DAG_FILES = ("effopt_gpu_pools.py", "effopt_gpu_example.py", "effopt_graphs.py")


@pytest.fixture(scope="module")
def gpu_airflow(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("gpu-airflow")
    dags = root / "dags"
    dags.mkdir()
    for name in DAG_FILES:
        (dags / name).symlink_to(REPO / "dags" / name)
    inventory = root / "gpus.yaml"
    inventory.write_text(TWO_T4)
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__EFFOPT__GPU_INVENTORY": "static",
        "AIRFLOW__EFFOPT__GPU_INVENTORY_FILE": str(inventory),
        "AIRFLOW__EFFOPT__GPU_POOL_UNIT": "milli",
        "AIRFLOW__EFFOPT__GPU_QUOTAS": "team-a:T4=1,team-b:*=8",
        "AIRFLOW__EFFOPT__GPU_CAPACITY_POLL_S": "1",
        "AIRFLOW__EFFOPT__GPU_LEASE_TTL_S": "30",
        "AIRFLOW_CONN_EFFOPT_REDIS": redis_server.url.rsplit("/", 1)[0] + "/7",
        "AIRFLOW__EFFOPT__CACHE_SECRET": "effopt-gpu-e2e-" + "s" * 32,
    }
    server = AirflowServer(root / "home", env).start()
    server.inventory = inventory
    yield server
    server.stop()


def _effopt_pools(client) -> dict[str, int]:
    return {p["name"]: p["slots"] for p in client.get("/api/v2/pools", limit=100)["pools"]
            if p["name"].startswith("effopt_")}


def _sync(client) -> dict:
    run_id, state = client.run_dag("effopt_gpu_pools")
    assert state == "success", client.failure_report("effopt_gpu_pools", run_id)
    return client.xcom("effopt_gpu_pools", run_id, "sync_pools")


def test_pools_from_the_static_inventory_then_a_second_run_is_a_no_op_and_graph_gpu_nodes_lease(gpu_airflow):
    client = gpu_airflow.client
    client.wait_for_dag("effopt_graph_gpu_training")
    client.unpause("effopt_graph_gpu_training")
    graph_run = client.trigger("effopt_graph_gpu_training")  # runs beside the pool syncs

    first = _sync(client)
    assert first["inventory"] == "2 GPUs on 1 node: 2 x T4" and first["unit"] == "milli"
    expected = {"effopt_gpu": 2000, "effopt_gpu_T4": 2000, "effopt_quota_team-a_T4": 1000,
                "effopt_quota_team-b": 2000, "effopt_serial": 1}
    assert _effopt_pools(client) == expected  # the pools Airflow's Pools page lists
    quota = next(c for c in first["changes"] if c["pool"] == "effopt_quota_team-b")
    assert quota["reason"] == "quota team-b:*=8 GPUs, capped at the 2 GPUs of any model that exist"

    second = _sync(client)
    assert {c["pool"]: c["action"] for c in second["changes"]} == {name: "keep" for name in expected}
    assert _effopt_pools(client) == expected

    assert client.wait_for_run("effopt_graph_gpu_training", graph_run, timeout=300) == "success", \
        client.failure_report("effopt_graph_gpu_training", graph_run)
    for task in ("train_mlp", "train_mlp_wide"):
        lease = client.xcom("effopt_graph_gpu_training", graph_run, task, key="effopt_gpu_lease")
        assert lease["node"] == "gpu-box" and lease["gpu_milli"] == 1000 and len(lease["devices"]) == 1


def _anonymous_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _login(page, server) -> None:
    page.goto(server.url + "/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(server.standalone.admin_password())
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="effopt").wait_for(timeout=60_000)


def test_three_gpu_tasks_on_two_gpus_the_third_deferred_the_page_and_a_shrink_while_they_run(gpu_airflow, browser):
    client, dag = gpu_airflow.client, "effopt_gpu_example"
    client.wait_for_dag(dag)
    client.unpause(dag)
    run_id = client.trigger(dag, {"seconds": 25})
    states_seen: dict[str, set] = {}
    page_checked = shrink = None
    deadline = time.monotonic() + 300
    while client.run_state(dag, run_id) not in ("success", "failed"):
        assert time.monotonic() < deadline, client.failure_report(dag, run_id)
        states = client.task_states(dag, run_id)
        for task, state in states.items():
            states_seen.setdefault(task, set()).add(state)
        running = [t for t, s in states.items() if s == "running"]
        deferred = [t for t, s in states.items() if s == "deferred"]
        if page_checked is None and len(running) == 2 and len(deferred) == 1:
            gpu = client.get("/effopt/api/gpu")
            holders = sorted(x["holder_info"]["task_id"] for x in gpu["leases"])
            if holders == sorted(running):  # both leases taken (a task is "running" a moment before it leases)
                page_checked = gpu
                assert _anonymous_status(gpu_airflow.url + "/effopt/api/gpu") == 401
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                try:
                    page = context.new_page()
                    _login(page, gpu_airflow)
                    page.goto(gpu_airflow.url + "/effopt/#gpu")
                    section = page.locator("h2#gpu")
                    section.wait_for(timeout=30_000)
                    assert "Active leases" in page.inner_text("body")
                    # The GPU section alone (the README's picture): from its heading to the end of the page.
                    top = page.evaluate("document.getElementById('gpu').getBoundingClientRect().top + window.scrollY")
                    height = page.evaluate("document.documentElement.scrollHeight")
                    page.screenshot(path=str(artifact("effopt-gpu-section.png")), full_page=True,
                                    clip={"x": 0, "y": top - 8, "width": 1280, "height": height - top + 8})
                finally:
                    context.close()
                # The inventory shrinks to one GPU while two tasks hold 1200 thousandths of the pool.
                gpu_airflow.inventory.write_text(ONE_T4)
                shrink = _sync(client)
                shrunk = _effopt_pools(client)
                gpu_airflow.inventory.write_text(TWO_T4)  # the GPU is back: so are the pools
                restored = _sync(client)
                assert _effopt_pools(client)["effopt_gpu"] == 2000
        time.sleep(1)
    assert client.run_state(dag, run_id) == "success", client.failure_report(dag, run_id)

    # The page listed both leases with their tasks while they ran, and the GPUs they hold.
    assert page_checked is not None, f"never saw two tasks running and one deferred: {states_seen}"
    assert {(g["device"], g["leased_milli"]) for g in page_checked["gpus"]} == {(0, 600), (1, 600)}
    assert page_checked["fragmentation"]["free_milli"] == 800
    assert {p["pool"]: p["slots"] for p in page_checked["pools"]}["effopt_gpu"] == 2000
    # The shrink below the occupied slots was done and reported; the running tasks went on.
    change = {c["pool"]: c for c in shrink["changes"]}["effopt_gpu"]
    assert (change["action"], change["slots_before"], change["slots_after"], change["occupied"]) == \
        ("shrink-occupied", 2000, 1000, 1200), change
    assert "running tasks go on, new ones wait" in change["reason"]
    assert (shrunk["effopt_gpu"], shrunk["effopt_gpu_T4"], shrunk["effopt_quota_team-b"]) == (1000, 1000, 1000)

    results = {t: client.xcom(dag, run_id, t) for t in ("gpu_task_1", "gpu_task_2", "gpu_task_3")}
    leases = {t: client.xcom(dag, run_id, t, key="effopt_gpu_lease") for t in results}
    # Each saw its own devices: the lease's, in CUDA_VISIBLE_DEVICES.
    for t, r in results.items():
        assert r["cuda_visible_devices"] == leases[t]["visible_devices"] == str(leases[t]["devices"][0]), (t, r)
    # At most two at once: never three overlapping, and two that overlapped held different GPUs.
    spans = sorted((r["start"], r["end"], r["cuda_visible_devices"], t) for t, r in results.items())
    for i, (_, e1, d1, _) in enumerate(spans):
        overlapping = [(s2, d2) for s2, e2, d2, _ in spans[i + 1:] if s2 < e1]
        assert len(overlapping) <= 1 and all(d2 != d1 for _, d2 in overlapping), spans
    assert sum(1 for _, _, _, _ in spans) == 3
    # One task waited deferred (no worker slot held) and ran when a lease freed, in its first try.
    waited = [t for t, seen in states_seen.items() if "deferred" in seen]
    assert len(waited) == 1, states_seen
    ti = next(x for x in client.task_instances(dag, run_id) if x["task_id"] == waited[0])
    assert ti["try_number"] == 1
    log = client.task_log(dag, run_id, waited[0])
    assert "waiting in the triggerer" in log and "no GPU capacity now" in log
    assert max(r["start"] for r in results.values()) >= min(r["end"] for r in results.values())

    assert {c["pool"]: c["slots_after"] for c in restored["changes"]}["effopt_gpu"] == 2000
    # Afterwards no lease is left.
    assert client.get("/effopt/api/gpu")["leases"] == []
