"""Real services for the test suite: each one a real server process (or thread) on loopback.

Used by the fixtures in ``tests/conftest.py``; usable on their own from
benchmarks (``bench/``).  Every class starts its server on a free port,
waits until it answers, and stops it (and everything it started) on ``stop()``.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path


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


class _ServerProcess:
    """A server process started in its own session, with a scratch directory removed on close()."""

    proc: subprocess.Popen | None
    dir: str | Path

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(_ServerProcess):
    """A real ``redis-server`` on a free loopback port, without persistence.

    ``stop()`` and ``start()`` can be called repeatedly (outage tests); the port
    stays the same so clients reconnect to the same URL.
    """

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = require_binary("redis-server", "apt-get install redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="effopt-redis-")
        self.extra_args = tuple(extra_args)  # e.g. ("--appendonly", "yes"): later ones override the defaults
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *self.extra_args],
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




def postgres_bindir() -> Path:
    """Where Debian's ``postgresql`` package put ``initdb`` and ``postgres`` (the newest version installed)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()])
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise ServiceUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found).resolve().parent


class PostgresServer(_ServerProcess):
    """A PostgreSQL cluster of its own: ``initdb`` into a temporary folder, the server on a free loopback port.

    Not the system service: its data folder, socket and port are private to this instance, and the server
    process runs in a process group of its own, stopped (with every backend) on ``stop()``; a watchdog stops
    it if the test process dies.  Running as root, the server runs as the ``postgres`` user that Debian's
    package creates (PostgreSQL refuses to run as root).  Durability is off (``fsync=off``): a test cluster.
    """

    user = "effopt"
    password = "effopt-test-password"

    def __init__(self, databases: tuple[str, ...] = ()) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="effopt-postgres-"))
        self.data = self.dir / "data"
        self.databases = databases
        self._demote = self._demote_fn()
        self.proc = None
        self._guard = None

    @staticmethod
    def _demote_fn() -> Callable[[], None] | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable("running as root needs the postgres user (apt-get install postgresql)") from None

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        demote.uid, demote.gid = pw.pw_uid, pw.pw_gid  # type: ignore[attr-defined]
        return demote

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        from effopt.standalone import GuardedProcess

        if self._demote is not None:
            os.chown(self.dir, self._demote.uid, self._demote.gid)  # type: ignore[attr-defined]
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._demote is not None:
            os.chown(pwfile, self._demote.uid, self._demote.gid)  # type: ignore[attr-defined]
        if not (self.data / "PG_VERSION").exists():
            res = subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                capture_output=True, text=True, preexec_fn=self._demote,
            )
            if res.returncode != 0:
                raise RuntimeError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        self._log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        self._guard = GuardedProcess(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            output=self._log, preexec_fn=self._demote,
        ).start()
        self.proc = self._guard.proc
        try:
            wait_until(self.ready, 60, f"postgres on port {self.port}", self.proc)
            for database in self.databases:
                self.create_database(database)
        except BaseException:
            self.close()
            raise
        return self

    def ready(self) -> bool:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                         dbname="postgres", connect_timeout=2).close()
        return True

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.stop(30.0, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
            self._log.close()
        self.proc = None



class PrometheusServer(_ServerProcess):
    """A real Prometheus server whose TSDB is pre-filled with history.

    ``openmetrics`` text (with explicit timestamps in seconds, ending in
    ``# EOF``) is turned into TSDB blocks by ``promtool tsdb
    create-blocks-from openmetrics`` before the server starts, so tests can
    query days of usage at once.  Retention is long enough that old samples
    stay queryable.
    """

    def __init__(self, openmetrics: str | None = None) -> None:
        self.binary = require_binary("prometheus", "apt-get install prometheus")
        self.promtool = require_binary("promtool", "apt-get install prometheus")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="effopt-prometheus-"))
        self.data = self.dir / "data"
        self.data.mkdir()
        self.openmetrics = openmetrics
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def load(self, openmetrics: str) -> None:
        """Write ``openmetrics`` history into the TSDB (only while the server is stopped)."""
        if self.proc is not None:
            raise RuntimeError("load history before start(): blocks are picked up at startup")
        if not openmetrics.rstrip().endswith("# EOF"):
            openmetrics = openmetrics.rstrip("\n") + "\n# EOF\n"
        source = self.dir / "history.om"
        source.write_text(openmetrics)
        res = subprocess.run(
            [self.promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"promtool could not import the history: {res.stderr.strip() or res.stdout.strip()}")

    def start(self) -> PrometheusServer:
        if self.openmetrics:
            self.load(self.openmetrics)
        config = self.dir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=100y",
             "--web.enable-admin-api"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.ready, 60, f"prometheus on port {self.port}", self.proc)
        return self

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return resp.status == 200

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed: {body}")
        return body["data"]["result"]



class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives.

    ``messages`` holds :class:`email.message.EmailMessage` objects with the
    envelope in ``X-Envelope-From`` / ``X-Envelope-To`` headers.  ``fail_with``
    makes the server reject every DATA command with that SMTP reply (e.g.
    ``"451 4.3.0 try again later"``) to test delivery failures.
    """

    def __init__(self) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - dev requirement
            raise ServiceUnavailable("aiosmtpd is not installed (pip install -r requirements-dev.txt)") from exc
        self.messages: list[email.message.EmailMessage] = []
        self.fail_with: str | None = None
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd handler API
        if self.fail_with:
            return self.fail_with
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        msg["X-Envelope-From"] = envelope.mail_from
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 Message accepted for delivery"

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    close = stop


class MotoServer:
    """The moto AWS emulator (``moto[server]``) in a thread on a free loopback port."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # pragma: no cover - dev requirement
            raise ServiceUnavailable("moto[server] is not installed (pip install -r requirements-dev.txt)") from exc
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self._server.start()
        return self

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)

    def stop(self) -> None:
        self._server.stop()

    close = stop
