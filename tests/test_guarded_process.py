"""``GuardedProcess``: what every component of the test topologies (and ``make run``) runs in.

The command here behaves like an Airflow worker: it starts a child in a process group of its own (Airflow
runs each task so), which signalling the worker's group does not reach.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from effopt.standalone import GuardedProcess
from effopt.watchdog import session_members

REPO = Path(__file__).resolve().parents[1]

# A "worker" that ignores SIGTERM's default for its task: the task moves to its own group and sleeps.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # the task's own group, as Airflow's supervisor makes it
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(600)
        os._exit(0)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"{path} not written")


def _wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_stop_also_ends_processes_that_left_the_group(tmp_path):
    marker = tmp_path / "task.pid"
    group = GuardedProcess([sys.executable, "-c", WORKER, str(marker)]).start()
    leader = group.pid
    task = _wait_for(marker)
    assert os.getpgid(task) == task != leader and os.getsid(task) == leader
    group.stop(5.0, signal.SIGTERM)
    assert _wait_gone([leader, task]) == []
    assert session_members(leader) == []


def test_kill_takes_the_whole_session_at_once(tmp_path):
    marker = tmp_path / "task.pid"
    group = GuardedProcess([sys.executable, "-c", WORKER, str(marker)]).start()
    leader = group.pid
    task = _wait_for(marker)
    group.kill()
    assert _wait_gone([leader, task]) == []


# The test process itself, killed with SIGKILL: its watchdog stops what it started.
OWNER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from effopt.standalone import GuardedProcess
    group = GuardedProcess([sys.executable, "-c", sys.argv[1], sys.argv[2]]).start()
    print(group.pid, flush=True)
    time.sleep(600)
    """
)


def test_nothing_is_left_when_the_owner_is_killed(tmp_path):
    marker = tmp_path / "task.pid"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, WORKER, str(marker), str(REPO / "plugins")],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        leader = int(owner.stdout.readline())
        task = _wait_for(marker)
        owner.kill()  # SIGKILL: no handler, no cleanup in the owner
        owner.wait()
        # The watchdog gives SIGINT and SIGTERM their grace (the leader here ignores neither), then SIGKILL.
        assert _wait_gone([leader, task], timeout=60) == []
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.stdout.close()
