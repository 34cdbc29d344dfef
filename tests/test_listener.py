"""The task-usage listener's hooks, called as Airflow's task runner calls them.

Each test runs the hooks in a fresh interpreter (as every Airflow task process
is) with its own AIRFLOW_HOME; the end-to-end test in ``tests/e2e`` covers the
same listener inside a real Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from effopt.store import EffoptStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import logging, sys, types, numpy as np
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
    from effopt import listener

    def ti(task_id, try_number=1):
        return types.SimpleNamespace(dag_id="dag", task_id=task_id, run_id="run1", map_index=-1,
                                     try_number=try_number, state=None)

    work = ti("work")
    listener.on_task_instance_running(previous_state="queued", task_instance=work)
    block = np.ones(150 * 2**20 // 8); block[::512] += 1; del block
    import time; t = time.process_time()
    while time.process_time() - t < 0.5: pass
    listener.on_task_instance_success(previous_state="running", task_instance=work)

    broken = ti("broken", try_number=2)
    broken.state = "up_for_retry"
    listener.on_task_instance_running(previous_state="queued", task_instance=broken)
    listener.on_task_instance_failed(previous_state="running", task_instance=broken, error=RuntimeError("x"))

    # A hook called without a running span (e.g. by the scheduler) records nothing.
    listener.on_task_instance_failed(previous_state="running", task_instance=ti("never_ran"), error=None)
    print("TASKS-WENT-ON")
    """
)


def _run(tmp_path, store_url):
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "plugins"), "AIRFLOW_HOME": str(tmp_path),
           "AIRFLOW__EFFOPT__STORE_URL": store_url}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)


def test_records_measured_usage_of_each_task(tmp_path):
    url = f"sqlite:///{tmp_path / 'effopt.db'}"
    res = _run(tmp_path, url)
    assert res.returncode == 0, res.stderr
    assert "TASKS-WENT-ON" in res.stdout
    records = {r.task_id: r for r in EffoptStore(url).task_usage(dag_id="dag")}
    assert set(records) == {"work", "broken"}
    work = records["work"]
    assert work.state == "success" and work.try_number == 1 and work.run_id == "run1"
    assert work.cpu_s >= 0.45
    assert work.peak_rss_bytes - work.rss_start_bytes >= 140 * 2**20
    assert work.peak_scope == "span"
    assert work.end >= work.start and work.wall_s >= 0.45
    assert records["broken"].state == "up_for_retry" and records["broken"].try_number == 2


def test_store_outage_warns_once_and_never_fails_the_task(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    res = _run(tmp_path, f"sqlite:///{blocker / 'effopt.db'}")
    assert res.returncode == 0, res.stderr
    assert "TASKS-WENT-ON" in res.stdout
    # Airflow's logging set-up reformats records; match on the message, whatever the format.
    warnings = [line for line in res.stdout.splitlines() if "task usage of" in line and "not recorded" in line]
    assert len(warnings) == 1, res.stdout
    assert "warning" in warnings[0].lower() and "[effopt] store_url" in warnings[0]
