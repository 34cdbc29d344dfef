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


# -- issue 14: stable task names, the trigger, deferral ------------------------------------------------

SAME_TASK_TWO_PATHS = """
    import hashlib, importlib.util, json, pathlib, sys, types
    from effopt.decorators.cached import run_cached

    source = "def build_features(day, window):\\n    return {'day': day, 'window': window}\\n"
    results = []
    for folder in sys.argv[1:]:
        path = pathlib.Path(folder) / "features_dag.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        # The module name Airflow gives a DAG file: it depends on the file's path.
        name = f"unusual_prefix_{hashlib.sha1(str(path).encode()).hexdigest()}_features_dag"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        pushed = []
        ti = types.SimpleNamespace(dag_id="features", task_id="build_features",
                                   xcom_push=lambda key, value: pushed.append(value))
        value = run_cached(module.build_features, ["2024-01-01", 7], {}, context={"ti": ti})
        results.append({"module": module.__name__, "key": pushed[0]["key"], "hit": pushed[0]["hit"], "value": value})
    print("RESULT " + json.dumps(results))
"""


def test_task_keys_do_not_depend_on_the_dag_files_location(tmp_path):
    out = run_py(SAME_TASK_TWO_PATHS.replace("sys.argv[1:]", repr([str(tmp_path / "worker-a" / "dags"),
                                                                     str(tmp_path / "mnt" / "b" / "dags")])),
                 tmp_path)
    first, second = out
    assert first["module"] != second["module"]
    assert first["key"] == second["key"]
    assert first["key"].split(":")[1] == "features/build_features/build_features"
    assert (first["hit"], second["hit"]) == (False, True)  # the second worker reuses the first one's entry
    assert second["value"] == {"day": "2024-01-01", "window": 7}


TRIGGER = """
    import asyncio, json, threading, time
    from effopt.cache import ComputationCache, LocalBackend, RedisBackend
    from effopt.hooks.cache import CacheHook
    from effopt.triggers.cache import CacheEntryTrigger

    kind = "{kind}"
    hook = CacheHook("trig")
    backend = hook.get_backend_of_kind(kind)
    cache = hook.get_cache()
    def f(x):
        return x * 2
    spec = cache.function_spec(f)
    ref = hook.backend_reference(cache.backend)

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    def run(key, deadline, backend_ref=ref):
        trigger = CacheEntryTrigger(key=str(key), backend=backend_ref, deadline=deadline, poll_s=0.05)
        classpath, kwargs = trigger.serialize()
        json.dumps(kwargs)
        rebuilt = CacheEntryTrigger(**kwargs)
        t0 = time.monotonic()
        return asyncio.run(first_event(rebuilt)), time.monotonic() - t0, classpath, kwargs

    out = {{}}
    key = cache.key(spec, (1,))
    lock = backend.try_lock(key, 30)  # another worker computes
    def store_later():
        time.sleep(0.6)
        cache.put(key, 2)
        lock.release()
    threading.Thread(target=store_later).start()
    out["ready"], waited, out["classpath"], out["kwargs"] = run(key, time.time() + 30)
    out["waited_enough"] = waited >= 0.5

    key2 = cache.key(spec, (2,))
    lock2 = backend.try_lock(key2, 30)
    threading.Timer(0.3, lock2.release).start()  # the holder fails: no entry
    out["free"] = run(key2, time.time() + 30)[0]

    key3 = cache.key(spec, (3,))
    lock3 = backend.try_lock(key3, 30)
    out["timeout"] = run(key3, time.time() + 0.3)[0]
    lock3.release()
    bad = {{"kind": "local", "path": "/nonexistent/effopt-cache"}} if kind == "local" else dict(ref, conn_id="nowhere")
    out["unavailable"] = run(key3, time.time() + 5, bad)[0]
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_cache_entry_trigger_fires_on_entry_release_deadline_and_unreachable_backend(tmp_path, redis_server, kind):
    env = {"AIRFLOW__EFFOPT__CACHE_BACKEND": kind}
    if kind == "redis":
        env.update(AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url, AIRFLOW__EFFOPT__CACHE_SECRET=SECRET,
                   AIRFLOW_CONN_NOWHERE="redis://127.0.0.1:1/0")
    out = run_py(TRIGGER.format(kind=kind), tmp_path, **env)
    assert out["ready"] == {"status": "ready"} and out["waited_enough"]
    assert out["free"] == {"status": "free"}
    assert out["timeout"] == {"status": "timeout"}
    assert out["unavailable"]["status"] == "unavailable"
    assert out["classpath"] == "effopt.triggers.cache.CacheEntryTrigger"
    # No secret and no password in what Airflow stores and logs for the trigger.
    assert SECRET not in json.dumps(out["kwargs"]) and set(out["kwargs"]["backend"]) <= {"kind", "conn_id", "prefix",
                                                                                         "path"}


DEFERRAL = """
    import asyncio, json, types
    from airflow.sdk.exceptions import TaskDeferred
    from effopt.hooks.cache import CacheHook, task_cache
    from effopt.operators.cached import CachedPythonOperator

    calls = []
    def add(a, b):
        calls.append((a, b))
        return a + b

    op = CachedPythonOperator(task_id="add", python_callable=add, op_args=[1], op_kwargs={"b": 2})
    pushed = []
    ti = types.SimpleNamespace(dag_id="d", task_id="add", xcom_push=lambda key, value: pushed.append(value))
    ctx = {"ti": ti, "task": op, "dag_run": types.SimpleNamespace(conf={})}
    cache = task_cache("airflow")
    spec = cache.function_spec(add, name="d/add/add")
    key = cache.key(spec, (1,), {"b": 2})
    other_worker = CacheHook().get_backend().try_lock(key, 30)
    try:
        op.execute(ctx)
        deferred = None
    except TaskDeferred as exc:
        deferred = exc
    trigger_kwargs = deferred.trigger.serialize()[1]
    cache.put(key, 3)  # the other worker finishes
    other_worker.release()

    async def first_event():
        async for event in deferred.trigger.run():
            return event.payload
    event = asyncio.run(first_event())
    resumed = op.resume_execution(deferred.method_name, {"event": event, **deferred.kwargs}, ctx)
    print("RESULT " + json.dumps({
        "method": deferred.method_name, "trigger_key": trigger_kwargs["key"], "key": str(key), "event": event,
        "deadline": deferred.kwargs["deadline"] > 0, "resumed": resumed, "calls": len(calls),
        "pushed": [[v["hit"], v["key"]] for v in pushed],
    }))
