"""The launcher's Airflow environment: SQLite waits for its lock; other databases get Airflow's defaults."""

from __future__ import annotations

import json
import subprocess
import sys

from effopt.standalone import Standalone

PROBE = ("import json; from airflow.settings import _get_connect_args; "
         "print(json.dumps([_get_connect_args('sync'), _get_connect_args('async')]))")


def _connect_args(env: dict[str, str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_airflow_on_sqlite_waits_for_locks(tmp_path):
    env = Standalone(tmp_path / "home", 8080).env()
    sync, async_ = _connect_args(env)
    assert sync["timeout"] == 20 and async_["timeout"] == 20


def test_other_databases_keep_airflows_connect_args(tmp_path):
    pg = "postgresql+psycopg2://airflow:secret@127.0.0.1:5432/airflow"
    env = Standalone(tmp_path / "home", 8080, extra_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg}).env()
    assert not any(k.startswith("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS") for k in env)
