"""``python -m effopt standalone``: Airflow standalone with effopt's bundle and plugin.

Used by ``make run`` and by the test harness, so both start Airflow the same
way: SQLite, LocalExecutor with parallelism sized to the machine, effopt's
``dags/`` and ``plugins/``, and the embedded defaults of ``[effopt]``.

The launcher starts ``airflow standalone`` in its own process group and stops
that whole group however it is itself stopped: Ctrl-C, SIGTERM and SIGHUP
(closing the terminal) are handled explicitly, also when the launcher was
started with SIGINT ignored (a background job, ``nohup``); if the launcher is
killed outright (SIGKILL), :mod:`effopt.watchdog` stops the group.  So no
scheduler, API server or executor worker outlives it.

It refuses to start when the port is taken (by another Airflow or anything
else) instead of reporting a server it did not start, binds the API server to
127.0.0.1 unless ``EFFOPT_HOST`` says otherwise, and gives tasks the
``effopt_airflow_api`` connection: a service user ``effopt`` with the Op role
(its password generated once into the same password file as admin's), which
effopt's operators use for the REST API (pools, task states).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from effopt.deploy import SERVICE_USER, XCOM_BACKEND, api_connection
from effopt.watchdog import kill_session

REPO = Path(__file__).resolve().parents[2]
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
API_CONN_ENV = "AIRFLOW_CONN_EFFOPT_AIRFLOW_API"
# Airflow's SQLite connections wait this long for a lock instead of sqlite3's 5 s: with every component
# and task writing to one file, a busy 2-core machine otherwise answers REST calls with "Database error".
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 20}


class PortInUse(RuntimeError):
    """The API server's port is already taken: by another Airflow, or by anything else."""


class LauncherStopped(BaseException):
    """Raised by the launcher's signal handlers (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _local_host(host: str) -> str:
    """Where this machine reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host


def port_owner(host: str, port: int) -> str | None:
    """None when ``port`` is free on ``host``; else what holds it (``Airflow 3.3.2`` or a description)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("" if host in ("0.0.0.0", "::") else host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return None
    try:
        url = f"http://{_local_host(host)}:{port}/api/v2/version"
        with urllib.request.urlopen(url, timeout=3) as resp:
            version = json.load(resp).get("version")
        return f"Airflow {version}" if version else "a server answering /api/v2/version"
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return "another program"


def service_password(home: Path) -> str:
    """The ``effopt`` service user's password in the simple auth manager's password file (made once)."""
    path = home / PASSWORDS_FILE
    try:
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        passwords = {}
    if SERVICE_USER not in passwords:
        passwords[SERVICE_USER] = secrets.token_urlsafe(16)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(passwords) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
    return passwords[SERVICE_USER]


def default_parallelism() -> int:
    # LocalExecutor starts one worker process per slot (~130 MB each): two per core.
    return max(2, 2 * (os.cpu_count() or 1))


def component_env(home: Path, dags_folder: Path, plugins_folder: Path, public_url: str) -> dict[str, str]:
    """The environment of every Airflow component effopt starts, whatever the executor (``make run``'s
    standalone, the scaled-out test topology): this process's environment plus its ``AIRFLOW_HOME``, effopt's
    bundle and plugins folder, the users (admin, and the ``effopt`` service user with the Op role), the XCom
    backend that resolves cache references, and ``PATH``/``PYTHONPATH`` so that ``airflow`` and ``effopt`` are
    the ones of this interpreter and checkout."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # admin for people; effopt (Op role) for effopt's operators over the REST API.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{SERVICE_USER}:op",
            "AIRFLOW__API__BASE_URL": public_url,
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # Large @cached_task results travel as cache references; tasks pulling them get the value.
            "AIRFLOW__CORE__XCOM_BACKEND": XCOM_BACKEND,
            # A bundle edited while running shows up within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Components (and standalone's children) start as `airflow ...` from PATH.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join((bindir, env.get("PATH", "")))
    # DAG files import effopt from the plugins folder (Airflow puts it on sys.path).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins_folder), env.get("PYTHONPATH")) if p)
    return env


def service_connection(home: Path, host: str, port: int) -> str:
    """``AIRFLOW_CONN_EFFOPT_AIRFLOW_API`` for the API server at ``host:port`` whose password file is in ``home``."""
    return api_connection(host, port, SERVICE_USER, service_password(home),
                          "effopt's service user on this Airflow's REST API (made by the launcher)")


