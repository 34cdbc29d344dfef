"""Airflow's own REST API (v2) from task code: pools now, task states for cleanup jobs later.

Task code never opens a metadata-DB session (Airflow 3); what effopt needs to
read or change in Airflow itself goes through the public REST API, as a user
of the ``[effopt] airflow_api_conn_id`` connection (``effopt_airflow_api`` by
default): an ``http`` connection whose host and port reach the API server and
whose login and password are a user allowed to do it (the Op role for pools).
``make run`` defines it for its ``effopt`` service user.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from effopt.operators.errors import missing_connection

DEFAULT_CONN_ID = "effopt_airflow_api"


class AirflowApiError(RuntimeError):
    """The API answered with an error; ``transient`` for 5xx, 429 and unreachable servers."""

    def __init__(self, message: str, *, status: int | None, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class AirflowApiHook(BaseHook):
    """A small client of ``/api/v2`` with a JWT from ``POST /auth/token`` (renewed on a 401)."""

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "http"
    hook_name = "effopt Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = "", timeout_s: float = 30.0) -> None:
        super().__init__()
        if not airflow_api_conn_id:
            from effopt.airflow_settings import get_settings

            airflow_api_conn_id = get_settings().airflow_api_conn_id
        self.airflow_api_conn_id = airflow_api_conn_id
        self.timeout_s = timeout_s
        self._base: str | None = None
        self._auth: tuple[str, str] | None = None
        self._token: str | None = None

    # -- plumbing -------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._base is not None:
            return
        try:
            conn = self.get_connection(self.airflow_api_conn_id)
        except AirflowNotFoundException as exc:
            raise AirflowNotFoundException(missing_connection(
                self.airflow_api_conn_id, what="Airflow's REST API, as a user with the Op role",
                example="http://USER:PASSWORD@HOST:8080")) from exc
        if not conn.host:
            raise ValueError(f"connection {self.airflow_api_conn_id!r} has no host")
        host = conn.host.rstrip("/")
        if not host.startswith(("http://", "https://")):
            scheme = "https" if conn.conn_type == "https" or conn.schema == "https" else "http"
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if not conn.login:
            raise ValueError(f"connection {self.airflow_api_conn_id!r} has no login: name an Airflow user")
        self._base = host
        self._auth = (conn.login, conn.password or "")

    def _send(self, method: str, path: str, payload: Any = None, *, token: str | None) -> Any:
        assert self._base is not None
        req = urllib.request.Request(self._base + path, method=method,
                                     data=None if payload is None else json.dumps(payload).encode())
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path} -> HTTP {exc.code}: {body}", status=exc.code,
                                  transient=exc.code >= 500 or exc.code == 429) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowApiError(f"Airflow API at {self._base} unreachable: {exc}", status=None,
                                  transient=True) from exc
        return json.loads(raw) if raw else None

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        """``method`` ``/api/v2/...``; logs in first, and once more if the token expired."""
        self._connect()
        for attempt in (0, 1):
            if self._token is None:
                assert self._auth is not None
                user, password = self._auth
                body = self._send("POST", "/auth/token", {"username": user, "password": password}, token=None)
                self._token = body["access_token"]
            try:
                return self._send(method, path, payload, token=self._token)
            except AirflowApiError as exc:
                if exc.status != 401 or attempt:
                    raise
                self._token = None
        raise AssertionError("unreachable")

    # -- pools ----------------------------------------------------------------------------------------------
    def pools(self) -> dict[str, dict[str, Any]]:
        """Every pool by name (``slots``, ``occupied_slots``, ``running_slots``, ``queued_slots``, ...)."""
        out: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.request("GET", f"/api/v2/pools?limit=100&offset={offset}")
            for pool in page["pools"]:
                out[pool["name"]] = pool
            offset += len(page["pools"])
            if not page["pools"] or offset >= page.get("total_entries", offset):
                return out

    def create_pool(self, name: str, slots: int, description: str) -> dict[str, Any]:
        return self.request("POST", "/api/v2/pools", {"name": name, "slots": int(slots), "description": description,
                                                       "include_deferred": False})

    def update_pool(self, name: str, **fields: Any) -> dict[str, Any]:
        quoted = _q(name)
        # update_mask is a list: one query parameter per field (a comma-joined one matches no field).
        mask = "&".join(f"update_mask={urllib.parse.quote(f)}" for f in sorted(fields))
        # The body must carry include_deferred (Airflow 3.3 validates it); only the fields in the mask change.
        body = {"name": name, "include_deferred": False, **fields}
        return self.request("PATCH", f"/api/v2/pools/{quoted}?{mask}", body)

    def delete_pool(self, name: str) -> None:
        self.request("DELETE", f"/api/v2/pools/{_q(name)}")

    def ensure_pools(self, wanted: Mapping[str, tuple[int, str]]) -> dict[str, str]:
        """Create each missing pool ``name -> (slots, description)``; an existing pool is left as it is.

        Returns ``{name: "created" | "exists"}``.  A pool that appears between the listing and the
        create (another task doing the same) counts as existing.
        """
        existing = self.pools()
        done: dict[str, str] = {}
        for name, (slots, description) in sorted(wanted.items()):
            if name in existing:
                done[name] = "exists"
                continue
            try:
                self.create_pool(name, slots, description)
                done[name] = "created"
            except AirflowApiError as exc:
                if exc.status != 409:
                    raise
                done[name] = "exists"
        return done

    # -- task states (the spot cleanup's orphan rule) -----------------------------------------------------------
    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The DAG run (``state``, ...), or None when there is no such run."""
        return self._get_or_none(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """The task instance (``state``, ``try_number``, ...), or None when the run has no such task."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        return self._get_or_none(path + (f"/{int(map_index)}" if map_index >= 0 else ""))

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise


def _q(part: str) -> str:
    """One path segment of a REST URL (run ids carry ``+`` and ``:``)."""
    return urllib.parse.quote(part, safe="")
