"""The settings of a scaled-out effopt: Airflow's CeleryExecutor with Postgres and Redis.

One source for the two places that run this topology: ``docker-compose.yaml``
(service names as hosts, checked against :func:`celery_env` by
``tests/test_compose.py``) and the test harness (``tests/celery_harness.py``,
the same settings on loopback ports), so the compose file says what the
end-to-end tests ran.

What each piece does for effopt:

* Postgres database ``airflow``: Airflow's metadata DB and Celery's result
  backend.  Database ``effopt``: the effopt store (the task-usage listener in
  every worker writes there; the effopt page and right-sizing read it).
* Redis db 0: Celery's broker.  Redis db 1: the computation cache (entries,
  single-flight locks and statistics shared by every worker), through the
  ``effopt_redis`` connection.
* ``CacheReferenceXCom``: a task on any worker gets the value behind a cache
  reference pushed on another.

Plain Python: no Airflow import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

AIRFLOW_DB = "airflow"
EFFOPT_DB = "effopt"
BROKER_REDIS_DB = 0
CACHE_REDIS_DB = 1
#: Queues: every worker serves ``default``; a CPU worker serves ``cpu`` too (work that must not take a GPU
#: worker's slot), a worker with GPUs ``gpu``.
DEFAULT_QUEUE = "default"
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
WORKER_QUEUES = {"cpu": (DEFAULT_QUEUE, CPU_QUEUE), "gpu": (DEFAULT_QUEUE, GPU_QUEUE)}
#: The Op-role user effopt's operators log in as on the REST API (its connection: :func:`api_connection`).
SERVICE_USER = "effopt"
XCOM_BACKEND = "effopt.xcom.CacheReferenceXCom"
EXECUTOR = "CeleryExecutor"


@dataclass(frozen=True)
class Endpoints:
    """Where the components reach Postgres, Redis and the API server."""

    postgres_host: str
    postgres_user: str
    postgres_password: str
    redis_host: str
    api_url: str  # the API server's base URL as workers reach it, e.g. http://airflow-apiserver:8080
    postgres_port: int = 5432
    redis_port: int = 6379

    def postgres(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        port = "" if self.postgres_port == 5432 else f":{self.postgres_port}"
        user, password = quote(self.postgres_user, safe=""), quote(self.postgres_password, safe="")
        return f"{driver}://{user}:{password}@{self.postgres_host}{port}/{database}"

    def redis(self, db: int, *, empty_password: bool = False) -> str:
        auth = ":@" if empty_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{db}"


def celery_env(ep: Endpoints) -> dict[str, str]:
    """Environment every Airflow component of the scaled-out topology shares (scheduler, API server, DAG
    processor, triggerer and each Celery worker)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": ep.postgres(AIRFLOW_DB),
        "AIRFLOW__CELERY__RESULT_BACKEND": ep.postgres(AIRFLOW_DB, driver="db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__BROKER_URL": ep.redis(BROKER_REDIS_DB, empty_password=True),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{ep.api_url.rstrip('/')}/execution/",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        "AIRFLOW__CORE__XCOM_BACKEND": XCOM_BACKEND,
        "AIRFLOW__EFFOPT__STORE_URL": ep.postgres(EFFOPT_DB),
        "AIRFLOW__EFFOPT__CACHE_BACKEND": "redis",
        "AIRFLOW_CONN_EFFOPT_REDIS": ep.redis(CACHE_REDIS_DB),
    }


def api_connection(host: str, port: int, login: str, password: str, description: str) -> str:
    """The ``effopt_airflow_api`` connection (JSON form of ``AIRFLOW_CONN_EFFOPT_AIRFLOW_API``): effopt's service
    user on the REST API, which effopt's operators use (pools, task states)."""
    return json.dumps({"conn_type": "http", "host": host, "port": port, "schema": "http", "login": login,
                       "password": password, "description": description})