"""


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_a_task_whose_inputs_another_worker_computes_defers_and_resumes_with_the_value(tmp_path, redis_server,
                                                                                        backend):
    env = {"AIRFLOW__EFFOPT__CACHE_BACKEND": backend}
    if backend == "redis":
        env.update(AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url, AIRFLOW__EFFOPT__CACHE_SECRET=SECRET)
    out = run_py(DEFERRAL, tmp_path, **env)
    assert out["method"] == "effopt_resume_cached" and out["deadline"]
    assert out["trigger_key"] == out["key"] and out["event"] == {"status": "ready"}
    assert out["resumed"] == 3 and out["calls"] == 0  # the body never ran in this task
    assert out["pushed"] == [[True, out["key"]]]


def test_cached_task_above_task_gets_a_deferrable_operator(tmp_path):
    code = """
        import json
        from airflow.sdk import task
        from effopt.decorators import cached_task
        from effopt.decorators.cached import RESUME_METHOD

        @cached_task
        @task
        def above(x: int) -> int:
            return x

        @task
        @cached_task
        def below(x: int) -> int:
            return x

        print("RESULT " + json.dumps({"above": above.operator_class.__name__,
                                      "above_resumes": hasattr(above.operator_class, RESUME_METHOD),
                                      "below_resumes": hasattr(below.operator_class, RESUME_METHOD),
                                      "custom_name": above.operator_class.custom_operator_name}))
    """
    assert run_py(code, tmp_path) == {"above": "CachedDecoratedOperator", "above_resumes": True,
                                      "below_resumes": False, "custom_name": "@task"}


def test_cache_panel_survives_corrupted_statistics(tmp_path, redis_server):
    code = """
        import json, os
        import redis
        from effopt.hooks.cache import task_cache
        from effopt.www.data import cache_summary

        cache = task_cache("panel")
        @cache.cached
        def f(x):
            return x
        f(1), f(1)
        cache.flush_stats()
        r = redis.Redis.from_url(os.environ["AIRFLOW_CONN_EFFOPT_REDIS"])
        r.hset(f"effopt:cache:s:panel:{f.__effopt_cache_spec__.name}", "hits", "abc")
        r.sadd("effopt:cache:s", b"panel-garbage-member")
        summary = cache_summary()
        (row,) = [x for x in summary["functions"] if x["namespace"] == "panel"]
        print("RESULT " + json.dumps({"hits": row["hits"], "misses": row["misses"], "problems": summary["problems"]}))
    """
    out = run_py(code, tmp_path, AIRFLOW_CONN_EFFOPT_REDIS=redis_server.url, AIRFLOW__EFFOPT__CACHE_SECRET=SECRET)
    assert (out["hits"], out["misses"]) == (0, 1)
    assert any("'hits'" in p and "b'abc'" in p for p in out["problems"])
    assert any("panel-garbage-member" in p for p in out["problems"])
