"""GPU lease benchmark (issue 16): lease acquire / release latency against Redis next to a bare Redis round trip,
and the overhead ``@gpu_task`` adds to a task.

    python bench/gpu_leases_bench.py [--data ../shared/data/alibaba-gpu-2023] [--ops 300] [--trials 8]
                                     [--results bench/RESULTS-gpu-leases.md]

Starts its own redis-server (tests.services.RedisServer). Measured side by side, interleaved op by op so that
noise hits both:

* **acquire** (``GpuLeaseManager.acquire``: one Lua snapshot, a placement by the policy, one Lua commit) against a
  bare ``SET key value NX PX ttl`` (the cheapest Redis lock a task could take); **release** (one Lua script)
  against a bare ``DEL``. The requests are the GPU pods of the trace's pod list (their GPU count and thousandths,
  in file order), on two inventories: one worker with 8 GPUs (what a Celery or local worker leases from), and
  the first 64 nodes of the trace's GPU node list (a Kubernetes inventory), each kept about half full by leases
  held while the timed request comes and goes.
* **@gpu_task overhead**: fresh interpreters (as every task process is), each running one 50 ms CPU task as a
  plain ``PythonOperator`` and as a ``GpuPythonOperator`` (what ``@gpu_task`` builds) with a static inventory and
  leases in Redis, alternating the order; the overhead is the difference of import + execute time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from effopt.gpu import load_nodes, load_pods  # noqa: E402
from effopt.gpu.inventory import GpuDevice, Inventory, InventoryNode  # noqa: E402
from effopt.gpu.leases import GpuLeaseManager, Holder, Lease, LeaseRequest, RedisLeaseBackend  # noqa: E402
from tests.services import RedisServer  # noqa: E402

FILL = 0.5
CLUSTER_NODES = 64
POLICIES = ("effopt", "best-fit")


def requests_from(pods_csv: Path, limit: int) -> list[LeaseRequest]:
    out = []
    for p in load_pods(pods_csv):
        if p.num_gpu:
            out.append(LeaseRequest(p.num_gpu, None if p.gpu_milli == 1000 else p.gpu_milli))
            if len(out) >= limit:
                break
    return out


def worker_inventory() -> Inventory:
    return Inventory.of([InventoryNode("worker", tuple(GpuDevice(i, "A100") for i in range(8)))], "static", "bench")


def cluster_inventory(node_csv: Path) -> Inventory:
    nodes = load_nodes(node_csv)[:CLUSTER_NODES]
    return Inventory.of([InventoryNode(n.name, tuple(GpuDevice(i, n.model) for i in range(n.gpus))) for n in nodes],
                        "static", f"first {CLUSTER_NODES} nodes of {node_csv.name}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_leases(client, inventory: Inventory, policy: str, reqs: list[LeaseRequest], ops: int) -> dict:
    prefix = f"bench:{policy}:{inventory.detail}:{time.time_ns()}"
    manager = GpuLeaseManager(RedisLeaseBackend(client, prefix=prefix), inventory, policy=policy, ttl_s=600)
    capacity = inventory.gpu_count * 1000
    held, used, k = [], 0, 0
    while used < FILL * capacity and k < 10 * len(reqs):  # the background load, held throughout
        got = manager.acquire(reqs[k % len(reqs)], Holder("fill", f"f{k}", "r"))
        k += 1
        if isinstance(got, Lease):
            held.append(got)
            used += got.num_gpu * got.gpu_milli
    fits = [r for r in reqs if r.gpus <= max(len(n.gpus) for n in inventory.nodes)]
    acq, rel, setnx, delete, refused = [], [], [], [], 0
    for i in range(ops):
        key = f"{prefix}:lock:{i}"
        t = time.perf_counter()
        client.set(key, "holder", nx=True, px=600_000)
        setnx.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = manager.acquire(fits[i % len(fits)], Holder("bench", f"t{i}", "r"))
        acq.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.delete(key)
        delete.append(time.perf_counter() - t)
        if isinstance(got, Lease):
            t = time.perf_counter()
            manager.release(got)
            rel.append(time.perf_counter() - t)
        else:
            refused += 1
    for lease in held:
        manager.release(lease)
    return {"acquire": acq, "release": rel, "setnx": setnx, "del": delete, "refused": refused, "held": len(held),
            "fill": used / capacity}


TRIAL = textwrap.dedent("""
    import json, os, sys, time, types
    import airflow.sdk.execution_time.task_runner  # noqa: F401 - loaded in every real task process
    import effopt.plugin  # noqa: F401 - loaded in every task process (the listener)
    mode, n = sys.argv[1], sys.argv[2]

    def work():
        t = time.process_time()
        while time.process_time() - t < 0.05:
            pass

    class TI:
        dag_id, task_id, run_id, map_index, try_number = "bench", f"t{n}", "r", -1, 1
        def xcom_push(self, key, value):
            pass

    t0 = time.perf_counter()
    if mode == "gpu":
        from effopt.operators.gpu import GpuPythonOperator as Op
        kw = {"gpus": 1}
    else:
        from airflow.providers.standard.operators.python import PythonOperator as Op
        kw = {}
    op = Op(task_id=f"t{n}", python_callable=work, **kw)
    t1 = time.perf_counter()
    op.execute({"ti": TI()})
    t2 = time.perf_counter()
    print(json.dumps({"import_init": t1 - t0, "execute": t2 - t1}))
