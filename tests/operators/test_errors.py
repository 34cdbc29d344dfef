"""Configuration errors fail a task at once, naming what to set; transient errors are left to Airflow's retries."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from effopt.metrics.prometheus import PrometheusError
from effopt.operators.errors import classify, connection_env, fail_fast
from effopt.operators.pools import EnsurePoolsOperator
from effopt.operators.rightsizing import RightSizingRecommendOperator


class _Op:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @fail_fast
    def execute(self, context):
        raise self.exc


@pytest.mark.parametrize("exc", [ValueError("bad param"), TypeError("x"), FileNotFoundError("no /trace"),
                                 KeyError("k"), PrometheusError("HTTP 400: bad selector", transient=False)])
def test_configuration_errors_fail_without_a_retry(exc):
    with pytest.raises(AirflowFailException, match="not retried"):
        _Op(exc).execute({})


@pytest.mark.parametrize("exc", [TimeoutError("slow"), ConnectionRefusedError("refused"),
                                 PrometheusError("unreachable", transient=True),
                                 PrometheusError("HTTP 503", transient=True), RuntimeError("unknown")])
def test_transient_and_unknown_errors_propagate_for_airflow_to_retry(exc):
    with pytest.raises(type(exc)):
        _Op(exc).execute({})
    assert classify(exc) in ("transient", "unknown")


def test_a_missing_connection_names_its_environment_variable():
    with pytest.raises(AirflowFailException,
                       match=r"connection 'my-prom.x' is not defined: set AIRFLOW_CONN_MY_PROM_X"):
        _Op(AirflowNotFoundException("The conn_id `my-prom.x` isn't defined")).execute({})
    assert connection_env("effopt_prometheus") == "AIRFLOW_CONN_EFFOPT_PROMETHEUS"


def test_prometheus_source_without_its_connection_fails_at_once_naming_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EFFOPT_PROMETHEUS", raising=False)
    op = RightSizingRecommendOperator(task_id="r", source="prometheus")
    with pytest.raises(AirflowFailException) as failed:
        op.execute({})
    message = str(failed.value)
    assert "connection 'effopt_prometheus' (Prometheus) is not defined" in message
    assert "AIRFLOW_CONN_EFFOPT_PROMETHEUS='http://prometheus:9090'" in message and "'prometheus_conn_id'" in message


def test_a_missing_pool_without_the_api_connection_fails_with_what_to_do(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EFFOPT_AIRFLOW_API", raising=False)
    op = EnsurePoolsOperator(task_id="p", pools={"effopt_gpu": {"slots": 2, "description": "GPU slots",
                                                                "largest_request": 1}})
    with pytest.raises(AirflowFailException) as failed:
        op.execute({})
    message = str(failed.value)
    assert "this DAG's tasks need the pools effopt_gpu" in message
    assert "AIRFLOW_CONN_EFFOPT_AIRFLOW_API" in message and "airflow pools set effopt_gpu 2 'GPU slots'" in message


def test_trace_rows_without_a_container_id_are_dropped_and_reported(tmp_path: Path):
    """What crashed the DAG on the bundled trace (a workload named ''): now counted, never a nameless workload."""
    from effopt.metrics.trace import TraceSource
    from effopt.prices import load_rate_table
    from effopt.rightsizing.service import plan_rightsizing

    rows = [(1000.0 + 60 * i, cid, 0.5) for i in range(400) for cid in ("a", "", "b")]
    with gzip.open(tmp_path / "pod_memory_util.csv.gz", "wt") as fh:
        fh.write("timestamp_anon,container_ip,value\n")
        fh.writelines(f"{t},{c},{v}\n" for t, c, v in rows)
    source = TraceSource(tmp_path)
    series = source.series("memory")
    assert sorted(s.workload for s in series) == ["a", "b"]
    assert source.issues() == ["pod_memory_util.csv.gz: 400 row(s) without a container id dropped"]
    result = plan_rightsizing(TraceSource(tmp_path), load_rate_table(None), now=1e9)
    assert result.issues[0] == "pod_memory_util.csv.gz: 400 row(s) without a container id dropped"
    assert {c.workload.name for c in result.changes} <= {"a", "b"}
