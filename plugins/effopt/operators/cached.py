"""``CachedPythonOperator``: a PythonOperator whose callable's results come from the computation cache."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator

from effopt.decorators.cached import DEFAULT_REFERENCE_MIN_BYTES, CachedResumeMixin, run_cached


class CachedPythonOperator(CachedResumeMixin, PythonOperator):
    """Run ``python_callable`` through the cache (see :func:`effopt.decorators.cached_task`).

    While another worker computes the same inputs, the task defers (no worker slot held) and resumes
    with the stored value.

    :param cache_ttl: seconds an entry lives (default: until invalidated or evicted)
    :param cache_version: the callable's version in its keys (default: a hash of its code)
    :param cache_ignore: parameter names left out of the key
    :param cache_tags: labels for ``python -m effopt cache invalidate --tag``
    :param cache_namespace: cache namespace (default ``airflow``)
    :param reference_min_bytes: results at least this large go to XCom as a cache reference
    """

    def __init__(
        self,
        *,
        cache_ttl: float | None = None,
        cache_version: str | int | None = None,
        cache_ignore: Collection[str] = (),
        cache_tags: Collection[str] = (),
        cache_namespace: str = "airflow",
        reference_min_bytes: int | None = DEFAULT_REFERENCE_MIN_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cache_ttl = cache_ttl
        self.cache_version = cache_version
        self.cache_ignore = tuple(cache_ignore)
        self.cache_tags = tuple(cache_tags)
        self.cache_namespace = cache_namespace
        self.reference_min_bytes = reference_min_bytes

    def execute(self, context: Any) -> Any:
        self._effopt_context = context
        return super().execute(context)

    def execute_callable(self) -> Any:
        return run_cached(
            self.python_callable,
            self.op_args,
            self.op_kwargs,
            ttl=self.cache_ttl,
            version=self.cache_version,
            ignore=self.cache_ignore,
            tags=self.cache_tags,
            namespace=self.cache_namespace,
            reference_min_bytes=self.reference_min_bytes,
            context=self._effopt_context,
        )
