"""effopt scaled out (CeleryExecutor, Postgres, Redis, two Celery workers) against the standalone
(LocalExecutor, SQLite) on the same machine, in one run.

Both topologies are started (the Celery one by ``tests/celery_harness.py``, the standalone by
``effopt.standalone``, as ``make run`` starts it) with the same number of task slots: the standalone's
parallelism, split over the two Celery workers.  Both load the bench DAGs of ``bench/scaleout_dags``.
Measurements alternate between the two, so a change in the machine's load hits both:

* scheduling-to-start latency of one task: the task instance's ``start_date`` less its ``scheduled_when``
  (and less the run's ``queued_at``, trigger to start), median over ``--latency-runs`` runs each;
* the task-usage listener's per-task overhead in a fresh task process (the method of
  ``bench/listener_bench.py``): the effopt store on the Celery topology's Postgres vs a SQLite file;
* cache hit latency from a task: on a Celery worker over Redis vs in the standalone's task on its local
  cache folder, for 1 KiB, 1 MiB and 16 MiB entries (incompressible), median of ``--repeats`` hits;
* throughput of ``--tasks`` tiny mapped tasks, in two runs of half of them each (order A B B A): tasks per
  second from the first task's start to the last one's end.

    PYTHONPATH=plugins:. .venv/bin/python bench/scaleout_bench.py [--tasks 200] [--latency-runs 8]

Ratios are scale-out / standalone.  Writes ``bench/RESULTS-scaleout.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from bench.listener_bench import TRIAL  # noqa: E402
from effopt.standalone import default_parallelism  # noqa: E402
from tests.airflow_harness import AirflowClient, AirflowServer  # noqa: E402
from tests.celery_harness import CeleryTopology  # noqa: E402

BENCH_DAGS = REPO / "bench" / "scaleout_dags"
BUNDLE = "effopt-bench"
SIZES = (1024, 1 << 20, 16 << 20)


def _ts(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _bundles() -> str:
    return json.dumps([
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {"name": BUNDLE, "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(BENCH_DAGS), "refresh_interval": 10}},
    ])


def _run(client: AirflowClient, dag_id: str, conf: dict | None = None, timeout: float = 900) -> tuple[str, dict]:
    run_id = client.trigger(dag_id, conf)
    state = client.wait_for_run(dag_id, run_id, timeout)
    if state != "success":
        raise RuntimeError(f"{dag_id} {run_id}: {state}\n{client.failure_report(dag_id, run_id)}")
    return run_id, client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")


def latency(client: AirflowClient) -> tuple[float, float]:
    """(scheduled -> start, run queued -> start) of one tiny task, seconds."""
    run_id, run = _run(client, "effopt_bench_one")
    (ti,) = client.task_instances("effopt_bench_one", run_id)
    start = _ts(ti["start_date"])
    return start - _ts(ti["scheduled_when"]), start - _ts(run["queued_at"])


def throughput(client: AirflowClient, n: int) -> tuple[float, float]:
    """(seconds from the first tiny task's start to the last one's end, run wall seconds) for ``n`` mapped
    tiny tasks."""
    run_id, run = _run(client, "effopt_bench_fanout", {"n": n}, timeout=1800)
    tis = list({t["map_index"]: t for t in client.task_instances("effopt_bench_fanout", run_id)
                if t["task_id"] == "tiny"}.values())
    if len(tis) != n or any(t["state"] != "success" for t in tis):
        raise RuntimeError(f"effopt_bench_fanout: {len(tis)} tiny tasks, expected {n} successful")
    first = min(_ts(t["start_date"]) for t in tis)
    last = max(_ts(t["end_date"]) for t in tis)
    return last - first, _ts(run["end_date"]) - _ts(run["start_date"])


def cache_hits(client: AirflowClient, repeats: int) -> tuple[str, dict[int, float]]:
    conf = {"sizes": list(SIZES), "repeats": repeats, "token": uuid.uuid4().hex}
    run_id, _ = _run(client, "effopt_bench_cache", conf)
    out = client.xcom("effopt_bench_cache", run_id, "hits")
    return out["backend"], {int(k): statistics.median(v) for k, v in out["seconds"].items()}


def listener_overhead(store_url: str, home: Path, trials: int) -> float:
    """Median seconds the listener's two hooks add to a task in a fresh process, writing to ``store_url``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AIRFLOW_HOME": str(home),
           "AIRFLOW__EFFOPT__STORE_URL": store_url}
    hooks = []
    for i in range(trials):
        order = "bare-first" if i % 2 == 0 else "listener-first"
        res = subprocess.run([sys.executable, "-c", TRIAL, order], env=env, capture_output=True, text=True,
                             check=True)
        hooks.append(json.loads(res.stdout.strip().splitlines()[-1])["hooks"])
    return statistics.median(hooks)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tiny tasks in the throughput run")
    parser.add_argument("--latency-runs", type=int, default=8)
    parser.add_argument("--listener-trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20, help="cache hits per size")
    parser.add_argument("--root", default=None, help="folder for both topologies (default: a temporary one)")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS-scaleout.md"))
    args = parser.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="effopt-scaleout-bench-"))
    slots = default_parallelism()
    load_before = _load()
    started = time.monotonic()
    standalone = AirflowServer(root / "standalone", {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": _bundles()})
    celery = CeleryTopology(root / "celery", worker_concurrency=max(1, slots // 2), test_dags=BENCH_DAGS)
    try:
        print(f"starting the standalone (parallelism {slots}) and the Celery topology (2 workers x "
              f"{max(1, slots // 2)} slots) ...", file=sys.stderr, flush=True)
        standalone.start()
        celery.start()
        clients = {"standalone": standalone.client, "celery": celery.client}
        for client in clients.values():
            for dag_id in ("effopt_bench_one", "effopt_bench_fanout", "effopt_bench_cache"):
                client.wait_for_dag(dag_id, timeout=300)
                client.unpause(dag_id)
        # One warm-up run each (first parse of the bench DAGs by the task processes).
        for client in clients.values():
            _run(client, "effopt_bench_one")

        sched: dict[str, list[float]] = {k: [] for k in clients}
        queued: dict[str, list[float]] = {k: [] for k in clients}
        for i in range(args.latency_runs):
            for name in (("standalone", "celery") if i % 2 == 0 else ("celery", "standalone")):
                s, q = latency(clients[name])
                sched[name].append(s)
                queued[name].append(q)
            print(f"latency run {i + 1}/{args.latency_runs}", file=sys.stderr, flush=True)

        backends, hits = {}, {}
        for name in ("standalone", "celery"):
            backends[name], hits[name] = cache_hits(clients[name], args.repeats)
        print("cache hits measured", file=sys.stderr, flush=True)

        listener = {"sqlite": [], "postgres": []}
        with tempfile.TemporaryDirectory() as home:
            urls = {"sqlite": f"sqlite:///{home}/effopt.db", "postgres": celery.store_url}
            for i in range(2):  # two rounds, alternating which store goes first
                for kind in (("sqlite", "postgres") if i == 0 else ("postgres", "sqlite")):
                    listener[kind].append(listener_overhead(urls[kind], Path(home), max(1, args.listener_trials // 2)))
        listener_med = {k: statistics.median(v) for k, v in listener.items()}
        print("listener overhead measured", file=sys.stderr, flush=True)

        # Two runs of half the tasks each, in the order A B B A, so a change in the machine's load hits both.
        busy = {k: 0.0 for k in clients}
        wall = {k: 0.0 for k in clients}
        half = args.tasks // 2
        for name in ("standalone", "celery", "celery", "standalone"):
            b, w = throughput(clients[name], half)
            busy[name] += b
            wall[name] += w
            print(f"throughput {name}: {half / b:.2f} tasks/s", file=sys.stderr, flush=True)
        tput = {k: 2 * half / busy[k] for k in clients}
    finally:
        celery.stop()
        standalone.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    load_after = _load()

    med = {k: {"sched": statistics.median(sched[k]), "queued": statistics.median(queued[k])} for k in sched}
    rows = [
        ("scheduling-to-start latency of a task (scheduled -> start, median)",
         _fmt_s(med["standalone"]["sched"]), _fmt_s(med["celery"]["sched"]),
         med["celery"]["sched"] / med["standalone"]["sched"]),
        ("trigger-to-start latency of a task (run queued -> start, median)",
         _fmt_s(med["standalone"]["queued"]), _fmt_s(med["celery"]["queued"]),
         med["celery"]["queued"] / med["standalone"]["queued"]),
        ("task-usage listener per task, fresh task process (SQLite file vs Postgres)",
         _fmt_s(listener_med["sqlite"]), _fmt_s(listener_med["postgres"]),
         listener_med["postgres"] / listener_med["sqlite"]),
    ]
    for size in SIZES:
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        rows.append((f"cache hit {label} from a task (local folder vs Redis, median)",
                     _fmt_s(hits["standalone"][size]), _fmt_s(hits["celery"][size]),
                     hits["celery"][size] / hits["standalone"][size]))
    rows.append((f"throughput of {2 * half} tiny tasks (two runs of {half}, first start -> last end)",
                 f"{tput['standalone']:.2f} tasks/s", f"{tput['celery']:.2f} tasks/s",
                 tput["celery"] / tput["standalone"]))
    rows.append((f"{2 * half} tiny tasks, DAG run wall time (both runs)", _fmt_s(wall["standalone"]),
                 _fmt_s(wall["celery"]), wall["celery"] / wall["standalone"]))

    lines = ["| measurement | standalone (LocalExecutor, SQLite) | scale-out (Celery, Postgres, Redis) | ratio |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {a} | {b} | {r:.2f}x |" for what, a, b, r in rows]
    table = "\n".join(lines)
    for what, a, b, r in rows:
        print(f"{what}: standalone {a}, scale-out {b} ({r:.2f}x vs standalone)")

    machine = (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
               f"{platform.python_version()}; load average {load_before} before, {load_after} after "
               f"(other sessions share the machine); {elapsed:.0f} s in all")
    doc = f"""# Scale-out benchmark: results

`PYTHONPATH=plugins:. python bench/scaleout_bench.py --tasks {args.tasks} --latency-runs {args.latency_runs}`,
one run: the standalone (`make run`'s launcher: LocalExecutor, SQLite, parallelism {slots}) and the Celery
topology of `tests/celery_harness.py` (CeleryExecutor; its own PostgreSQL for Airflow, Celery results and
the effopt store; Redis as broker and cache; two Celery workers with {max(1, slots // 2)} slots each) on the
same machine, measurements alternating between them.  Ratios are scale-out / standalone.

Machine: {machine}.

Cache backends: standalone `{backends['standalone']}`; scale-out `{backends['celery']}`.

{table}

What the figures say:

* Latency: a Celery task goes scheduler -> Redis -> worker -> the worker's supervisor, where the
  LocalExecutor hands it to a process already waiting on the same machine.
* The listener's write to Postgres from a fresh task process includes importing the driver and opening a
  connection; the SQLite path writes through the `sqlite3` module without SQLAlchemy's engine.
* Cache hits over Redis pay the network round trip and the copy out of Redis; the local backend reads a
  file from the page cache.  On one machine Redis is reached over loopback, so across machines add the
  network.
* Throughput with the same number of slots: what each executor and its metadata database add per task on
  two shared cores (the standalone's scheduler, API server, DAG processor, triggerer and tasks all write to
  one SQLite file, one writer at a time).
"""
    Path(args.out).write_text(doc)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
