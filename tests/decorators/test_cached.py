"""The cache's Airflow layer: CacheHook, @cached_task, CachedPythonOperator and the XCom backend.

Each scenario runs in a fresh interpreter with its own AIRFLOW_HOME and
connections (Airflow reads its configuration once per process), against the
real redis-server of the test session or the local backend.  The REST
end-to-end tests are in ``tests/e2e/test_cache_e2e.py``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "unit-test-secret-" + "k" * 20


def run_py(code: str, tmp_path: Path, **env: str) -> dict:
    full = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}", "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **env}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr[-4000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_redis_url_from_connection():
    from airflow.sdk import Connection

    from effopt.hooks.cache import redis_url_from_connection

    plain = Connection(conn_id="r", conn_type="redis", host="cache", port=6380, schema="2")
    assert redis_url_from_connection(plain) == "redis://cache:6380/2"
    secured = Connection(conn_id="r", conn_type="redis", host="cache", password="p@ss/word",
                         extra=json.dumps({"db": 3, "ssl": True}))
    assert redis_url_from_connection(secured) == "rediss://:p%40ss%2Fword@cache:6379/3"
    with pytest.raises(ValueError, match="'r'.*not an integer"):
        redis_url_from_connection(Connection(conn_id="r", conn_type="redis", host="h", schema="zero"))


def test_local_secret_is_private_stable_and_checked(tmp_path):
    from effopt.hooks.cache import SECRET_FILE, local_secret

    first = local_secret(str(tmp_path / "c"))
    assert len(first) == 64 and local_secret(str(tmp_path / "c")) == first
    mode = (tmp_path / "c" / SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    (tmp_path / "c" / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        local_secret(str(tmp_path / "c"))


HOOK_CHOICE = """
    import json
    from effopt.hooks.cache import CacheHook
    hook = CacheHook()
    kind = hook.backend_kind()
    try:
        cache = hook.get_cache()
        error = None
        described = cache.backend.describe()
    except ValueError as exc:
        error, described = str(exc), None
    print("RESULT " + json.dumps({"kind": kind, "error": error, "backend": described}))
"""


def test_auto_backend_follows_the_redis_connection(tmp_path, redis_server):
    local = run_py(HOOK_CHOICE, tmp_path)
    assert local["kind"] == "local" and local["error"] is None and str(tmp_path) in local["backend"]

    no_secret = run_py(HOOK_CHOICE, tmp_path, AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url)
    assert no_secret["kind"] == "redis"
    assert "[effopt] cache_secret is not set" in no_secret["error"]

    redis = run_py(HOOK_CHOICE, tmp_path, AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url,
                   AIRFLOW__EFFOPT__CACHE_SECRET=SECRET)
    assert redis["kind"] == "redis" and redis["error"] is None and f":{redis_server.port}" in redis["backend"]

    forced = run_py(HOOK_CHOICE, tmp_path, AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url,
                    AIRFLOW__EFFOPT__CACHE_BACKEND="local")
    assert forced["kind"] == "local"


RUNNER = """
    import json, types
    import numpy as np
    from effopt.decorators.cached import run_cached
    from effopt.xcom import CacheReferenceXCom
    from effopt.cache import is_cache_reference

    calls = []
    def square(x, scale=1, ti=None):
        calls.append(x)
        return {"y": x * x * scale}
    def matrix(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64).reshape(-1, 2)

    pushed = []
    ti = types.SimpleNamespace(xcom_push=lambda key, value: pushed.append((key, value)))
    ctx = {"ti": ti, "dag_run": types.SimpleNamespace(conf={})}
    a = run_cached(square, [3], {"scale": 2, "ti": ti}, context=ctx)
    b = run_cached(square, [3], {"scale": 2, "ti": object()}, context=ctx)   # ti is never part of the key
    ref = run_cached(matrix, [8], {}, context=ctx)                            # arrays go by reference
    again = run_cached(matrix, [8], {}, context=ctx)
    refreshed = run_cached(square, [3], {"scale": 2}, context={**ctx, "dag_run": types.SimpleNamespace(
        conf={"effopt_cache_refresh": True})})
    xcom_row = types.SimpleNamespace(value=ref)
    resolved = CacheReferenceXCom.deserialize_value(xcom_row)
    print("RESULT " + json.dumps({
        "a": a, "b": b, "calls": [int(c) for c in calls], "ref_is_reference": is_cache_reference(ref),
        "same_ref": ref == again, "resolved": resolved.tolist(), "refreshed": refreshed,
        "pushed": [[k, v["hit"], v["refresh"]] for k, v in pushed],
    }))
