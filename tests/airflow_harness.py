"""A real Airflow 3.3 standalone for end-to-end tests, and a small REST API v2 client.

The server is started by :class:`effopt.standalone.Standalone` (the same
launcher as ``make run``) in a temporary ``AIRFLOW_HOME`` on a free port.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from effopt.standalone import Standalone
from tests.services import free_port

FINAL_RUN_STATES = {"success", "failed"}


class AirflowApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class AirflowClient:
    """Airflow REST API v2 with a JWT from ``POST /auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    # -- plumbing -----------------------------------------------------------
    def token(self) -> str:
        body = self._raw("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
        return body["access_token"]

    def _raw(self, method: str, path: str, payload: Any = None, *, auth: bool = True, params=None) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            if self._token is None:
                self._token = self.token()
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def request(self, method: str, path: str, payload: Any = None, params=None) -> Any:
        for attempt in range(3):
            try:
                return self._raw(method, path, payload, params=params)
            except AirflowApiError as exc:
                if exc.status == 401 and attempt == 0:
                    self._token = None  # expired: log in again once
                elif exc.status == 500 and '"Database error"' in exc.body and attempt < 2:
                    time.sleep(2)  # SQLite busy on a loaded machine; the failed request was rolled back
                else:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    # -- DAGs and runs ------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """Wait until the DAG processor has parsed ``dag_id``; raise with the import errors otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(f"/api/v2/dags/{dag_id}")
            except AirflowApiError as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id} not parsed within {timeout:.0f}s; "
                                   f"import errors: {self.import_errors()}")
            time.sleep(1)

    def unpause(self, dag_id: str) -> dict:
        return self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Wait for a final state; on timeout, the error lists the task states."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINAL_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id} {run_id} not finished after {timeout:.0f}s: {self.task_states(dag_id, run_id)}")

    def run_dag(self, dag_id: str, conf: dict | None = None, timeout: float = 240) -> tuple[str, str]:
        """Unpause, trigger and wait: (run_id, final state)."""
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        run_id = self.trigger(dag_id, conf)
        return run_id, self.wait_for_run(dag_id, run_id, timeout)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (page by page: the API serves at most ``[api] maximum_page_limit``)."""
        out: list[dict] = []
        while True:
            page = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances", limit=100, offset=len(out))
            out.extend(page["task_instances"])
            if not page["task_instances"] or len(out) >= page["total_entries"]:
                return out

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        entry = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}",
            map_index=map_index,
            deserialize="true",
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}")
        content = body.get("content", body) if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(c.get("event", str(c)) if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Task states plus the logs of failed tasks, for assertion messages."""
        lines = [f"task states: {self.task_states(dag_id, run_id)}"]
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] in ("success", "skipped") or not ti["try_number"]:
                continue
            try:
                log = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"])
            except AirflowApiError as exc:
                log = f"(log not available: {exc})"
            lines.append(f"--- log of {ti['task_id']} (try {ti['try_number']}) ---\n{log}")
        return "\n".join(lines)

    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors")["import_errors"]

    def plugins(self) -> list[dict]:
        return self.get("/api/v2/plugins")["plugins"]


def _q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


class AirflowServer:
    """A running standalone plus its client; ``home`` holds airflow.cfg, the DBs and logs."""

    def __init__(self, home: Path, extra_env: dict[str, str]) -> None:
        self.home = home
        self.log_path = home / "standalone.log"
        home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.standalone = Standalone(home, free_port(), extra_env=extra_env, output=self._log)
        self.client: AirflowClient | None = None

    @property
    def url(self) -> str:
        return self.standalone.url

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.home / 'effopt.db'}"

    def start(self, timeout: float = 300) -> AirflowServer:
        self.standalone.start()
        try:
            self.standalone.wait_ready(timeout)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- standalone log tail ---\n{self.log_tail()}") from exc
        self.client = AirflowClient(self.url, "admin", self.standalone.admin_password())
        return self

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.standalone.stop()
        self._log.close()
