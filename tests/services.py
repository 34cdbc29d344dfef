"""Real services for the test suite: each one a real server process (or thread) on loopback.

Used by the fixtures in ``tests/conftest.py``; usable on their own from
benchmarks (``bench/``).  Every class starts its server on a free port,
waits until it answers, and stops it (and everything it started) on ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable


class ServiceUnavailable(RuntimeError):
    """A service binary is missing; the message says what to install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")


def require_binary(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceUnavailable(f"{name} is not installed ({install_hint})")
    return path


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop a process started with ``start_new_session=True`` and its whole group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence.

    ``stop()`` and ``start()`` can be called repeatedly (outage tests); the port
    stays the same so clients reconnect to the same URL.
    """

    def __init__(self, port: int | None = None) -> None:
        self.binary = require_binary("redis-server", "apt-get install redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="effopt-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.ping, 15, f"redis-server on port {self.port}", self.proc)
        return self

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

