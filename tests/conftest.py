"""Session-wide fixtures: real services started once, cleaned up at the end.

A fixture whose binary is missing skips with the reason locally; with
``EFFOPT_FORBID_SKIPS=1`` (set by ``.ci/run``) any skipped test fails the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO))

from tests.services import RedisServer, ServiceUnavailable  # noqa: E402


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


@pytest.fixture
def redis_instance():
    """A private real redis-server for one test; the test may ``stop()`` and ``start()`` it."""
    server = _start(lambda: RedisServer().start())
    yield server
    server.close()


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
            reporter.write_line(f"  {rep.nodeid}: {rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr}")
        session.exitstatus = 1
