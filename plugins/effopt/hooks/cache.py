"""The computation cache as Airflow configures it: ``[effopt] cache_*`` plus the ``effopt_redis`` connection."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from effopt.airflow_settings import get_settings

if TYPE_CHECKING:
    from effopt.cache import CacheBackend, ComputationCache
    from effopt.config import Settings

log = logging.getLogger(__name__)

SECRET_FILE = ".effopt-secret"


def redis_url_from_connection(conn: Any) -> str:
    """``redis[s]://[:password@]host:port/db`` from an Airflow Redis connection.

    The database comes from the ``db`` extra (as the redis provider reads it)
    or the connection's schema; ``ssl: true`` in the extras selects TLS.
    """
    extra = conn.extra_dejson or {}
    db = extra.get("db", conn.schema or 0)
    try:
        db = int(db)
    except (TypeError, ValueError):
        raise ValueError(f"connection {conn.conn_id!r}: Redis database {db!r} is not an integer") from None
    if not conn.host:
        raise ValueError(f"connection {conn.conn_id!r} has no host")
    scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("1", "true", "yes") else "redis"
    auth = ""
    if conn.password:
        from urllib.parse import quote

        auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
    return f"{scheme}://{auth}{conn.host}:{conn.port or 6379}/{db}"


def local_secret(cache_dir: str) -> bytes:
    """The signing secret of a local cache directory, created once (mode 0600) when first needed.

    Only processes that can write the directory can read it, which is the
    same trust boundary as the entries themselves; a shared (Redis) cache
    needs ``[effopt] cache_secret`` instead.
    """
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, SECRET_FILE)
    if not os.path.exists(path):
        # Written whole to a private temp file, then linked into place: a task
        # starting at the same moment sees either no secret or the complete one.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".effopt-secret-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_hex(32).encode())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: use its secret
        finally:
            os.unlink(tmp)
    with open(path, "rb") as fh:
        value = fh.read().strip()
    if len(value) < 32:
        raise ValueError(f"{path} is damaged (shorter than 32 bytes); delete it to start a new local cache")
    return value


class CacheHook(BaseHook):
    """Builds the :class:`~effopt.cache.ComputationCache` that ``[effopt]`` configures.

    ``cache_backend = redis`` uses the ``effopt_redis`` connection (or
    ``[effopt] redis_conn_id``); ``local`` uses ``[effopt] cache_dir``;
    ``auto`` (the default) uses Redis when that connection exists, else the
    local directory.
    """

    conn_name_attr = "redis_conn_id"
    default_conn_name = "effopt_redis"
    conn_type = "redis"
    hook_name = "effopt computation cache"

    def __init__(self, namespace: str = "airflow", redis_conn_id: str | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.settings: Settings = get_settings()
        self.redis_conn_id = redis_conn_id or self.settings.redis_conn_id

    def backend_kind(self) -> str:
        kind = self.settings.cache_backend
        if kind != "auto":
            return kind
        try:
            self.get_connection(self.redis_conn_id)
        except AirflowNotFoundException:
            return "local"
        return "redis"

    def get_backend(self) -> CacheBackend:
        return self.get_backend_of_kind(self.backend_kind())

    def get_backend_of_kind(self, kind: str) -> CacheBackend:
        from effopt.cache import LocalBackend, RedisBackend

        if kind == "redis":
            url = redis_url_from_connection(self.get_connection(self.redis_conn_id))
            return RedisBackend(url, timeout_s=self.settings.cache_timeout_s)
        return LocalBackend(self.settings.cache_dir, max_bytes=self.settings.cache_max_bytes,
                            timeout_s=self.settings.cache_timeout_s)

    def backend_reference(self, backend: CacheBackend) -> dict[str, Any]:
        """How a trigger rebuilds ``backend`` in the triggerer: JSON, no credentials (a connection id or a path)."""
        from effopt.cache import LocalBackend, RedisBackend

        if isinstance(backend, RedisBackend):
            return {"kind": "redis", "conn_id": self.redis_conn_id, "prefix": backend.prefix}
        if isinstance(backend, LocalBackend):
            return {"kind": "local", "path": str(backend.path)}
        raise TypeError(f"no trigger reference for a {type(backend).__name__}")

    def get_cache(self) -> ComputationCache:
        from dataclasses import replace

        from effopt.cache import ComputationCache

        backend = self.get_backend()
        settings = self.settings
        if not settings.cache_secret:
            if backend.kind != "local":
                raise ValueError(
                    "[effopt] cache_secret is not set: a shared Redis cache needs a signing secret that every "
                    "worker has (set AIRFLOW__EFFOPT__CACHE_SECRET to the same long random value on each worker)"
                )
            settings = replace(settings, cache_secret=local_secret(settings.cache_dir).decode())
        return ComputationCache.from_settings(settings, backend, self.namespace)


def signing_key() -> bytes:
    """The key effopt signs its shared payloads with: ``[effopt] cache_secret``, else the local secret."""
    settings = get_settings()
    if settings.cache_secret:
        return settings.cache_secret.encode()
    return local_secret(settings.cache_dir)


def fallback_keys() -> tuple[bytes, ...]:
    """Keys rotated out (``[effopt] cache_secret_fallbacks``): payloads they signed still verify."""
    return tuple(secret.encode() for secret in get_settings().cache_secret_fallbacks)


@cache
def task_cache(namespace: str = "airflow") -> ComputationCache:
    """One cache per namespace per process (tasks reuse its connections)."""
    return CacheHook(namespace).get_cache()
