"""docker-compose.yaml is production-shaped and wires effopt to its services.

Docker cannot run on this machine, so the file's structure is checked instead, and its shared settings are
compared with :func:`effopt.deploy.celery_env`, which the scaled-out end-to-end tests run for real
(``tests/celery_harness.py``): the two cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from effopt.deploy import SERVICE_USER, WORKER_QUEUES, Endpoints, api_connection, celery_env

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-worker-gpu", "airflow-triggerer"}
#: The compose file's service names and credentials as the endpoints of effopt.deploy.
COMPOSE_ENDPOINTS = Endpoints(postgres_host="postgres", postgres_user="airflow", postgres_password="airflow",
                              redis_host="redis", api_url="http://airflow-apiserver:8080")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_services_present(compose):
    assert AIRFLOW_SERVICES | {"postgres", "redis", "prometheus", "mailpit", "airflow-init"} <= set(compose["services"])


def test_long_running_services_have_healthchecks(compose):
    for name, svc in compose["services"].items():
        if name == "airflow-init":
            continue
        check = svc.get("healthcheck", {}).get("test")
        assert check, f"{name} has no healthcheck"
    assert "/api/v2/version" in " ".join(compose["services"]["airflow-apiserver"]["healthcheck"]["test"])


def test_celery_postgres_redis_and_effopt_configuration(compose):
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert (env["AIRFLOW__EFFOPT__STORE_URL"].startswith("postgresql")
                and env["AIRFLOW__EFFOPT__STORE_URL"].endswith("/effopt"))
        assert env["AIRFLOW__EFFOPT__CACHE_BACKEND"] == "redis"
        assert env["AIRFLOW_CONN_EFFOPT_REDIS"].startswith("redis://redis:")
        assert "prometheus:9090" in env["AIRFLOW_CONN_EFFOPT_PROMETHEUS"]
        assert '"host": "mailpit"' in env["AIRFLOW_CONN_SMTP_DEFAULT"]
        mounts = compose["services"][name]["volumes"]
        assert any(m.startswith("./dags:") for m in mounts) and any(m.startswith("./plugins/effopt:") for m in mounts)


def test_effopt_settings_in_compose_pass_validation(compose):
    from effopt.config import Settings

    env = compose["services"]["airflow-scheduler"]["environment"]
    section = {k.removeprefix("AIRFLOW__EFFOPT__").lower(): v for k, v in env.items()
               if k.startswith("AIRFLOW__EFFOPT__")}
    settings = Settings.from_mapping(section, "/opt/airflow")
    assert settings.cache_backend == "redis"


def test_support_files_exist(compose):
    for svc in compose["services"].values():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"compose mounts missing {source}"
    assert (REPO / "Dockerfile").read_text().startswith("#")


def test_every_airflow_service_runs_the_settings_the_celery_topology_ran(compose):
    rendered = celery_env(COMPOSE_ENDPOINTS)
    for name in AIRFLOW_SERVICES | {"airflow-init"}:
        env = compose["services"][name]["environment"]
        assert {k: env.get(k) for k in rendered} == rendered, name


def test_workers_serve_the_queues_of_the_topology(compose):
    services = compose["services"]
    for service, role in (("airflow-worker", "cpu"), ("airflow-worker-gpu", "gpu")):
        argv = shlex.split(services[service]["command"])
        assert argv[:2] == ["celery", "worker"], service
        assert argv[argv.index("--queues") + 1].split(",") == list(WORKER_QUEUES[role]), service
    # The GPU worker gets the machine's GPUs, and only when asked for (docker compose --profile gpu).
    gpu = services["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"


def test_the_service_user_and_its_connection(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    conn = json.loads(env["AIRFLOW_CONN_EFFOPT_AIRFLOW_API"])
    want = json.loads(api_connection("airflow-apiserver", 8080, SERVICE_USER, conn["password"], conn["description"]))
    assert conn == want and conn["password"].startswith("${EFFOPT_SERVICE_PASSWORD:?")
    init = compose["services"]["airflow-init"]
    script = init["command"][-1]
    assert f"--username {SERVICE_USER}" in script and "--role Op" in script
    assert init["environment"]["EFFOPT_SERVICE_PASSWORD"].startswith("${EFFOPT_SERVICE_PASSWORD:?")


def test_task_logs_are_shared_by_every_airflow_service(compose):
    """The API server reads a task's log where its worker wrote it (the topology shares one folder too)."""
    for name in AIRFLOW_SERVICES:
        assert "airflow-logs:/opt/airflow/logs" in compose["services"][name]["volumes"], name


def test_a_password_with_url_characters_stays_one_password():
    import sqlalchemy as sa

    from effopt.deploy import Endpoints

    ep = Endpoints("db", "airflow", "p@ss:w/rd%", "redis", "http://api:8080", postgres_port=6543)
    url = sa.engine.make_url(ep.postgres("effopt"))
    assert (url.username, url.password, url.host, url.port, url.database) == ("airflow", "p@ss:w/rd%", "db", 6543,
                                                                               "effopt")
