"""docker-compose.yaml is production-shaped and wires effopt to its services.

Docker cannot run on this machine, so the file's structure is checked instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer"}


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
