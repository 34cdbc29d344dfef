"""Overhead of the task-usage listener per task, side by side with the same task without it.

Each trial is a fresh interpreter, as every Airflow task process is, with
Airflow's task runner imported first (what a task process has loaded before
the listener runs). In each trial the same 50 ms CPU task runs once without
the listener and once with it, alternating the order so noise hits both.

    .venv/bin/python bench/listener_bench.py [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRIAL = textwrap.dedent(
    """
    import json, sys, time, types
    import airflow.sdk.execution_time.task_runner  # noqa: F401 - loaded in every real task process
    t = time.perf_counter()
    import effopt.plugin  # what Airflow's plugin loading imports in every task process
    from effopt import listener
    plugin_import = time.perf_counter() - t

    def work():
        t = time.process_time()
        while time.process_time() - t < 0.05:
            pass

    def ti(n):
        return types.SimpleNamespace(dag_id="bench", task_id=f"t{n}", run_id="r", map_index=-1, try_number=1)

    def bare():
        t = time.perf_counter(); work(); return time.perf_counter() - t

    def measured(n):
        t0 = time.perf_counter()
        listener.on_task_instance_running(previous_state="queued", task_instance=ti(n))
        t1 = time.perf_counter()
        work()
        t2 = time.perf_counter()
        listener.on_task_instance_success(previous_state="running", task_instance=ti(n))
        t3 = time.perf_counter()
        return t3 - t0, (t1 - t0) + (t3 - t2)

    order = sys.argv[1]
    out = {}
    if order == "bare-first":
        out["bare"] = bare(); out["with"], out["hooks"] = measured(0)
    else:
        out["with"], out["hooks"] = measured(0); out["bare"] = bare()
    out["warm_with"], out["warm_hooks"] = measured(1)  # a second task in the same process
    out["plugin_import"] = plugin_import
    print(json.dumps(out))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AIRFLOW_HOME": home,
               "AIRFLOW__EFFOPT__STORE_URL": f"sqlite:///{home}/effopt.db"}
        results = []
        for i in range(args.trials):
            order = "bare-first" if i % 2 == 0 else "listener-first"
            res = subprocess.run([sys.executable, "-c", TRIAL, order], env=env, capture_output=True, text=True,
                                 check=True)
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"trial {i + 1}/{args.trials} done", file=sys.stderr)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    ms = 1000.0
    print(f"task wall, no listener: {med['bare'] * ms:.2f} ms (1.00x baseline)")
    print(f"task wall, with listener (cold process): {med['with'] * ms:.2f} ms "
          f"({med['with'] / med['bare']:.3f}x vs baseline)")
    print(f"listener overhead per task (cold process): {med['hooks'] * ms:.2f} ms on the task's path "
          f"({med['hooks'] / med['bare']:.3f}x of a 50 ms task)")
    print(f"listener overhead per task (warm process): {med['warm_hooks'] * ms:.2f} ms "
          f"({med['warm_hooks'] / med['bare']:.3f}x of a 50 ms task)")
    print(f"effopt plugin import per task process (once, with Airflow's plugin loading): "
          f"{med['plugin_import'] * ms:.2f} ms ({med['plugin_import'] / med['bare']:.3f}x of a 50 ms task)")
    print(f"target: hooks < 5 ms per task -> {'met' if med['hooks'] * ms < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
