"""effopt scaled out for real: Airflow's CeleryExecutor with Postgres, Redis and two Celery workers.

The topology of ``docker-compose.yaml`` as separate processes on loopback ports
(the settings both share come from :func:`effopt.deploy.celery_env`):

* a PostgreSQL cluster of its own (databases ``airflow``: metadata and Celery
  results, ``effopt``: the effopt store);
* ``redis-server``: Celery's broker (db 0) and effopt's cache (db 1);
* the API server, scheduler, DAG processor and triggerer (one ``AIRFLOW_HOME``);
* two Celery workers, each with an ``AIRFLOW_HOME`` and host name of its own:
  ``worker-a`` serves queues ``default`` and ``cpu``, ``worker-b`` serves
  ``default`` and ``gpu``.  Task logs go to one shared folder, as in the compose
  file (its ``airflow-logs`` volume), so the API server reads them there.

Every component runs in a process group of its own, started by
:class:`effopt.standalone.GuardedProcess` (the launcher ``make run`` uses):
``stop()`` stops each group, and a watchdog stops it if the test process dies.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from effopt.deploy import EFFOPT_DB, WORKER_QUEUES, Endpoints, celery_env
from effopt.standalone import (
    API_CONN_ENV,
    PASSWORDS_FILE,
    GuardedProcess,
    component_env,
    service_connection,
    service_password,
)
from tests.airflow_harness import AirflowClient
from tests.services import PostgresServer, RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
TEST_DAGS = Path(__file__).resolve().parent / "scaleout_dags"
TEST_BUNDLE = "effopt-scaleout-tests"


@dataclass
class Worker:
    """One Celery worker: its host name, queues and process group."""

    name: str
    queues: tuple[str, ...]
    home: Path
    concurrency: int
    group: GuardedProcess | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def celery_name(self) -> str:
        return f"celery@{self.name}"


class CeleryTopology:
    """Postgres, Redis, the Airflow control plane and two Celery workers; ``client`` talks REST as admin.

    ``worker_concurrency`` is each worker's number of task slots.  With one slot per worker, two tasks
    ready at once always run on different workers (a worker takes a task only when it has a free slot:
    Airflow's Celery settings acknowledge late and prefetch one).
    """

    def __init__(self, root: Path, *, worker_concurrency: int = 1, extra_env: dict[str, str] | None = None,
                 test_dags: Path | None = TEST_DAGS) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.control_home = self.root / "control"
        self.log_folder = self.root / "task-logs"
        self.process_logs = self.root / "processes"
        self.worker_concurrency = worker_concurrency
        self.extra_env = dict(extra_env or {})
        self.test_dags = test_dags
        self.api_port = free_port()
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.groups: dict[str, GuardedProcess] = {}
        self._logs: list[IO[bytes]] = []
        self.workers = {
            "worker-a": Worker("worker-a", WORKER_QUEUES["cpu"], self.root / "worker-a", worker_concurrency),
            "worker-b": Worker("worker-b", WORKER_QUEUES["gpu"], self.root / "worker-b", worker_concurrency),
        }
        self.client: AirflowClient | None = None
        self._secrets = {
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__EFFOPT__CACHE_SECRET": secrets.token_urlsafe(32),
        }

    # -- addresses --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def endpoints(self) -> Endpoints:
        assert self.postgres is not None and self.redis is not None
        return Endpoints(postgres_host="127.0.0.1", postgres_port=self.postgres.port,
                         postgres_user=self.postgres.user, postgres_password=self.postgres.password,
                         redis_host="127.0.0.1", redis_port=self.redis.port, api_url=self.url)

    @property
    def store_url(self) -> str:
        """The effopt store: the ``effopt`` database of this topology's Postgres."""
        return self.endpoints.postgres(EFFOPT_DB)

    @property
    def cache_redis_url(self) -> str:
        return celery_env(self.endpoints)["AIRFLOW_CONN_EFFOPT_REDIS"]

    # -- environments -----------------------------------------------------------
    def shared_env(self) -> dict[str, str]:
        """What every component gets on top of :func:`component_env`: the compose file's settings, one
        secret set, the bundles, the shared task-log folder and this machine's faster failure detection."""
        env = celery_env(self.endpoints)
        env.update(self._secrets)
        bundles = [{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {}}]
        if self.test_dags is not None:
            bundles.append({"name": TEST_BUNDLE, "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                            "kwargs": {"path": str(self.test_dags), "refresh_interval": 10}})
        env.update({
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # A worker that dies takes its tasks' heartbeats with it: notice within ~half a minute (default
            # 300 s) so the retry runs soon; and a crashed holder's single-flight lock expires after 10 s.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            "AIRFLOW__EFFOPT__CACHE_LOCK_LEASE_S": "10",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        })
        env.update(self.extra_env)
        return env

    def control_env(self) -> dict[str, str]:
        env = component_env(self.control_home, REPO / "dags", REPO / "plugins", self.url)
        env.update(self.shared_env())
        env[API_CONN_ENV] = service_connection(self.control_home, "127.0.0.1", self.api_port)
        return env

    def worker_env(self, worker: Worker) -> dict[str, str]:
        env = component_env(worker.home, REPO / "dags", REPO / "plugins", self.url)
        env.update(self.shared_env())
        env[API_CONN_ENV] = service_connection(self.control_home, "127.0.0.1", self.api_port)
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.worker_hostname.hostname"
        env["EFFOPT_WORKER_HOSTNAME"] = worker.name
        env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], str(REPO)))
        return env

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout: float = 420) -> CeleryTopology:
        deadline = time.monotonic() + timeout
        try:
            self.process_logs.mkdir(parents=True, exist_ok=True)
            self.log_folder.mkdir(parents=True, exist_ok=True)
            self.postgres = PostgresServer(("airflow", EFFOPT_DB)).start()
            self.redis = RedisServer().start()
            self.control_home.mkdir(parents=True, exist_ok=True)
            service_password(self.control_home)
            self._run_once(["airflow", "db", "migrate"], "db-migrate", deadline)
            self._run_once([sys.executable, "-m", "effopt", "config", "check"], "config-check", deadline)
            airflow = str(Path(sys.executable).parent / "airflow")
            self._spawn("api-server", [airflow, "api-server", "--port", str(self.api_port)], self.control_env())
            for name in ("scheduler", "dag-processor", "triggerer"):
                self._spawn(name, [airflow, name], self.control_env())
            for worker in self.workers.values():
                self.start_worker(worker.name)
            self.wait_ready(deadline - time.monotonic())
            self.client = AirflowClient(self.url, "admin", self.admin_password())
        except BaseException:
            self.stop()
            raise
        return self

    def _run_once(self, argv: list[str], name: str, deadline: float) -> None:
        log_path = self.process_logs / f"{name}.log"
        with open(log_path, "wb") as log:
            res = subprocess.run(argv, env=self.control_env(), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=max(30.0, deadline - time.monotonic()))
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}):\n{_tail(log_path)}")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> GuardedProcess:
        log = open(self.process_logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        group = GuardedProcess(argv, env, log).start()
        self.groups[name] = group
        return group

    def start_worker(self, name: str) -> None:
        worker = self.workers[name]
        worker.home.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        # No log server: the workers write task logs to the shared folder the API server reads.
        worker.group = self._spawn(name, [airflow, "celery", "worker", "--celery-hostname", worker.name,
                                          "--queues", ",".join(worker.queues), "--concurrency",
                                          str(worker.concurrency), "--skip-serve-logs"], self.worker_env(worker))

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (Celery, its pool, task supervisors and tasks) at once."""
        worker = self.workers[name]
        if worker.group is not None:
            worker.group.kill()
        self.groups.pop(name, None)

    def celery_ping(self) -> set[str]:
        """The Celery workers answering a broadcast ping now."""
        from celery import Celery

        app = Celery(broker=celery_env(self.endpoints)["AIRFLOW__CELERY__BROKER_URL"])
        try:
            replies = app.control.ping(timeout=2.0)
        finally:
            app.close()
        return {name for reply in replies for name in reply}

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
            return json.load(resp)

    def control_plane_healthy(self) -> bool:
        try:
            health = self.health()
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return all((health.get(p) or {}).get("status") == "healthy"
                   for p in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    def wait_ready(self, timeout: float, workers: tuple[str, ...] | None = None) -> None:
        wanted = {self.workers[w].celery_name for w in (workers or tuple(self.workers))}
        deadline = time.monotonic() + max(timeout, 30.0)
        while time.monotonic() < deadline:
            for name, group in self.groups.items():
                if group.proc is not None and group.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {group.proc.returncode} while starting:\n"
                                       f"{_tail(self.process_logs / f'{name}.log')}")
            if self.control_plane_healthy() and wanted <= self.celery_ping():
                return
            time.sleep(1)
        raise TimeoutError(f"the Celery topology was not ready within {timeout:.0f}s; health: "
                           f"{self._health_or_error()}; workers answering: {sorted(self._ping_or_empty())}\n"
                           + "\n".join(f"--- {n} ---\n{_tail(self.process_logs / f'{n}.log', 15)}"
                                       for n in self.groups))

    def _health_or_error(self) -> object:
        try:
            return self.health()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return exc

    def _ping_or_empty(self) -> set[str]:
        try:
            return self.celery_ping()
        except Exception:  # noqa: BLE001 - only for the error message
            return set()

    def admin_password(self) -> str:
        return json.loads((self.control_home / PASSWORDS_FILE).read_text())["admin"]

    def stop(self) -> None:
        # Workers first (no task is left half-run by a missing API server), then the control plane; the
        # groups of each tier in parallel.
        for tier in ([n for n in self.groups if n in self.workers], [n for n in self.groups if n not in self.workers]):
            groups = [self.groups.pop(name) for name in tier]
            threads = [threading.Thread(target=g.stop, args=(20.0, signal.SIGTERM)) for g in groups]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for worker in self.workers.values():
            worker.group = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        for service in (self.redis, self.postgres):
            if service is not None:
                service.close()
        self.redis = self.postgres = None

    def log_tail(self, name: str, lines: int = 60) -> str:
        return _tail(self.process_logs / f"{name}.log", lines)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

