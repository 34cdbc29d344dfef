"""Fixtures of the cache tests: a cache on each backend, isolated per test."""

from __future__ import annotations

import uuid

import pytest

from effopt.cache import ComputationCache, LocalBackend, RedisBackend
from tests.cache.workers import SECRET


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of its own, so tests sharing the session redis-server do not see each other."""
    return f"t{uuid.uuid4().hex[:12]}:cache"


@pytest.fixture(params=["local", "redis"])
def backend(request, tmp_path, redis_prefix):
    """Each test using it runs once on the local backend and once on a real redis-server."""
    if request.param == "local":
        b = LocalBackend(tmp_path / "cache")
    else:
        server = request.getfixturevalue("redis_server")
        b = RedisBackend(server.url, prefix=redis_prefix)
    yield b
    b.close()


@pytest.fixture
def cache(backend):
    c = ComputationCache(backend, SECRET, namespace="tests", lock_lease_s=1.0, lock_timeout_s=20.0)
    yield c
    c.flush_stats()


def backend_spec(backend) -> dict:
    """How a worker process rebuilds ``backend``."""
    if isinstance(backend, LocalBackend):
        return {"kind": "local", "path": str(backend.path)}
    kw = backend.client.get_connection_kwargs()
    return {"kind": "redis", "url": f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}", "prefix": backend.prefix}


def entry_count(backend, namespace: str | None = None) -> int:
    if isinstance(backend, LocalBackend):
        return backend.entry_count()
    return backend.entry_count(namespace)
