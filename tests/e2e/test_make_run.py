"""``make run``'s launcher (``python -m effopt standalone``): ready banner, UI, reuse, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _ps() -> list[tuple[int, int, int, str]]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, pgid, *args = line.split(maxsplit=3)
        rows.append((int(pid), int(ppid), int(pgid), args[0] if args else ""))
    return rows


def _groups_of(launcher_pid: int) -> set[int]:
    """The launcher's process group and the group it started Airflow standalone in."""
    return {launcher_pid} | {pgid for pid, ppid, pgid, _ in _ps() if ppid == launcher_pid}


def _alive(groups: set[int]) -> list[str]:
    return [f"{pid} {args}" for pid, _, pgid, args in _ps() if pgid in groups]


def _launch(home: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "effopt", "standalone", "--home", str(home), "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's foreground group: Ctrl-C reaches the launcher
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("launcher exited before Airflow was ready:\n" + "".join(lines[-60:]))
        lines.append(line)
        if "effopt: press Ctrl-C" in line:
            return proc, lines
    raise AssertionError("no ready banner within 300 s:\n" + "".join(lines[-60:]))


def _ctrl_c(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    return rest


def test_launcher_serves_the_ui_and_ctrl_c_stops_every_process(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc, lines = _launch(home, port)
    try:
        banner = "".join(lines)
        assert f"effopt: Airflow is ready at http://localhost:{port}" in banner
        password = (home / "simple_auth_manager_passwords.json.generated").read_text()
        assert "log in as admin / " in banner and banner.split("log in as admin / ")[1].split()[0] in password
        with urllib.request.urlopen(f"http://localhost:{port}/", timeout=30) as resp:
            assert resp.status == 200
        groups = _groups_of(proc.pid)
        assert len(_alive(groups)) > 4  # launcher, standalone, scheduler, api-server, dag-processor, ...
    finally:
        rest = _ctrl_c(proc)
    assert "effopt: stopping Airflow" in rest
    time.sleep(2)
    assert _alive(groups) == [], "processes outlived Ctrl-C"

    # A second run reuses the home: same database and admin password (a new home would get a new one).
    proc2, _ = _launch(home, port)
    groups2 = _groups_of(proc2.pid)
    try:
        assert (home / "simple_auth_manager_passwords.json.generated").read_text() == password
    finally:
        _ctrl_c(proc2)
    time.sleep(2)
    assert _alive(groups2) == []
