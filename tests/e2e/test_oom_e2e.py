"""effopt_rightsizing_oom in a real Airflow: the OOM sensor waits deferred, a real Prometheus sees the kill, and
the memory re-plan carries VPA's bump and its reason.

Prometheus is real and scrapes every second; what it scrapes is a small HTTP stand-in of kube-state-metrics
and cAdvisor (there is no Kubernetes cluster here), serving the exposition format those exporters serve.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.services import PrometheusServer, free_port, wait_until

pytestmark = pytest.mark.slow

GIB = 1024**3
MIB = 1024**2
POD = 'namespace="ml",pod="trainer-7d9c8b6f5d-x2x9k",container="main"'


class _Exporter:
    """kube-state-metrics and cAdvisor as Prometheus scrapes them; ``kill()`` OOM-kills the container."""

    def __init__(self) -> None:
        self.killed = False
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def kill(self) -> None:
        self.killed = True

    def text(self) -> str:
        k = 1 if self.killed else 0
        return "\n".join([
            f'kube_pod_container_status_last_terminated_reason{{{POD},reason="OOMKilled"}} {k}',
            f"kube_pod_container_status_restarts_total{{{POD}}} {k}",
            f"container_memory_working_set_bytes{{{POD}}} {int(1.9 * GIB)}",
            f'kube_pod_container_resource_requests{{{POD},resource="memory"}} {2 * GIB}',
            f'kube_pod_container_resource_limits{{{POD},resource="memory"}} {2 * GIB}',
        ]) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ScrapingPrometheus(PrometheusServer):
    """The real Prometheus, scraping one target every second."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def start(self) -> _ScrapingPrometheus:
        import subprocess

        config = self.dir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                          "  - job_name: kube-state-metrics\n    static_configs:\n"
                          f"      - targets: ['{self.target}']\n")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self.ready, 60, f"prometheus on port {self.port}", self.proc)
        return self


def _ti_state(client, dag_id: str, run_id: str, task_id: str) -> str | None:
    return client.task_states(dag_id, run_id).get(task_id)


def test_an_oom_kill_is_re_planned_within_minutes_while_the_sensor_waits_deferred(airflow):
    exporter = _Exporter()
    prom = _ScrapingPrometheus(exporter.address)
    try:
        prom.start()
        wait_until(lambda: bool(prom.query(f"container_memory_working_set_bytes{{{POD}}}")), 60,
                   "the first scrape")
        client = airflow.client
        port = int(prom.url.rsplit(":", 1)[1])
        client.request("POST", "/api/v2/connections",
                       {"connection_id": "e2e_prom_oom", "conn_type": "http", "host": "127.0.0.1", "port": port})
        dag = "effopt_rightsizing_oom"
        client.wait_for_dag(dag)
        client.unpause(dag)
        run_id = client.trigger(dag, {"prometheus_conn_id": "e2e_prom_oom", "selector": 'namespace="ml"',
                                      "poll_seconds": 2, "wait_minutes": 8})
        deadline = time.monotonic() + 240
        while _ti_state(client, dag, run_id, "wait_for_oom") != "deferred":
            assert time.monotonic() < deadline, client.failure_report(dag, run_id)
            time.sleep(1)
        # Deferred: no worker slot is held while it waits.  Nothing was killed yet: it stays deferred.
        time.sleep(5)
        assert _ti_state(client, dag, run_id, "wait_for_oom") == "deferred"

        killed_at = time.time()
        exporter.kill()
        assert client.wait_for_run(dag, run_id, timeout=300) == "success", client.failure_report(dag, run_id)
        (kill,) = client.xcom(dag, run_id, "wait_for_oom")
        assert (kill["namespace"], kill["workload"], kill["container"]) == ("ml", "trainer", "main")
        assert kill["killed_at"] >= killed_at - 2
        replan = client.xcom(dag, run_id, "replan")
        (item,) = replan["plan"]["items"]
        assert item["action"] == "apply", item
        # VPA's bump of the larger of peak (1.9 GiB), request and limit (2 GiB): max(2 GiB + 100 MiB, 2.4 GiB).
        assert item["planned"]["limits"]["memory"] == f"{round(2.4 * 1024)}Mi"
        assert item["planned"]["requests"]["memory"] == item["planned"]["limits"]["memory"]
        assert "OOM kill: limit 2048 MiB" in item["reason"] and item["monthly_cost_delta"] > 0
        applied = client.xcom(dag, run_id, "apply")
        assert applied["mode"] == "dry-run" and applied["plan"] == replan["plan"]
    finally:
        prom.close()
        exporter.close()
