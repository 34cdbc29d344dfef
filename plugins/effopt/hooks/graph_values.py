"""Where large graph values live in Airflow: object storage, or the computation cache when it is shared.

The storage adapters behind :class:`effopt.graph.values.ValueStore` for graph DAG tasks.  The computation
cache is opened on first use, in the task, never at DAG parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import ObjectStoragePath

from effopt.graph.values import ValueStore


def default_storage_base() -> str:
    """``[effopt] graph_storage`` (default ``file://$AIRFLOW_HOME/effopt-graph-data``)."""
    from effopt.airflow_settings import get_settings

    return get_settings().graph_storage


class ObjectStorageValueStore(ValueStore):
    """Large values as files under an Airflow object-storage path (``file://``, ``s3://conn@bucket/...``)."""

    kind = "objectstorage"

    def __init__(self, base: str | None = None) -> None:
        self.base = base or default_storage_base()

    def put(self, key: str, data: bytes) -> str:
        path = ObjectStoragePath(self.base) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    def get(self, location: str) -> bytes:
        return ObjectStoragePath(location).read_bytes()

    def mark_run_active(self, run_prefix: str) -> None:
        """(Re)write the run's marker, so retention keeps a run one of whose tasks is starting."""
        from effopt.graph.retention import RUN_MARKER

        path = ObjectStoragePath(self.base) / run_prefix / RUN_MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def __repr__(self) -> str:
        return f"ObjectStorageValueStore({self.base!r})"


class CacheValueStore(ValueStore):
    """Large values as signed entries of the computation cache (namespace ``effopt_graph``).

    The cache is opened on first use, in the task, never at DAG parse time.
    """

    kind = "cache"

    def __init__(self, cache: Any = None) -> None:
        self._cache = cache

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from effopt.hooks.cache import task_cache

            self._cache = task_cache("effopt_graph")
        return self._cache

    def put(self, key: str, data: bytes) -> str:
        import hashlib

        from effopt.cache import CacheKey

        ckey = CacheKey("effopt_graph", "value", "v1", hashlib.sha256(key.encode()).hexdigest())
        if not self.cache.put(ckey, data):
            raise RuntimeError(f"the computation cache did not store {key!r} ({len(data)} bytes); see the task log")
        return str(ckey)

    def get(self, location: str) -> bytes:
        from effopt.cache import CacheKey

        found = self.cache.get(CacheKey.parse(location))
        if not found.hit:
            why = found.error or "expired or evicted"
            raise LookupError(f"graph value {location} is not in the computation cache ({why})")
        return found.value

    def __repr__(self) -> str:
        return "CacheValueStore()"


class ConfiguredValueStore(ValueStore):
    """The store ``[effopt]`` configures, decided in the task: the computation cache when it is
    shared (Redis), else object storage under ``storage_base``."""

    def __init__(self, storage_base: str | None = None) -> None:
        self.storage_base = storage_base
        self._target: ValueStore | None = None

    def target(self) -> ValueStore:
        if self._target is None:
            from effopt.hooks.cache import CacheHook

            shared = CacheHook().backend_kind() == "redis"
            self._target = CacheValueStore() if shared else ObjectStorageValueStore(self.storage_base)
        return self._target

    @property
    def kind(self) -> str:
        return self.target().kind

    def put(self, key: str, data: bytes) -> str:
        return self.target().put(key, data)

    def get(self, location: str) -> bytes:
        return self.target().get(location)

    def mark_run_active(self, run_prefix: str) -> None:
        self.target().mark_run_active(run_prefix)

    def __repr__(self) -> str:
        return f"ConfiguredValueStore({self.storage_base!r})"
