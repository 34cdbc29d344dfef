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
import time
from pathlib import Path

import pytest

from tests.airflow_harness import FINAL_RUN_STATES, AirflowClient
from tests.services import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


LEAD_S = 240.0  # from the start to the schedules' moment: Airflow is up and the manual runs are queued by then


def _once_in(seconds: float, now: float) -> tuple[str, float]:
    """A cron expression firing at the first whole minute at least ``seconds`` from ``now``, and that moment."""
    at = dt.datetime.fromtimestamp(now + seconds, dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return f"{at.minute} {at.hour} * * *", at.timestamp()


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
    cron, moment = _once_in(LEAD_S, time.time())
    proc = subprocess.Popen([sys.executable, "-m", "effopt", "standalone", "--home", str(home), "--port", str(port)],
                            cwd=REPO, env=_clean_env(home, cron), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    try:
        while "effopt: press Ctrl-C" not in "".join(lines[-3:]):
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError("Airflow did not come up:\n" + "".join(lines[-80:]))
            lines.append(line)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield AirflowClient(f"http://127.0.0.1:{port}", "admin", password), moment
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


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


def _wait_all_final(client: AirflowClient, dag_ids: list[str], timeout: float = 900) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = {d: _runs(client, d) for d in dag_ids}
        pending = [(d, r["dag_run_id"], r["state"]) for d, rs in runs.items() for r in rs
                   if r["state"] not in FINAL_RUN_STATES]
        if not pending:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still not finished after {timeout:.0f} s: {pending}")
        time.sleep(3)


def test_every_bundled_dag_succeeds_on_the_embedded_defaults_scheduled_and_triggered(fresh_airflow):
    client, moment = fresh_airflow
    dag_ids = _bundled_dag_ids(client)
    assert {"effopt_rightsizing", "effopt_waste_report", "effopt_graph_gpu_training", "effopt_selftest"} <= set(dag_ids)
    assert time.time() < moment - 30, "Airflow took longer to start than the schedules' lead"
    for dag_id in dag_ids:
        client.unpause(dag_id)
    manual = {dag_id: client.trigger(dag_id) for dag_id in dag_ids}  # logical_date null, default params
    # At the schedules' moment the scheduler adds a run of each; wait for them too.
    deadline = time.monotonic() + LEAD_S + 300
    while time.monotonic() < deadline:
        runs = {d: _runs(client, d) for d in ("effopt_rightsizing", "effopt_waste_report")}
        if all(any(r["run_type"] == "scheduled" for r in rs) for rs in runs.values()):
            break
        time.sleep(3)
    runs = _wait_all_final(client, dag_ids)

    failed = {f"{d} {r['dag_run_id']}": client.failure_report(d, r["dag_run_id"])
              for d, rs in runs.items() for r in rs if r["state"] != "success"}
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())
    for dag_id, run_id in manual.items():
        assert any(r["dag_run_id"] == run_id for r in runs[dag_id]), dag_id
    scheduled = {d: r for d, rs in runs.items() for r in rs if r["run_type"] == "scheduled"}
    assert {"effopt_rightsizing", "effopt_waste_report"} <= set(scheduled), {d: len(r) for d, r in runs.items()}
    for dag_id in ("effopt_rightsizing", "effopt_waste_report"):
        when = dt.datetime.fromisoformat(scheduled[dag_id]["run_after"].replace("Z", "+00:00"))
        assert when.timestamp() == moment, (dag_id, scheduled[dag_id])

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
    # The graph DAGs' pools exist now, made over the REST API by their setup task.
    pools = {p["name"]: p["slots"] for p in client.get("/api/v2/pools")["pools"]}
    assert pools.get("effopt_serial") == 1 and pools.get("effopt_gpu", 0) >= 1, pools

    # More manual runs of the hourly DAG, its scheduled run in the history: they go through.
    more = [client.trigger("effopt_rightsizing") for _ in range(2)]
    for run_id in more:
        assert client.wait_for_run("effopt_rightsizing", run_id, timeout=300) == "success", \
            client.failure_report("effopt_rightsizing", run_id)
