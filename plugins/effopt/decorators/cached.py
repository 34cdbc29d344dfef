"""``@cached_task``: TaskFlow tasks whose results come from the computation cache.

::

    from airflow.sdk import task
    from effopt.decorators import cached_task

    @cached_task(ttl=7 * 86400, tags=["features"])
    @task
    def features(day: str, window: int) -> dict: ...

On a hit the body does not run; the task log says ``hit`` or ``miss``, the
key and the seconds saved, and the task pushes the same facts as the XCom
``effopt_cache`` (visible in the UI's XCom tab).  Results of at least
``reference_min_bytes``, and arrays and frames of any size (XCom has no format
for them), go downstream as a small cache reference instead of a huge XCom; a downstream ``@cached_task``, or any task when the
:class:`effopt.xcom.CacheReferenceXCom` backend is configured, gets the value.

Trigger a run with ``{"effopt_cache_refresh": true}`` in its conf to recompute
and overwrite every cached task of that run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: Context objects Airflow injects by parameter name: never part of a cache key.
CONTEXT_OBJECTS = frozenset(
    {"ti", "task_instance", "dag_run", "dag", "task", "macros", "conn", "var", "inlets", "outlets",
     "inlet_events", "outlet_events", "triggering_asset_events", "context", "templates_dict"}
)
REFRESH_CONF_KEY = "effopt_cache_refresh"
DEFAULT_REFERENCE_MIN_BYTES = 1 << 20


def resolve_references(cache: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list, dict]:
    from effopt.cache import is_cache_reference

    def one(value: Any) -> Any:
        return cache.resolve(value) if is_cache_reference(value) else value

    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}


def run_cached(
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    ttl: float | None = None,
    version: str | int | None = None,
    ignore: Collection[str] = (),
    tags: Collection[str] = (),
    namespace: str = "airflow",
    reference_min_bytes: int | None = DEFAULT_REFERENCE_MIN_BYTES,
    context: Mapping[str, Any] | None = None,
) -> Any:
    """Call ``func`` through the task cache; what ``@cached_task`` and ``CachedPythonOperator`` run."""
    from effopt.hooks.cache import task_cache

    try:
        cache = task_cache(namespace)
    except Exception as exc:  # noqa: BLE001 - a task never fails because the cache failed
        log.warning("effopt cache unavailable, computing without it: %s", exc)
        return func(*args, **kwargs)

    args, kwargs = resolve_references(cache, args, kwargs)
    params = inspect.signature(func).parameters
    skip = set(ignore) | (CONTEXT_OBJECTS & set(params))
    spec = cache.function_spec(func, ttl=ttl, version=version, ignore=skip, tags=tags)
    conf = (getattr(context.get("dag_run"), "conf", None) or {}) if context else {}
    refresh = bool(conf.get(REFRESH_CONF_KEY, False))

    result = cache.call(spec, args, kwargs, refresh=refresh)
    cache.flush_stats()
    # Which worker computed and which one hit: the host name Airflow records for this task instance.
    ti = context.get("ti") if context is not None else None
    host = getattr(ti, "hostname", None) or socket.gethostname()
    if result.error:
        log.warning("effopt cache bypassed (%s): computed in %.2f s, key %s, on %s", result.error, result.compute_s,
                    result.key, host)
    elif result.hit:
        log.info("effopt cache hit: key %s, %s bytes, %.2f s saved, on %s%s", result.key, result.nbytes,
                 result.saved_s, host,
                 f", after waiting {result.waited_s:.2f} s for another worker computing it" if result.waited_s else "")
    else:
        log.info(
            "effopt cache miss%s: key %s, computed in %.2f s, %s, on %s%s",
            " (refresh)" if refresh else "",
            result.key,
            result.compute_s,
            f"stored {result.nbytes} bytes" if result.stored else "not stored",
            host,
            # Waited on a lock whose holder then released it without a value or whose lease expired (it died).
            f"; took over the single-flight lock after waiting {result.waited_s:.2f} s" if result.waited_s else "",
        )
    if context is not None and context.get("ti") is not None:
        context["ti"].xcom_push(
            key="effopt_cache",
            value={"hit": result.hit, "key": str(result.key), "saved_s": round(result.saved_s, 3),
                   "compute_s": round(result.compute_s, 3), "waited_s": round(result.waited_s, 3),
                   "nbytes": result.nbytes, "refresh": refresh, "error": result.error},
        )
    in_cache = result.hit or result.stored
    if in_cache and (_xcom_cannot_carry(result.value) or (
        reference_min_bytes is not None and result.nbytes >= reference_min_bytes
    )):
        return cache.reference(result.key, result.nbytes)
    return result.value


def _xcom_cannot_carry(value: Any) -> bool:
    """Arrays and frames: Airflow's XCom serialisation has no format for them, the cache has."""
    return getattr(value, "ndim", 0) > 0 or type(value).__module__.split(".")[0] == "pandas"


def cached_task(
    python_callable: Any = None,
    *,
    ttl: float | None = None,
    version: str | int | None = None,
    ignore: Collection[str] = (),
    tags: Collection[str] = (),
    namespace: str = "airflow",
    reference_min_bytes: int | None = DEFAULT_REFERENCE_MIN_BYTES,
) -> Any:
    """Cache a TaskFlow task: put it above ``@task`` (or below it, on the plain function).

    ``ttl``, ``version``, ``ignore`` and ``tags`` are those of
    :meth:`effopt.cache.ComputationCache.cached`; context objects (``ti``,
    ``dag_run``, ...) are never part of the key.  ``reference_min_bytes``:
    results at least this large pass downstream as a cache reference
    (``None``: always pass the value).
    """
    options = {"ttl": ttl, "version": version, "ignore": tuple(ignore), "tags": tuple(tags), "namespace": namespace,
               "reference_min_bytes": reference_min_bytes}

    def wrap_function(func: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isfunction(func) or inspect.iscoroutinefunction(func):
            raise TypeError(f"@cached_task needs a plain (sync) function, got {func!r}")

        @functools.wraps(func)
        def runner(*args: Any, **kwargs: Any) -> Any:
            from airflow.sdk import get_current_context

            return run_cached(func, args, kwargs, context=get_current_context(), **options)

        runner.__effopt_cached__ = options  # type: ignore[attr-defined]
        return runner

    def decorate(obj: Any) -> Any:
        function = getattr(obj, "function", None)
        if function is not None and callable(getattr(obj, "override", None)):
            # A @task-decorated function: rebuild it around the caching runner.
            import attr

            return attr.evolve(obj, function=wrap_function(function))
        return wrap_function(obj)

    return decorate(python_callable) if python_callable is not None else decorate
