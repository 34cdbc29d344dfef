"""``make run``'s launcher (``python -m effopt standalone``): ready banner, UI, reuse, a busy port, and every
way of stopping it (Ctrl-C, SIGTERM to make, SIGHUP, SIGINT ignored at start, SIGKILL) stops every process."""

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
PASSWORDS = "simple_auth_manager_passwords.json.generated"


def _ps() -> list[tuple[int, int, int, int, str]]:
    """(pid, ppid, pgid, sid, args) of every process."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,pgid=,sid=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, pgid, sid, *args = line.split(maxsplit=4)
        rows.append((int(pid), int(ppid), int(pgid), int(sid), args[0] if args else ""))
    return rows


def _airflow_group(launcher_pid: int) -> int:
    """The process group the launcher started ``airflow standalone`` in (its child running standalone)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for _pid, ppid, pgid, _sid, args in _ps():
            if ppid == launcher_pid and "airflow standalone" in args:
                return pgid
        time.sleep(0.2)
    raise AssertionError(f"launcher {launcher_pid} started no airflow standalone")


def _alive(pgid: int) -> list[str]:
    return [f"{pid} {args}" for pid, _, g, _, args in _ps() if g == pgid]


def _wait_gone(pgid: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pgid):
        time.sleep(0.5)
    assert _alive(pgid) == [], "processes outlived the launcher"


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _cleanup():
    """Whatever a failed test leaves running is stopped: its launchers, and the Airflow groups they started."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        groups = {pgid for pid, ppid, pgid, _sid, _args in _ps() if ppid == proc.pid or pid == proc.pid}
        for pgid in groups | {proc.pid}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(30)


def _spawn(cmd: list[str], home: Path, port: int, *, ignore_sigint: bool = False) -> subprocess.Popen:
    def preexec() -> None:
        if ignore_sigint:  # what a background job of a script or nohup starts with
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AIRFLOW_HOME": str(home), "EFFOPT_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's foreground group: Ctrl-C reaches the launcher
        preexec_fn=preexec,
    )
    _SPAWNED.append(proc)
    return proc


def _launcher(home: Path, port: int, **kw) -> subprocess.Popen:
    return _spawn([sys.executable, "-m", "effopt", "standalone", "--home", str(home), "--port", str(port)],
                  home, port, **kw)


def _wait_banner(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("launcher exited before Airflow was ready:\n" + "".join(lines[-60:]))
        lines.append(line)
        if "effopt: press Ctrl-C" in line:
            return lines
    raise AssertionError("no ready banner within 300 s:\n" + "".join(lines[-60:]))


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


def test_launcher_serves_the_ui_refuses_a_busy_port_and_ctrl_c_stops_every_process(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = _launcher(home, port)
    pgid = _airflow_group(proc.pid)
    try:
        banner = "".join(_wait_banner(proc))
        assert f"effopt: Airflow is ready at http://localhost:{port}" in banner
        password = (home / PASSWORDS).read_text()
        assert "log in as admin / " in banner and banner.split("log in as admin / ")[1].split()[0] in password
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            assert resp.status == 200
        assert _listening_addresses(port) == {"0100007F"}, "the API server must bind to 127.0.0.1 only"
        assert len(_alive(pgid)) > 4  # standalone, scheduler, api-server, dag-processor, triggerer, ...

        # A second launch on the same port says who holds it and starts nothing.
        second = _launcher(tmp_path / "other", port)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert f"port {port} on 127.0.0.1 is already in use by Airflow 3." in out, out
        assert "is ready" not in out
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        rest, _ = proc.communicate(timeout=120)
    assert "effopt: stopping Airflow (SIGINT)" in rest
    _wait_gone(pgid)

    # A second run reuses the home: same database and admin password (a new home would get a new one).
    proc2 = _launcher(home, port)
    pgid2 = _airflow_group(proc2.pid)
    try:
        _wait_banner(proc2)
        assert (home / PASSWORDS).read_text() == password
    finally:
        os.killpg(proc2.pid, signal.SIGINT)
        proc2.communicate(timeout=120)
    _wait_gone(pgid2)


def _started(launcher_pid: int) -> int:
    """The Airflow group once its components are up (the banner is not needed to test a stop)."""
    pgid = _airflow_group(launcher_pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_alive(pgid)) < 5:
        time.sleep(0.5)
    assert len(_alive(pgid)) >= 5, _alive(pgid)
    return pgid


def _launcher_under(make_pid: int, timeout: float = 120.0) -> int:
    """The launcher process that ``make run`` started (a child of make, or of the shell make ran)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _ps()
        family = {make_pid}
        for pid, ppid, *_ in rows:  # rows are in pid order; parents come first
            if ppid in family:
                family.add(pid)
        for pid, _ppid, _pgid, _sid, args in rows:
            if pid in family and "effopt standalone" in args and not args.startswith("make"):
                return pid
        time.sleep(0.2)
    raise AssertionError(f"make ({make_pid}) started no launcher")


@pytest.mark.parametrize("how", ["sigterm-to-make", "sighup", "sigint-ignored-at-start", "sigkill"])
def test_every_way_of_stopping_the_launcher_stops_airflow(tmp_path, how):
    home, port = tmp_path / "home", free_port()
    if how == "sigterm-to-make":
        proc = _spawn(["make", "--no-print-directory", "run"], home, port)  # make forwards SIGTERM to its job
        launcher = _launcher_under(proc.pid)
    else:
        proc = _launcher(home, port, ignore_sigint=how == "sigint-ignored-at-start")
        launcher = proc.pid
    pgid = _started(launcher)
    sig = {"sigterm-to-make": signal.SIGTERM, "sighup": signal.SIGHUP, "sigint-ignored-at-start": signal.SIGINT,
           "sigkill": signal.SIGKILL}[how]
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    if how != "sigkill":
        assert f"effopt: stopping Airflow ({signal.Signals(sig).name})" in out, out[-3000:]
    _wait_gone(pgid)
