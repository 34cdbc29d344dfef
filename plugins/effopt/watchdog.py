"""Stops a process group once its launcher is gone, however the launcher ended (SIGKILL included).

``python -m effopt.watchdog PGID`` runs in a session of its own with one end of a
pipe as its standard input; the launcher holds the other end.  When the
launcher exits for any reason the kernel closes its end, the read here returns
end-of-file, and the watchdog stops the group: SIGINT, then SIGTERM, then
SIGKILL for whatever is left after a grace period.  The group leader was
started in a session of its own, so processes that moved to groups of their own
(Airflow runs each task in one) are found by their session and killed too.  A launcher that stopped the group
itself just closes the pipe, and the watchdog finds nothing left to do.

Imports only the standard library: it must start in milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (read from /proc; empty where there is none)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":  # a zombie has ended already
            members.append(int(entry))
    return members


def kill_session(sid: int) -> None:
    """SIGKILL every process left in session ``sid``: those in groups of their own included."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop_group(pgid: int, grace_s: float) -> None:
    """SIGINT (Airflow standalone's clean shutdown), then SIGTERM, then SIGKILL, each after a grace period;
    then SIGKILL for what is left of the session the group leader started (``pgid`` is its id too)."""
    try:
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, grace_s / 2), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not group_alive(pgid):
                    return
                time.sleep(0.1)
    finally:
        kill_session(pgid)


def main(argv: list[str]) -> int:
    pgid = int(argv[0])
    grace_s = float(argv[1]) if len(argv) > 1 else 20.0
    # The terminal's Ctrl-C and hang-up are for the launcher, which then stops the group itself.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            if not os.read(0, 4096):
                break  # end of file: the launcher is gone
        except InterruptedError:
            continue
        except OSError:
            break
    if group_alive(pgid) or session_members(pgid):
        stop_group(pgid, grace_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