""")


def bench_task_overhead(redis_url: str, trials: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="effopt-gpu-bench-"))
    inv = home / "gpus.yaml"
    inv.write_text("nodes:\n  - {name: worker, gpus: 8, model: A100}\n")
    # Bytecode cached (under a private prefix, as an installed venv has its .pyc): imports cost what they cost
    # in a deployment, not a compile of every module (this machine sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**env, "PYTHONPYCACHEPREFIX": str(home / "pycache"), "AIRFLOW_HOME": str(home),
           "PYTHONPATH": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__EFFOPT__GPU_INVENTORY": "static",
           "AIRFLOW__EFFOPT__GPU_INVENTORY_FILE": str(inv), "AIRFLOW__EFFOPT__TASK_USAGE_LISTENER": "false",
           "AIRFLOW_CONN_EFFOPT_REDIS": redis_url, "PYTHONWARNINGS": "ignore"}
    out: dict[str, list[dict]] = {"plain": [], "gpu": []}
    for mode in ("plain", "gpu"):  # untimed: fills the bytecode cache and the store's schema
        subprocess.run([sys.executable, "-c", TRIAL, mode, "warmup"], env=env, capture_output=True, timeout=300)
    for n in range(trials):
        order = ("plain", "gpu") if n % 2 == 0 else ("gpu", "plain")
        for mode in order:
            res = subprocess.run([sys.executable, "-c", TRIAL, mode, str(n)], env=env, capture_output=True, text=True,
                                 timeout=300)
            if res.returncode != 0:
                raise RuntimeError(f"trial {mode} {n} failed: {res.stderr[-2000:]}")
            out[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "alibaba-gpu-2023"))
    ap.add_argument("--ops", type=int, default=300, help="timed acquire/release pairs per inventory and policy")
    ap.add_argument("--trials", type=int, default=8, help="fresh-interpreter trials of the @gpu_task overhead")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS-gpu-leases.md"))
    args = ap.parse_args(argv)
    data = Path(args.data)
    node_csv, pods_csv = data / "openb_node_list_gpu_node.csv", data / "openb_pod_list_default.csv"
    for f in (node_csv, pods_csv):
        if not f.is_file():
            print(f"error: {f} not found (pass --data)", file=sys.stderr)
            return 2
    reqs = requests_from(pods_csv, 2000)
    load_before = os.getloadavg()
    server = RedisServer().start()
    t0 = time.perf_counter()
    try:
        client = redis.Redis.from_url(server.url)
        rows = []
        for label, inventory in (("worker, 8 GPUs", worker_inventory()),
                                 (f"cluster, {CLUSTER_NODES} nodes", cluster_inventory(node_csv))):
            for policy in POLICIES:
                r = bench_leases(client, inventory, policy, reqs, args.ops)
                rows.append((label, inventory.gpu_count, policy, r))
                print(f"{label} {policy}: acquire {ms(statistics.median(r['acquire']))}", file=sys.stderr)
        overhead = bench_task_overhead(server.url, args.trials)
        redis_version = client.info()["redis_version"]
    finally:
        server.close()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    lines = ["# GPU lease benchmark (issue 16)", "",
             f"`python bench/gpu_leases_bench.py --ops {args.ops} --trials {args.trials}` on {platform.machine()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}, redis-server {redis_version} on loopback, "
             f"redis-py {redis.__version__}; {wall:.0f} s wall. Machine load average {load_before[0]:.1f} before and "
             f"{load_after[0]:.1f} after (shared with other jobs: absolute times are upper bounds; the ratios are "
             "measured side by side).", "",
             "## Lease acquire / release against Redis, next to a bare Redis round trip", "",
             f"Requests: the first GPU pods of `{pods_csv.name}` (GPU count and thousandths). Each inventory is kept "
             f"about {FILL:.0%} full by leases held throughout; each timed acquire is followed by its release.", "",
             "| inventory | GPUs | policy | held leases | acquire median | p95 | SET NX median | acquire / SET NX | "
             "release median | DEL median | release / DEL | refused |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, gpus, policy, r in rows:
        a, s = statistics.median(r["acquire"]), statistics.median(r["setnx"])
        rl, d = statistics.median(r["release"]), statistics.median(r["del"])
        lines.append(f"| {label} | {gpus} | {policy} | {r['held']} ({r['fill']:.0%}) | {ms(a)} | "
                     f"{ms(pct(r['acquire'], 0.95))} | {ms(s)} | {a / s:.1f}x | {ms(rl)} | {ms(d)} | {rl / d:.1f}x | "
                     f"{r['refused']} |")
    plain = [t["import_init"] + t["execute"] for t in overhead["plain"]]
    gpu = [t["import_init"] + t["execute"] for t in overhead["gpu"]]
    diffs = [g - p for g, p in zip(gpu, plain, strict=True)]
    lines += ["", "## What @gpu_task adds to a task", "",
              f"{args.trials} fresh interpreters per kind (bytecode cached, as in an installed venv), order "
              "alternating; one 50 ms CPU task; static inventory "
              "(one node, 8 GPUs), leases in the same redis-server. Times are import of the operator module + "
              "operator construction (`import + init`) and `execute` (for the GPU task: inventory read, lease, "
              "renewal thread, the work, release).", "",
              "| task | import + init median | execute median | total median |", "|---|---|---|---|"]
    for name, data_ in (("PythonOperator", overhead["plain"]), ("GpuPythonOperator (@gpu_task)", overhead["gpu"])):
        ii = statistics.median(t["import_init"] for t in data_)
        ex = statistics.median(t["execute"] for t in data_)
        total = statistics.median(t['import_init'] + t['execute'] for t in data_)
        lines.append(f"| {name} | {ms(ii)} | {ms(ex)} | {ms(total)} |")
    lines += ["", f"Overhead per task (median of the per-trial differences): **{ms(statistics.median(diffs))}** "
              f"(min {ms(min(diffs))}, max {ms(max(diffs))}). "
              "Profiled, most of it is imports a task process pays once: "
              "the GPU placement engine with numpy (in `import + init`) and redis-py (8.x loads its asyncio client "
              "too); the lease's own Redis work is the acquire and release above."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)
    print(f"written: {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