"""


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_run_cached_hits_skips_context_and_passes_arrays_by_reference(tmp_path, redis_server, backend):
    env = {"AIRFLOW__EFFOPT__CACHE_BACKEND": backend}
    if backend == "redis":
        env.update(AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url, AIRFLOW__EFFOPT__CACHE_SECRET=SECRET)
    out = run_py(RUNNER, tmp_path, **env)
    assert out["a"] == out["b"] == out["refreshed"] == {"y": 18}
    assert out["calls"] == [3, 8, 3]  # second square and second matrix were hits; refresh recomputed
    assert out["ref_is_reference"] and out["same_ref"]
    assert out["resolved"] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    assert out["pushed"] == [["effopt_cache", False, False], ["effopt_cache", True, False],
                             ["effopt_cache", False, False], ["effopt_cache", True, False],
                             ["effopt_cache", False, True]]


def test_task_still_runs_when_the_cache_cannot_be_built(tmp_path, redis_server):
    code = """
        import json
        from effopt.decorators.cached import run_cached
        print("RESULT " + json.dumps(run_cached(lambda x: x + 1, [41], {})))
    """
    # Redis configured but no signing secret: the cache refuses, the computation goes on.
    assert run_py(code, tmp_path, AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url) == 42


def test_cached_task_wraps_taskflow_tasks_in_either_order(tmp_path):
    code = """
        import inspect, json
        from airflow.sdk import task
        from effopt.decorators import cached_task

        @cached_task(ttl=60)
        @task
        def above(x: int, y: int = 2) -> int:
            return x + y

        @task
        @cached_task(tags=["t"])
        def below(x: int) -> int:
            return x

        print("RESULT " + json.dumps({
            "above_is_task": hasattr(above, "override"),
            "below_is_task": hasattr(below, "override"),
            "above_params": list(inspect.signature(above.function).parameters),
            "above_options": above.function.__effopt_cached__["ttl"],
            "below_options": below.function.__effopt_cached__["tags"],
        }))
    """
    out = run_py(code, tmp_path)
    assert out == {"above_is_task": True, "below_is_task": True, "above_params": ["x", "y"],
                   "above_options": 60, "below_options": ["t"]}


def test_cached_python_operator(tmp_path):
    code = """
        import json, types
        from effopt.operators.cached import CachedPythonOperator
        calls = []
        def add(a, b):
            calls.append((a, b))
            return a + b
        op = CachedPythonOperator(task_id="add", python_callable=add, op_args=[1], op_kwargs={"b": 2})
        pushed = []
        ctx = {"ti": types.SimpleNamespace(xcom_push=lambda key, value: pushed.append(value["hit"])),
               "dag_run": types.SimpleNamespace(conf={})}
        out = [op.execute(ctx), op.execute(ctx)]
        print("RESULT " + json.dumps({"out": out, "calls": len(calls), "hits": pushed}))
    """
    assert run_py(code, tmp_path) == {"out": [3, 3], "calls": 1, "hits": [False, True]}


def test_local_secret_is_created_once_under_concurrency(tmp_path):
    """Eight processes asking for a new directory's secret at once all get the same, complete one."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from effopt.hooks.cache import local_secret; "
        "print(local_secret(sys.argv[2]).decode())"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(REPO / "plugins"), str(tmp_path / "c")], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    secrets_seen = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) == 64
