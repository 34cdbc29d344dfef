"""A new user's first hour: ``make run``'s launcher in a fresh AIRFLOW_HOME with nothing configured, and every
bundled DAG succeeds on its embedded defaults, on its schedule and when triggered over REST with
``logical_date: null`` (what the UI's Trigger button sends).

Airflow 3 schedules a cron DAG at its next boundary after it is unpaused, so a scheduled run needs the clock
to cross one.  Not to depend on the wall clock, the only settings made here are the two schedules
(``[effopt] rightsizing_schedule`` and ``waste_report_schedule``, as a team would set them): both fire once,
a few minutes after the start, while the manual runs are queued, whatever the real time is.  That is the
situation of an hour boundary for ``effopt_rightsizing`` (``max_active_runs=1``): its scheduled run holds the
only active slot, and the manual runs must still go through.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.airflow_harness import FINAL_RUN_STATES, AirflowClient
from tests.services import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


EVERY_MINUTE = "* * * * *"


def _clean_env(home: Path, cron: str) -> dict[str, str]:
    """The environment of a machine where nothing of effopt or Airflow is configured, but the schedules."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_VAR_", "AWS_"))}
    env.update({"AIRFLOW_HOME": str(home), "PYTHONPATH": str(REPO / "plugins"),
                "AIRFLOW__EFFOPT__RIGHTSIZING_SCHEDULE": cron, "AIRFLOW__EFFOPT__WASTE_REPORT_SCHEDULE": cron})
    return env


@pytest.fixture(scope="module")
def fresh_airflow(tmp_path_factory):
    home, port = tmp_path_factory.mktemp("fresh") / "home", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "effopt", "standalone", "--home", str(home), "--port", str(port)],
                            cwd=REPO, env=_clean_env(home, EVERY_MINUTE), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    try:
        while "effopt: press Ctrl-C" not in "".join(lines[-3:]):
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError("Airflow did not come up:\n" + "".join(lines[-80:]))
            lines.append(line)
        # Keep reading what Airflow prints: a pipe nobody reads fills up (64 KiB) and blocks every component
        # that writes to it, the scheduler first.
        threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield AirflowClient(f"http://127.0.0.1:{port}", "admin", password)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _drain(stream, lines: list[str], keep: int = 400) -> None:
    """Read ``stream`` to its end, keeping its last ``keep`` lines in ``lines``."""
    for line in stream:
        lines.append(line)
        if len(lines) > 2 * keep:
            del lines[:-keep]


def _bundled_dag_ids(client: AirflowClient) -> list[str]:
    """Every DAG of the bundle, once the DAG processor has parsed each file in dags/."""
    files = sorted(p.name for p in (REPO / "dags").glob("*.py"))
    deadline = time.monotonic() + 240
    while True:
        dags = client.get("/api/v2/dags", limit=100)["dags"]
        seen = {Path(d["fileloc"]).name for d in dags}
        if set(files) <= seen or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(files) <= seen, f"not parsed: {set(files) - seen}; import errors: {client.import_errors()}"
    assert client.import_errors() == []
    assert client.get("/api/v2/plugins/importErrors")["import_errors"] == []
    return sorted(d["dag_id"] for d in dags)


def _runs(client: AirflowClient, dag_id: str) -> list[dict]:
    return client.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]


def _wait_final(client: AirflowClient, runs: dict[str, list[str]], timeout: float = 900) -> dict[tuple, dict]:
    """Wait for the given runs ({dag_id: [run_id, ...]}) to finish; their final records by (dag, run)."""
    deadline = time.monotonic() + timeout
    while True:
        states = {(d, r): client.get(f"/api/v2/dags/{d}/dagRuns/{quote(r, safe='')}")
                  for d, ids in runs.items() for r in ids}
        pending = [k for k, v in states.items() if v["state"] not in FINAL_RUN_STATES]
        if not pending:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still not finished after {timeout:.0f} s: {pending}")
        time.sleep(3)


