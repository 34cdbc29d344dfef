"""``python -m effopt standalone``: Airflow standalone with effopt's bundle and plugin.

Used by ``make run`` and by the test harness, so both start Airflow the same
way: SQLite, LocalExecutor with parallelism sized to the machine, effopt's
``dags/`` and ``plugins/``, and the embedded defaults of ``[effopt]``.

The launcher starts ``airflow standalone`` in its own process group; Ctrl-C
(or :meth:`Standalone.stop`) stops that whole group, so no scheduler, API
server or executor worker outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]


def default_parallelism() -> int:
    # LocalExecutor starts one worker process per slot (~130 MB each): two per core.
    return max(2, 2 * (os.cpu_count() or 1))


class Standalone:
    """One ``airflow standalone`` process group."""

    def __init__(
        self,
        home: Path,
        port: int = 8080,
        *,
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        parallelism: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        output: IO[bytes] | None = None,
    ) -> None:
        self.home = Path(home)
        self.port = port
        self.dags_folder = Path(dags_folder)
        self.plugins_folder = Path(plugins_folder)
        self.parallelism = parallelism or default_parallelism()
        self.extra_env = dict(extra_env or {})
        self.output = output
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{self.port}/execution/",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                # Large @cached_task results travel as cache references; tasks pulling them get the value.
                "AIRFLOW__CORE__XCOM_BACKEND": "effopt.xcom.CacheReferenceXCom",
                # A bundle edited while running shows up within seconds.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # standalone starts its components as `airflow ...` from PATH.
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join((bindir, env.get("PATH", "")))
        # DAG files import effopt from the plugins folder (Airflow puts it on sys.path).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.plugins_folder), env.get("PYTHONPATH")) if p)
        env.update(self.extra_env)
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
        self.home.mkdir(parents=True, exist_ok=True)
        self.check_config()
        airflow = Path(sys.executable).parent / "airflow"
        self.proc = subprocess.Popen(
            [str(airflow), "standalone"],
            env=self.env(),
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,
        )
        return self

    def healthy(self) -> bool:
        """API server up, metadatabase reachable, scheduler, DAG processor and triggerer heartbeating."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
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
        path = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())["admin"]

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT is what Ctrl-C sends: standalone shuts its components down cleanly.
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Components that outlived the launcher (executor workers) share its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def register(parser) -> None:
    parser.add_argument("--home", default=os.environ.get("AIRFLOW_HOME", str(REPO / ".airflow")),
                        help="AIRFLOW_HOME (default: $AIRFLOW_HOME or .airflow in the repo)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("EFFOPT_PORT", "8080")))
    parser.add_argument("--parallelism", type=int, default=None, help="LocalExecutor slots (default 2 per core)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    server = Standalone(Path(args.home), args.port, parallelism=args.parallelism)
    print(f"effopt: starting Airflow standalone (AIRFLOW_HOME={server.home}, parallelism={server.parallelism})")
    server.start()
    try:
        server.wait_ready()
        print(
            "\n"
            f"effopt: Airflow is ready at {server.url}\n"
            f"effopt: log in as admin / {server.admin_password()}"
            f"  (password from {server.home}/simple_auth_manager_passwords.json.generated)\n"
            "effopt: press Ctrl-C to stop every process started here\n",
            flush=True,
        )
        assert server.proc is not None
        server.proc.wait()
        return server.proc.returncode or 0
    except KeyboardInterrupt:
        print("\neffopt: stopping Airflow ...", flush=True)
        return 0
    finally:
        server.stop()