class GuardedProcess:
    """A command in a session and process group of its own that never outlives this process.

    :meth:`stop` stops the whole group (a first signal, then SIGTERM, then SIGKILL) and then kills what is
    left of the session (Airflow runs each task in a process group of its own); :meth:`kill` SIGKILLs all of
    it at once.  If this process is killed outright (SIGKILL), :mod:`effopt.watchdog` does the same.
    """

    def __init__(self, argv: list[str], env: Mapping[str, str] | None = None, output: IO[bytes] | None = None,
                 **popen: Any) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.output = output
        self.popen = popen
        self.proc: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._watchdog_pipe: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> GuardedProcess:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,
            **self.popen,
        )
        self._start_watchdog(self.proc.pid)
        return self

    def _start_watchdog(self, pgid: int) -> None:
        """A process that stops the group when this one is gone, even after a SIGKILL."""
        read_end, write_end = os.pipe()  # both non-inheritable: the group's processes never hold the write end
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "effopt.watchdog", str(pgid)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)},
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._watchdog_pipe = write_end

    def stop(self, timeout: float = 30.0, first: signal.Signals = signal.SIGINT) -> None:
        try:
            self._stop_group(timeout, first)
        finally:
            self._close_watchdog()

    def kill(self) -> None:
        """SIGKILL the whole group, and every process of its session, at once (what losing the machine does)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_session(proc.pid)
            proc.wait()
        self._close_watchdog()

    def _close_watchdog(self) -> None:
        pipe, self._watchdog_pipe = self._watchdog_pipe, None
        if pipe is not None:
            os.close(pipe)  # the watchdog reads end-of-file, finds the group gone, and exits
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            try:
                watchdog.wait(5)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()

    def _stop_group(self, timeout: float, first: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            self._signal_group(proc, timeout, first)
        finally:
            # Airflow runs each task in a process group of its own: what is left of the session goes too.
            kill_session(proc.pid)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, timeout: float, first: signal.Signals) -> None:
        if proc.poll() is not None:
            try:  # the leader is gone; the rest of its group may not be
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        for sig, wait in ((first, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children that outlived the leader (executor workers) share its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Standalone:
    """One ``airflow standalone`` process group."""

    def __init__(
        self,
        home: Path,
        port: int = 8080,
        *,
        host: str = "127.0.0.1",
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        parallelism: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        output: IO[bytes] | None = None,
    ) -> None:
        self.home = Path(home)
        self.port = port
        self.host = host
        self.dags_folder = Path(dags_folder)
        self.plugins_folder = Path(plugins_folder)
        self.parallelism = parallelism or default_parallelism()
        self.extra_env = dict(extra_env or {})
        self.output = output
        self._group: GuardedProcess | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        """The ``airflow standalone`` process (the leader of its group), while started."""
        return self._group.proc if self._group is not None else None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def local_url(self) -> str:
        """The URL this machine's processes (task supervisors, the launcher) use."""
        return f"http://{_local_host(self.host)}:{self.port}"

    def env(self) -> dict[str, str]:
        env = component_env(self.home, self.dags_folder, self.plugins_folder, self.url)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.local_url}/execution/",
                "AIRFLOW__API__HOST": self.host,
                "AIRFLOW__API__PORT": str(self.port),
            }
        )
        if API_CONN_ENV not in env and (self.home / PASSWORDS_FILE).exists():
            env[API_CONN_ENV] = service_connection(self.home, _local_host(self.host), self.port)
        env.update(self.extra_env)
        if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
            for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
                env.setdefault(f"AIRFLOW__DATABASE__{key}", "effopt.standalone.SQLITE_CONNECT_ARGS")
        return env

    def check_config(self) -> None:
        """Fail before starting anything when ``[effopt]`` is invalid."""
        res = subprocess.run(
            [sys.executable, "-m", "effopt", "config", "check"],
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(res.stderr.strip() or res.stdout.strip())

    def start(self) -> Standalone:
        owner = port_owner(self.host, self.port)
        if owner is not None:
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use by {owner}; stop it, or pick another port "
                f"(EFFOPT_PORT=8081 make run)"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        service_password(self.home)
        self.check_config()
        airflow = Path(sys.executable).parent / "airflow"
        self._group = GuardedProcess([str(airflow), "standalone"], self.env(), self.output).start()
        return self

    def healthy(self) -> bool:
        """API server up, metadatabase reachable, scheduler, DAG processor and triggerer heartbeating."""
        try:
            with urllib.request.urlopen(f"{self.local_url}/api/v2/monitor/health", timeout=5) as resp:
                health = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with code {self.proc.returncode} while starting")
            if self.healthy():
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy at {self.url} within {timeout:.0f}s")

    def admin_password(self) -> str:
        return json.loads((self.home / PASSWORDS_FILE).read_text())["admin"]

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is what Ctrl-C sends: standalone shuts its components down cleanly; executor workers that
        # outlive it share its group and are killed with it.
        group, self._group = self._group, None
        if group is not None:
            group.stop(timeout, signal.SIGINT)


def register(parser) -> None:
    parser.add_argument("--home", default=os.environ.get("AIRFLOW_HOME", str(REPO / ".airflow")),
                        help="AIRFLOW_HOME (default: $AIRFLOW_HOME or .airflow in the repo)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("EFFOPT_PORT", "8080")),
                        help="API server port (default: $EFFOPT_PORT or 8080)")
    parser.add_argument("--host", default=os.environ.get("EFFOPT_HOST", "127.0.0.1"),
                        help="address the API server binds to (default: $EFFOPT_HOST or 127.0.0.1)")
    parser.add_argument("--parallelism", type=int, default=None, help="LocalExecutor slots (default 2 per core)")
    parser.set_defaults(func=_run)


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise LauncherStopped(signum)


def _run(args) -> int:
    # Explicit handlers, so SIGTERM (e.g. from make), SIGHUP (terminal closed) and SIGINT stop everything,
    # also when this process started with SIGINT ignored (a background job of a script, nohup).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    server = Standalone(Path(args.home), args.port, host=args.host, parallelism=args.parallelism)
    print(f"effopt: starting Airflow standalone (AIRFLOW_HOME={server.home}, parallelism={server.parallelism})",
          flush=True)
    try:
        server.start()
        server.wait_ready()
        print(
            "\n"
            f"effopt: Airflow is ready at {server.url}\n"
            f"effopt: log in as admin / {server.admin_password()}"
            f"  (password from {server.home}/{PASSWORDS_FILE})\n"
            "effopt: press Ctrl-C to stop every process started here\n",
            flush=True,
        )
        assert server.proc is not None
        server.proc.wait()
        return server.proc.returncode or 0
    except PortInUse as exc:
        print(f"effopt: {exc}", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, LauncherStopped) as exc:
        name = exc.args[0] if isinstance(exc, LauncherStopped) else "SIGINT"
        # No more signals while stopping: a second Ctrl-C must not leave the group half-stopped.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print(f"\neffopt: stopping Airflow ({name}) ...", flush=True)
        return 0
    finally:
        server.stop()
