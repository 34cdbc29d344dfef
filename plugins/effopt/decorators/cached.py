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
for them), go downstream as a small cache reference instead of a huge XCom; a
downstream ``@cached_task``, or any task when the
:class:`effopt.xcom.CacheReferenceXCom` backend is configured, gets the value.

Trigger a run with ``{"effopt_cache_refresh": true}`` in its conf to recompute
and overwrite every cached task of that run.

Entries and statistics of a task are filed under ``<dag_id>/<task_id>/<qualname
of the function>`` (:func:`effopt.cache.hashing.task_function_name`), never
under the DAG file's module name, which Airflow derives from the file's path.

A task whose inputs another worker is computing right now defers to
:class:`effopt.triggers.cache.CacheEntryTrigger` (state ``deferred``, no worker
slot held) and resumes with the value once it is stored.  That needs the
operator to have the resume method: ``CachedPythonOperator`` and
``@cached_task`` above ``@task`` have it; ``@cached_task`` below ``@task``
waits in the worker.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator

log = logging.getLogger(__name__)

#: Context objects Airflow injects by parameter name: never part of a cache key.
CONTEXT_OBJECTS = frozenset(
    {"ti", "task_instance", "dag_run", "dag", "task", "macros", "conn", "var", "inlets", "outlets",
     "inlet_events", "outlet_events", "triggering_asset_events", "context", "templates_dict"}
)
REFRESH_CONF_KEY = "effopt_cache_refresh"
DEFAULT_REFERENCE_MIN_BYTES = 1 << 20
#: The operator method a deferred cached task resumes in.
RESUME_METHOD = "effopt_resume_cached"
_RESUME_STATE = "_effopt_resume"


def task_name(func: Callable[..., Any], context: Mapping[str, Any] | None) -> str | None:
    """``<dag_id>/<task_id>/<qualname>`` when ``context`` names the task, else ``None`` (``module.qualname``)."""
    if not context:
        return None
    from effopt.cache.hashing import task_function_name

    ti, task = context.get("ti"), context.get("task")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
    task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", None)
    if not isinstance(dag_id, str) or not isinstance(task_id, str):
        return None
    return task_function_name(dag_id, task_id, func)


class CachedResumeMixin:
    """The resume method of operators whose cached call defers while another worker computes its entry."""

    def effopt_resume_cached(self, context: Any, event: Mapping[str, Any] | None = None,
                             deadline: float | None = None) -> Any:
        from effopt.cache import SingleFlightTimeout

        status = (event or {}).get("status")
        if status == "timeout":
            raise SingleFlightTimeout(
                "effopt cache: waited [effopt] cache_lock_timeout_s in the triggerer for another worker computing "
                "this task's inputs without a result; raise cache_lock_timeout_s if the computation takes longer"
            )
        if status == "unavailable":
            log.warning("effopt cache: the triggerer cannot watch the cache (%s); waiting in the worker instead",
                        (event or {}).get("reason"))
        log.info("effopt cache: resumed after waiting in the triggerer (%s)", status)
        setattr(self, _RESUME_STATE, {"status": status, "deadline": deadline})
        return self.execute(context)  # type: ignore[attr-defined]


def _defer(task: Any, cache: Any, held: Any, namespace: str, resume: Mapping[str, Any] | None,
           host: str = "") -> None:
    """Defer ``task`` to a trigger watching the entry and the lock of ``held.key`` (raises TaskDeferred)."""
    from effopt.cache import SingleFlightTimeout
    from effopt.hooks.cache import CacheHook
    from effopt.triggers.cache import CacheEntryTrigger

    now = time.time()
    deadline = (resume or {}).get("deadline") or now + cache.lock_timeout_s
    if now >= deadline:
        raise SingleFlightTimeout(
            f"effopt cache: waited {cache.lock_timeout_s:g} s for another worker computing {held.function} "
            f"(key {held.key}) without a result; raise [effopt] cache_lock_timeout_s if the computation takes longer"
        )
    trigger = CacheEntryTrigger(key=str(held.key), backend=CacheHook(namespace).backend_reference(cache.backend),
                                deadline=deadline)
    log.info("effopt cache: another worker is computing %s (key %s); deferring until it is stored, "
             "without holding a worker slot, on %s", held.function, held.key, host or socket.gethostname())
    task.defer(trigger=trigger, method_name=RESUME_METHOD, kwargs={"deadline": deadline})


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

    from effopt.cache import LockHeld

    args, kwargs = resolve_references(cache, args, kwargs)
    params = inspect.signature(func).parameters
    skip = set(ignore) | (CONTEXT_OBJECTS & set(params))
    spec = cache.function_spec(func, ttl=ttl, version=version, ignore=skip, tags=tags, name=task_name(func, context))
    conf = (getattr(context.get("dag_run"), "conf", None) or {}) if context else {}
    refresh = bool(conf.get(REFRESH_CONF_KEY, False))

    task = context.get("task") if context else None
    resume = getattr(task, _RESUME_STATE, None)
    can_defer = (callable(getattr(task, RESUME_METHOD, None)) and callable(getattr(task, "defer", None))
                 and (resume or {}).get("status") != "unavailable")
    # Which worker computed, deferred or hit: the host name Airflow records for this task instance.
    ti = context.get("ti") if context is not None else None
    host = getattr(ti, "hostname", None) or socket.gethostname()
    try:
        result = cache.call(spec, args, kwargs, refresh=refresh, wait=not can_defer)
    except LockHeld as held:
        _defer(task, cache, held, namespace, resume, host)
        raise  # not reached: defer() raises TaskDeferred
    cache.flush_stats()
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
            # A @task-decorated function: rebuild it around the caching runner, on an operator that can
            # defer while another worker computes the same inputs.
            import attr

            changes: dict[str, Any] = {"function": wrap_function(function)}
            operator_class = _deferrable_operator_class(getattr(obj, "operator_class", None))
            if operator_class is not None:
                changes["operator_class"] = operator_class
            return attr.evolve(obj, **changes)
        return wrap_function(obj)

    return decorate(python_callable) if python_callable is not None else decorate



class CachedDecoratedOperator(CachedResumeMixin, _PythonDecoratedOperator):
    """``@task``'s operator, able to defer while another worker computes the same cached inputs."""


def _deferrable_operator_class(operator_class: Any) -> type | None:
    """The deferrable counterpart of ``@task``'s operator class, ``None`` for other task flavours."""
    return CachedDecoratedOperator if operator_class is _PythonDecoratedOperator else None
