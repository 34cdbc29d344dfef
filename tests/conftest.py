"""Session-wide fixtures: real services started once, cleaned up at the end.

A fixture whose binary is missing skips with the reason locally; with
``EFFOPT_FORBID_SKIPS=1`` (set by ``.ci/run``) any skipped test fails the run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests that import Airflow in-process get a throwaway AIRFLOW_HOME (set before
# any of them imports it), so nothing is read from or written to ~/airflow.
if "AIRFLOW_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="effopt-test-airflow-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = _home
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO))

import json  # noqa: E402

# The Kubernetes API stand-in, its hook, an effopt store and the test rate table, for the tests of the modules
# at the package's top (effopt.policies, effopt.prices); packages' own conftests may override them.
from tests.rightsizing.apply.conftest import kube_hook, rates, standin, store  # noqa: E402, F401 - fixtures
from tests.services import (  # noqa: E402
    MotoServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    ServiceUnavailable,
    SmtpServer,
)


def _start(factory):
    try:
        return factory()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the session (do not stop it; use ``redis_instance`` for outages)."""
    server = _start(lambda: RedisServer().start())
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL cluster of its own for the session (``create_database`` for a fresh database)."""
    server = _start(lambda: PostgresServer().start())
    yield server
    server.close()


@pytest.fixture
def redis_instance():
    """A private real redis-server for one test; the test may ``stop()`` and ``start()`` it."""
    server = _start(lambda: RedisServer().start())
    yield server
    server.close()


@pytest.fixture
def prometheus_factory():
    """Start real Prometheus servers pre-filled with OpenMetrics history: ``prometheus_factory(text)``."""
    servers: list[PrometheusServer] = []

    def make(openmetrics: str) -> PrometheusServer:
        server = _start(lambda: PrometheusServer(openmetrics))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def _smtp_session():
    server = _start(lambda: SmtpServer().start())
    yield server
    server.close()


@pytest.fixture
def smtp_server(_smtp_session):
    """The session's real SMTP server, emptied for this test."""
    _smtp_session.messages.clear()
    _smtp_session.fail_with = None
    yield _smtp_session
    _smtp_session.fail_with = None


@pytest.fixture(scope="session")
def moto_server():
    """The moto AWS server (EC2 and friends) on a free loopback port."""
    server = _start(lambda: MotoServer().start())
    yield server
    server.close()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Point boto3 and the ``aws_default`` connection at moto for this test."""
    moto_server.reset()
    env = aws_connection_env(moto_server)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def aws_connection_env(moto: MotoServer) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "login": "testing", "password": "testing",
             "extra": {"region_name": "us-east-1", "endpoint_url": moto.url}}
        ),
    }


def smtp_connection_uri(smtp: SmtpServer) -> str:
    return json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
         "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "effopt@localhost"}}
    )


@pytest.fixture(scope="session")
def airflow(tmp_path_factory, redis_server, _smtp_session, moto_server):
    """A real Airflow 3.3 standalone (SQLite, LocalExecutor) running effopt's bundle and plugin.

    Its connections point at the session's real Redis, SMTP and moto servers.
    Yields :class:`tests.airflow_harness.AirflowServer`; ``.client`` talks REST.
    """
    from tests.airflow_harness import AirflowServer

    env = {
        "AIRFLOW_CONN_EFFOPT_REDIS": redis_server.url,
        "AIRFLOW__EFFOPT__CACHE_SECRET": "effopt-e2e-" + "s" * 32,
        "AIRFLOW_CONN_SMTP_DEFAULT": smtp_connection_uri(_smtp_session),
        **aws_connection_env(moto_server),
    }
    server = AirflowServer(tmp_path_factory.mktemp("airflow-home"), env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery_topology(tmp_path_factory):
    """effopt scaled out: CeleryExecutor, its own Postgres and Redis, two Celery workers (``worker-a``: queues
    default and cpu; ``worker-b``: default and gpu), one task slot each; a static GPU inventory of one T4.

    Started once per session, by the one module that uses it (``tests/e2e/test_scaleout_e2e.py``), and
    stopped when that module is done: its eight idle Airflow processes would slow every later test.

    Yields :class:`tests.celery_harness.CeleryTopology`; ``.client`` talks REST, ``.store_url`` is the
    Postgres effopt store.
    """
    from tests.celery_harness import CeleryTopology

    root = tmp_path_factory.mktemp("celery-topology")
    inventory = root / "gpus.yaml"  # one T4 for every worker: GPU leases in the topology's Redis
    inventory.write_text("nodes:\n  - {name: gpu-box, gpus: 1, model: T4, gpu_memory_mib: 15360}\n")
    gpu_env = {"AIRFLOW__EFFOPT__GPU_INVENTORY": "static", "AIRFLOW__EFFOPT__GPU_INVENTORY_FILE": str(inventory),
               "AIRFLOW__EFFOPT__GPU_CAPACITY_POLL_S": "1"}
    topology = _start(lambda: CeleryTopology(root, extra_env=gpu_env).start())
    yield topology
    topology.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, driven by Playwright from PyPI): ``browser.new_page(viewport=...)``.

    Module-scoped: Playwright's sync API keeps an asyncio loop running in the main thread while it is open,
    and tests that later call ``asyncio.run`` need it gone."""
    from tests.browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("EFFOPT_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(
            f"EFFOPT_FORBID_SKIPS: {len(skipped)} test(s) skipped; CI installs every service, so a skip is a failure:",
            red=True,
        )
        for rep in skipped:
            why = rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr
            reporter.write_line(f"  {rep.nodeid}: {why}")
        session.exitstatus = 1