def _first_scheduled(client: AirflowClient, dag_ids: list[str], timeout: float = 300) -> dict[str, dict]:
    """The first scheduled run of each DAG (one comes at the next minute boundary after unpausing)."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}
    while True:
        for d in dag_ids:
            scheduled = [r for r in _runs(client, d) if r["run_type"] == "scheduled"]
            if scheduled and d not in found:
                found[d] = min(scheduled, key=lambda r: r["run_after"])
        if len(found) == len(dag_ids):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no scheduled run within {timeout:.0f} s for {set(dag_ids) - set(found)}")
        time.sleep(2)


def test_every_bundled_dag_succeeds_on_the_embedded_defaults_scheduled_and_triggered(fresh_airflow):
    client = fresh_airflow
    dag_ids = _bundled_dag_ids(client)
    assert {"effopt_rightsizing", "effopt_waste_report", "effopt_graph_gpu_training", "effopt_selftest",
            "effopt_rightsizing_oom", "effopt_gpu_pools", "effopt_gpu_example"} <= set(dag_ids)
    unpaused_at = time.time()
    for dag_id in dag_ids:
        client.unpause(dag_id)
    manual = {dag_id: client.trigger(dag_id) for dag_id in dag_ids}  # logical_date null, default params
    scheduled = _first_scheduled(client, ["effopt_rightsizing", "effopt_waste_report"])
    for dag_id, run in scheduled.items():  # at the first minute boundary after unpausing
        when = dt.datetime.fromisoformat(run["run_after"].replace("Z", "+00:00")).timestamp()
        assert unpaused_at - 60 <= when <= unpaused_at + 120, (dag_id, run)
    runs = {d: [manual[d]] + ([scheduled[d]["dag_run_id"]] if d in scheduled else []) for d in dag_ids}
    final = _wait_final(client, runs)
    failed = {f"{d} {r}": client.failure_report(d, r) for (d, r), v in final.items() if v["state"] != "success"}
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())

    # effopt_rightsizing: a fresh install has no Prometheus, so the Airflow tasks' own records, and an honest plan.
    plan = client.xcom("effopt_rightsizing", manual["effopt_rightsizing"], "recommend")
    assert plan["source"] == "airflow" and plan["summary"], plan
    # effopt_waste_report: rendered and kept; not mailed (no recipients, no SMTP), and the XCom says what to set.
    detect = client.xcom("effopt_waste_report", manual["effopt_waste_report"], "detect")
    assert detect["page"].startswith("/effopt/reports/waste/") and detect["summary"]["source"] == "airflow"
    email = client.xcom("effopt_waste_report", manual["effopt_waste_report"], "email")
    assert email["sent"] is False and "recipients" in email["reason"], email
    report = client.request("GET", detect["page"])
    assert "<html" in report and "effopt waste report" in report
    waste = client.get("/effopt/api/waste")
    assert waste["delivery"]["status"] == "not_sent" and "report_recipients" in waste["delivery"]["detail"]
    # effopt_gpu_pools: no GPUs here, so it says so and leaves the GPU pools alone; GPU tasks ran without a lease.
    sync = client.xcom("effopt_gpu_pools", manual["effopt_gpu_pools"], "sync_pools")
    assert sync["inventory"] == "no GPUs in the inventory" and sync["gpus"] == 0, sync
    for n in (1, 2, 3):
        assert client.xcom("effopt_gpu_example", manual["effopt_gpu_example"], f"gpu_task_{n}")[
            "cuda_visible_devices"] == ""
    # The graph DAGs' pools exist now, made over the REST API by their setup task.
    pools = {p["name"]: p["slots"] for p in client.get("/api/v2/pools")["pools"]}
    assert pools.get("effopt_serial") == 1 and pools.get("effopt_gpu", 0) >= 1, pools

    # More manual runs of the hourly DAG, its scheduled run in the history: they go through.
    more = [client.trigger("effopt_rightsizing") for _ in range(2)]
    for run_id in more:
        assert client.wait_for_run("effopt_rightsizing", run_id, timeout=300) == "success", \
            client.failure_report("effopt_rightsizing", run_id)
